"""Folder datasets: `{root}/{split}/[subset/...]/{0_real,1_fake}/*` (or `real`/`fake`), as WildRF and ForenSynths.

Labels come from the class folder's name only (never from file order); the path between the split and the
class folder is the sample's `subset` ("" when there is none, "reddit" for WildRF, "progan/airplane" for
ForenSynths), so metrics can be reported per subset. Non-image files, hidden files and images outside any
class folder are not used; they are counted per split so nothing disappears silently.

Also here, for scoring arbitrary inputs (`ladeda predict`): `find_images` (files, folders, globs) and
`label_from_path` (the same class-folder names). Every folder walk goes through `walk_files`.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from ladeda.data.decoded import DecodedImages
from ladeda.data.images import IMAGE_EXTENSIONS, is_image, load_rgb
from ladeda.core.errors import LadedaError
from ladeda.core.text import counted

if TYPE_CHECKING:  # torchvision is slow to import; reading and checking files never needs it
    from ladeda.data.transforms import ImageTransform

SPLITS = ("train", "val", "test")
CLASS_DIRS = {"0_real": 0, "real": 0, "1_fake": 1, "fake": 1}
LABEL_NAMES = {0: "real", 1: "fake"}
LAYOUT_HELP = "expected {root}/{split}/[subset/...]/{0_real,1_fake}/<images> (or real/fake folders)"


@dataclass(frozen=True)
class Sample:
    """One image: its path, label (0 real, 1 fake), split and subset ('' or e.g. 'reddit', 'progan/cat')."""

    path: str
    label: int
    split: str
    subset: str = ""


@dataclass
class SplitScan:
    """What a split folder holds: the labelled samples and the files that were not used (with reasons)."""

    root: str
    split: str
    samples: list[Sample] = field(default_factory=list)
    non_image: list[str] = field(default_factory=list)    # files under a class folder without an image extension
    unlabelled: list[str] = field(default_factory=list)   # image files outside any class folder
    excluded: list[str] = field(default_factory=list)     # images left out on request (e.g. found unreadable)

    @property
    def skipped(self) -> int:
        """How many files were found but not used."""
        return len(self.non_image) + len(self.unlabelled) + len(self.excluded)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per subset and class: {subset: {'real': n, 'fake': n}}."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "fake": 0})
        for s in self.samples:
            out[s.subset][LABEL_NAMES[s.label]] += 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """One line for logs: split, images per class, skipped files."""
        n = Counter(LABEL_NAMES[s.label] for s in self.samples)
        text = f"{self.split}: {counted(len(self.samples), 'image')} ({n['real']} real, {n['fake']} fake)"
        if self.skipped:
            text += (f"; skipped {counted(len(self.non_image), 'non-image file')}, "
                     f"{len(self.unlabelled)} outside a class folder, {len(self.excluded)} excluded")
        return text


def class_label(name: str) -> int | None:
    """0 / 1 for a class folder name (`0_real`, `real`, `1_fake`, `fake`, any case), None otherwise."""
    return CLASS_DIRS.get(name.lower())


def label_from_path(path: str | os.PathLike) -> int | None:
    """The label of the nearest class folder (`class_label`) above `path`, else None (for predict's metrics)."""
    for part in reversed(Path(path).parent.parts):
        label = class_label(part)
        if label is not None:
            return label
    return None


def walk_files(folder: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    """(folder path, sorted non-hidden file names) for `folder` and its non-hidden subfolders, in sorted order.

    The one directory walk of the package, so datasets, the data check and predict list the same files and
    skip the same ones (.DS_Store, ._AppleDouble, .git/...) in the same order. Symlinked folders are followed
    once: each folder (device, inode) is listed once, under its own path when it lies inside `folder` (a link
    to a sibling adds nothing, a loop is not descended), else under the first link that reaches it. Files are
    not merged: two names of one file (a file symlink, a hard link, DVC's symlink or hardlink cache for
    identical images) stay two entries.
    """
    own = {_folder_id(dirpath): dirpath for dirpath, _, _ in _sorted_walk(folder, followlinks=False)}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in _sorted_walk(folder, followlinks=True):
        key = _folder_id(dirpath)
        if key in seen or own.get(key, dirpath) != dirpath:
            dirnames.clear()  # listed elsewhere: do not descend
            continue
        seen.add(key)
        yield dirpath, filenames


def _sorted_walk(folder: str | os.PathLike, followlinks: bool) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk` without hidden folders and files, names sorted; clearing the yielded `dirnames` prunes."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=followlinks):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, dirnames, sorted(name for name in filenames if not name.startswith("."))


def _folder_id(path: str) -> tuple[int, int]:
    """(device, inode) of a folder, whatever path or link reaches it."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


INPUT_HELP = "give an image, a folder or a quoted glob such as 'photos/**/*.jpg'"


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], Path]:
    """The image files named by `inputs` (files, folders searched recursively, or globs) and their common folder.

    Folders and globs keep files with an image extension (`ladeda.data.images.IMAGE_EXTENSIONS`) and
    skip hidden files and folders (names starting with '.'); a file named directly is always taken.
    Folders and globs are listed by `walk_files`, so symlinked folders are followed once. Order: sorted
    within each input, inputs in the order given, duplicates (the same name in the same real folder)
    dropped. The common folder is the deepest folder holding every file (heatmap paths are mirrored below it).
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: dict[str, Path] = {}
    for spec in specs:
        if not str(spec).strip():  # Path("") is ".", which would score the whole working folder
            raise LadedaError(f"--input is empty; {INPUT_HELP}")
        path = Path(spec)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _images_under(path)
        elif glob.has_magic(str(spec)):
            found = _glob_images(str(spec))
        else:
            raise LadedaError(f"--input {spec}: no such file or folder; {INPUT_HELP}")
        for f in found:
            files.setdefault(os.path.join(os.path.realpath(f.parent), f.name), f)
    if not files:
        raise LadedaError(f"no image files found in {', '.join(map(str, specs))} (looked for "
                          f"{' '.join(sorted(IMAGE_EXTENSIONS))}); point --input at a folder of images")
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files.values()]))
    return list(files.values()), root


def _glob_images(pattern: str) -> list[Path]:
    """The image files matching a glob (`*`, `?`, `[...]` within a name; `**` any folders), sorted.

    Listed by `walk_files` from the pattern's fixed leading folders, not by `glob.glob`, which follows a
    symlink loop under `**` until the system's link limit (and blows up exponentially with two loops).
    """
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, rest = Path(*parts[:fixed]), parts[fixed:]
    return sorted(Path(dirpath) / name for dirpath, names in walk_files(base) for name in names
                  if is_image(name) and _glob_match(Path(dirpath, name).relative_to(base).parts, rest))


def _glob_match(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether path `parts` match glob `pattern` parts: fnmatch name by name, `**` for zero or more folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatch(parts[0], pattern[0]) and _glob_match(parts[1:], pattern[1:])


def _images_under(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively, in `walk_files` order (find_images on a folder)."""
    return [Path(dirpath) / name for dirpath, names in walk_files(folder) for name in names if is_image(name)]


def scan_split(root: str | os.PathLike, split: str, exclude: Iterable[str] = ()) -> SplitScan:
    """Walk `{root}/{split}` and return its labelled samples (sorted by path) and the files not used.

    `exclude`: paths relative to `root` (as in the data check's report) to leave out, e.g. unreadable files.
    """
    root_p = Path(root)
    split_dir = root_p / split
    if not split_dir.is_dir():
        raise LadedaError(f"{split_dir}: split folder not found; {LAYOUT_HELP}")
    excluded = {str(Path(p)) for p in exclude}
    scan = SplitScan(root=str(root_p), split=split)
    for dirpath, filenames in walk_files(split_dir):
        rel_parts = Path(dirpath).relative_to(split_dir).parts
        labels = [(i, class_label(p)) for i, p in enumerate(rel_parts) if class_label(p) is not None]
        if len(labels) > 1:
            raise LadedaError(f"{dirpath}: class folder inside another class folder; {LAYOUT_HELP}")
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not is_image(name):
                scan.non_image.append(path)
            elif not labels:
                scan.unlabelled.append(path)
            elif os.path.relpath(path, root_p) in excluded:
                scan.excluded.append(path)
            else:
                depth, label = labels[0]
                subset = "/".join(rel_parts[:depth])
                scan.samples.append(Sample(path=path, label=label, split=split, subset=subset))
    scan.samples.sort(key=lambda s: s.path)
    return scan


def discover(root: str | os.PathLike, split: str, exclude: Iterable[str] = ()) -> list[Sample]:
    """The labelled images of one split, sorted by path; an error when there are none."""
    scan = scan_split(root, split, exclude)
    if not scan.samples:
        raise LadedaError(f"{Path(root) / split}: no labelled images found; {LAYOUT_HELP}")
    return scan.samples


def subsets(samples: Sequence[Sample]) -> list[str]:
    """The distinct subsets in `samples`, sorted ('' for images directly under the split)."""
    return sorted({s.subset for s in samples})


class LabeledImages(Dataset):
    """Samples -> (image tensor, label, index); an unreadable file raises LadedaError naming it.

    (The data check finds unreadable files beforehand; pass its list as `exclude` to `from_split` to leave
    them out. A file that breaks during training is a hard error rather than a silently smaller epoch.)
    """

    def __init__(self, samples: Sequence[Sample], transform: "ImageTransform", decoded: DecodedImages | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.decoded = decoded  # decoded pixels kept between passes (None: decode every time)
        self.scan: SplitScan | None = None

    @classmethod
    def from_split(cls, root: str | os.PathLike, split: str, transform: "ImageTransform",
                   exclude: Iterable[str] = (), decoded: DecodedImages | None = None) -> "LabeledImages":
        """The dataset of `{root}/{split}`; `.scan` keeps the skipped-file counts for reporting."""
        scan = scan_split(root, split, exclude)
        if not scan.samples:
            raise LadedaError(f"{Path(root) / split}: no labelled images found; {LAYOUT_HELP}")
        ds = cls(scan.samples, transform, decoded)
        ds.scan = scan
        return ds

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        """(tensor, label, index); an (index, seed) pair runs the random transform on its own seeded stream."""
        if isinstance(index, tuple):
            index, seed = index
            with torch.random.fork_rng(devices=[]):  # the transforms draw from the CPU generator alone
                torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it also seeds every GPU, unrestored
                return self[index]
        sample = self.samples[index]
        image = self.decoded.get(sample.path) if self.decoded is not None else load_rgb(sample.path)
        return self.transform(image), sample.label, index

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def output_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each item's tensor; read from file headers only when the transform keeps image sizes."""
        fixed = getattr(self.transform, "fixed_size", None)
        if fixed is not None:
            return [fixed] * len(self.samples)
        return [self.transform.output_size(*image_size(s.path)) for s in self.samples]

    def inputs_repeat(self) -> bool:
        """Whether every item is one of at most two tensors on every pass (the image or its mirror), so work
        done on an item's tensor can be reused (reads file headers only when the transform needs them)."""
        return self.transform.repeats(image_size(s.path) for s in self.samples)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise LadedaError(f"{path}: cannot read image header ({err}); remove or replace the file") from None
