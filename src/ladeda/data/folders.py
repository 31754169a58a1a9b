"""Folder datasets: `{root}/{split}/[subset/...]/{0_real,1_fake}/*` (or `real`/`fake`), as WildRF and ForenSynths.

Labels come from the class folder's name only (never from file order); the path between the split and the
class folder is the sample's `subset` ("" when there is none, "reddit" for WildRF, "progan/airplane" for
ForenSynths), so metrics can be reported per subset. Non-image files, hidden files and images outside any
class folder are not used; they are counted per split so nothing disappears silently.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ladeda.data.images import is_image, load_rgb
from ladeda.errors import LadedaError

if TYPE_CHECKING:  # torchvision is slow to import and only the training stages need it
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
        text = f"{self.split}: {len(self.samples)} images ({n['real']} real, {n['fake']} fake)"
        if self.skipped:
            text += (f"; skipped {len(self.non_image)} non-image, {len(self.unlabelled)} outside a class folder, "
                     f"{len(self.excluded)} excluded")
        return text


def class_label(name: str) -> int | None:
    """0 / 1 for a class folder name (`0_real`, `real`, `1_fake`, `fake`, any case), None otherwise."""
    return CLASS_DIRS.get(name.lower())


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
    for dirpath, dirnames, filenames in os.walk(split_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_parts = Path(dirpath).relative_to(split_dir).parts
        labels = [(i, class_label(p)) for i, p in enumerate(rel_parts) if class_label(p) is not None]
        if len(labels) > 1:
            raise LadedaError(f"{dirpath}: class folder inside another class folder; {LAYOUT_HELP}")
        for name in sorted(filenames):
            if name.startswith("."):
                continue  # .DS_Store, ._AppleDouble, .gitignore: not data
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

    def __init__(self, samples: Sequence[Sample], transform: "ImageTransform"):
        self.samples = list(samples)
        self.transform = transform
        self.scan: SplitScan | None = None

    @classmethod
    def from_split(cls, root: str | os.PathLike, split: str, transform: "ImageTransform",
                   exclude: Iterable[str] = ()) -> "LabeledImages":
        """The dataset of `{root}/{split}`; `.scan` keeps the skipped-file counts for reporting."""
        scan = scan_split(root, split, exclude)
        if not scan.samples:
            raise LadedaError(f"{Path(root) / split}: no labelled images found; {LAYOUT_HELP}")
        ds = cls(scan.samples, transform)
        ds.scan = scan
        return ds

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.samples[index]
        return self.transform(load_rgb(sample.path)), sample.label, index

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def output_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each item's tensor; read from file headers only when the transform keeps image sizes."""
        fixed = getattr(self.transform, "fixed_size", None)
        if fixed is not None:
            return [fixed] * len(self.samples)
        return [self.transform.output_size(*image_size(s.path)) for s in self.samples]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise LadedaError(f"{path}: cannot read image header ({err}); remove or replace the file") from None


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images have the same output size, so full-size images of mixed sizes batch.

    With `shuffle`, indices within each size and the order of batches are shuffled by `generator`
    (a new order every epoch, the same sequence for the same seed); without, batches follow index order.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size, self.shuffle, self.generator, self.drop_last = batch_size, shuffle, generator, drop_last
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            buckets.setdefault(tuple(size), []).append(i)
        self.buckets = list(buckets.values())  # in order of first appearance

    def _batches(self, indices: list[int]) -> list[list[int]]:
        out = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = []
        for bucket in self.buckets:
            if self.shuffle:
                bucket = [bucket[i] for i in torch.randperm(len(bucket), generator=self.generator).tolist()]
            batches += self._batches(bucket)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return iter(batches)

    def __len__(self) -> int:
        if self.drop_last:
            return sum(len(b) // self.batch_size for b in self.buckets)
        return sum(math.ceil(len(b) / self.batch_size) for b in self.buckets)


def make_loader(dataset: LabeledImages, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A deterministic DataLoader (seeded generator); mixed output sizes are batched by size, never mixed.

    Items are (tensor, label, index) so callers can map scores back to `dataset.samples` whatever the order.
    """
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, generator=generator, persistent_workers=False)
    sizes = dataset.output_sizes() if hasattr(dataset, "output_sizes") else None
    if sizes is None or len(set(sizes)) <= 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)
    sampler = SizeBucketBatchSampler(sizes, batch_size, shuffle, generator, drop_last)
    return DataLoader(dataset, batch_sampler=sampler, **common)
