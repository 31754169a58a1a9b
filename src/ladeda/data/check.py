"""The data check (`analyze_dataset`): what a dataset folder holds and what is wrong with it, before training.

Blocking problems (nothing downstream can be trusted): no images, train/val/test missing or empty, one class
only in train, val or test, unreadable files above a threshold, test images smaller than the teacher can
score (test images are scored at full size; train and val images are cropped, padded when small). Warnings
(reported, not blocking): a file format that predicts the label (e.g. all fakes PNG, all reals JPEG), exact
duplicates across splits or with both labels, a few unreadable files, images smaller than the crop, skipped
files, test subsets with one class.

Reading is the slow part (every file decoded and hashed); with `workers > 1` it runs in a process pool,
in order, so the report is the same as the serial one.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from PIL import Image
from tqdm import tqdm

from ladeda.data.folders import LABEL_NAMES, LAYOUT_HELP, SPLITS, Sample, scan_split
from ladeda.data.images import to_rgb
from ladeda.core.errors import LadedaError
from ladeda.core.runtime import usable_cpus
from ladeda.core.text import counted

MAX_LISTED = 50  # file lists in the report are cut at this length (their full count is kept)
SHOWN = 10  # files named in a one-line message
FULL_SIZE_SPLITS = ("test",)  # scored at each image's own size (the test transform), not cropped
FORMAT_BIAS_TV = 0.5  # total-variation distance between the classes' format shares that counts as a bias
# workers=None (auto): one process per usable CPU, at most AUTO_MAX_WORKERS (past that the disk, not decoding,
# is the usual limit), and none below AUTO_MIN_FILES files. A forked pool starts in ~20 ms, but where workers
# are spawned (macOS; forkserver from Python 3.14) each imports ladeda and torch (~1.5 s), about what reading
# 2,000 256x256 JPEGs takes on one core (~1,250/s), so a smaller dataset gains nothing from a pool.
AUTO_MAX_WORKERS = 16
AUTO_MIN_FILES = 2000


class FileCheck(NamedTuple):
    """What reading one image found (small and picklable, so a worker process can send it back)."""

    rel: str  # path relative to the data root
    label: int
    fmt: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None
    digest: str | None = None  # sha256 of the file's bytes
    error: str | None = None  # first line of the decoder's error; set when the file is unreadable


# PIL names the buffer it read, e.g. "<_io.BytesIO object at 0x7f...>": a memory address that would make the
# report differ between two runs on the same files
OBJECT_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def check_file(root: str, sample: Sample) -> FileCheck:
    """Read, fully decode and hash one image; a decoder failure is returned as `error`, not raised."""
    rel = os.path.relpath(sample.path, root)
    try:
        data = Path(sample.path).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            to_rgb(img)
            fmt, mode, size = img.format or "?", img.mode, img.size
    except LadedaError as err:
        return FileCheck(rel, sample.label, error=str(err))
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return FileCheck(rel, sample.label, error=OBJECT_ADDRESS.sub("", text))
    return FileCheck(rel, sample.label, fmt, mode, size, hashlib.sha256(data).hexdigest())


def resolve_workers(workers: int | None, n_files: int) -> int:
    """The number of reading processes: `workers` (at most one per file), or the auto choice when None."""
    if workers is None:
        if n_files < AUTO_MIN_FILES:
            return 1
        workers = min(len(usable_cpus()), AUTO_MAX_WORKERS)
    elif workers < 1:
        raise LadedaError(f"workers={workers}: the data check needs at least 1 (or None for automatic)")
    return max(1, min(workers, n_files))


def analyze_dataset(root: str | os.PathLike, max_unreadable_fraction: float = 0.01, crop_size: int | None = None,
                    min_side: int | None = None, splits: Iterable[str] = SPLITS,
                    progress: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Read every image under `root` (fully decoded, hashed) and return a JSON-ready report.

    `min_side`: the smallest side the teacher scores (`ladeda.models.geometry.min_image_side`); test images
    below it are blocking. None when there is no such limit (e.g. `data.load_size` resizes every image).
    `report["blocking"]` lists the problems that must stop the pipeline, `report["warnings"]` the others;
    paths in the report are relative to `root`. `workers`: reading processes (1: in this process; None:
    automatic, see `resolve_workers`); the report does not depend on it.
    """
    root = Path(root)
    if not root.is_dir():
        raise LadedaError(f"data.root={root}: folder not found; {LAYOUT_HELP}")
    report: dict[str, Any] = {"root": str(root), "max_unreadable_fraction": max_unreadable_fraction,
                              "crop_size": crop_size, "min_side": min_side, "splits": {}}
    hashes: dict[str, list[tuple[str, str, int]]] = defaultdict(list)  # digest -> [(split, relpath, label)]
    unreadable_all: list[dict] = []
    scans = {split: scan_split(root, split) if (root / split).is_dir() else None for split in splits}
    n_workers = resolve_workers(workers, sum(len(scan.samples) for scan in scans.values() if scan))
    read = partial(check_file, str(root))
    pool = multiprocessing.Pool(n_workers) if n_workers > 1 else None
    try:
        for split, scan in scans.items():
            if scan is None:
                report["splits"][split] = {"present": False}
                continue
            if pool is None:
                checks = map(read, scan.samples)
            else:  # in order; chunks amortise the inter-process round trips
                chunk = max(1, min(64, len(scan.samples) // (4 * n_workers)))
                checks = pool.imap(read, scan.samples, chunksize=chunk)
            info = _split_info(root, scan, checks, crop_size, min_side if split in FULL_SIZE_SPLITS else None,
                               hashes, progress)
            unreadable_all += info["unreadable"]
            report["splits"][split] = info
    finally:
        if pool is not None:
            pool.terminate()  # every result has been read (or an error is on its way up)
            pool.join()
    n_images = sum(s.get("images", 0) for s in report["splits"].values())
    n_bad = len(unreadable_all)
    cross, conflicts = _duplicates(hashes)
    report["totals"] = {
        "images": n_images, "unreadable": n_bad,
        "unreadable_fraction": n_bad / n_images if n_images else 0.0,
        "skipped_non_image": sum(s.get("skipped_non_image", 0) for s in report["splits"].values()),
        "unlabelled_images": sum(s.get("unlabelled_images", 0) for s in report["splits"].values()),
        "duplicates_across_splits": len(cross), "duplicates_with_both_labels": len(conflicts),
    }
    report["duplicates_across_splits"] = cross[:MAX_LISTED]
    report["duplicates_with_both_labels"] = conflicts[:MAX_LISTED]
    report["blocking"], report["warnings"] = _problems(report, n_images, n_bad, max_unreadable_fraction)
    report["ok"] = not report["blocking"]
    return report


def _split_info(root: Path, scan, checks: Iterator[FileCheck], crop_size, min_side, hashes,
                progress) -> dict[str, Any]:
    """Gather the split's `check_file` results (in sample order): counts per subset/class, formats, sizes,
    unreadable, small files, content hashes."""
    formats: dict[str, Counter] = {"real": Counter(), "fake": Counter()}
    modes: dict[str, Counter] = {"real": Counter(), "fake": Counter()}
    sizes: dict[str, list[tuple[int, int]]] = {"real": [], "fake": []}
    unreadable, small, unscorable = [], [], []
    for c in tqdm(checks, total=len(scan.samples), desc=f"check {scan.split}", disable=not progress, leave=False):
        if c.error is not None:
            unreadable.append({"path": c.rel, "error": c.error})
            continue
        cls = LABEL_NAMES[c.label]
        formats[cls][c.fmt] += 1
        modes[cls][c.mode] += 1
        sizes[cls].append(c.size)
        if crop_size is not None and min(c.size) < crop_size:
            small.append(c.rel)
        if min_side is not None and min(c.size) < min_side:
            unscorable.append(c.rel)
        hashes[c.digest].append((scan.split, c.rel, c.label))
    counts = scan.counts()
    classes = {c: sum(v[c] for v in counts.values()) for c in ("real", "fake")}
    named = {sub: c for sub, c in counts.items() if sub}  # files directly in the class folders are in `classes`
    return {
        "present": True,
        "images": len(scan.samples),
        "classes": classes,
        "subsets": named,
        "formats": {c: dict(sorted(v.items())) for c, v in formats.items()},
        "modes": {c: dict(sorted(v.items())) for c, v in modes.items()},
        "sizes": {c: _size_stats(v) for c, v in sizes.items()},
        "format_bias": _format_bias(formats),
        "unreadable": unreadable,
        "smaller_than_crop": len(small), "smaller_than_crop_files": small[:MAX_LISTED],
        "smaller_than_min_side": len(unscorable), "smaller_than_min_side_files": unscorable[:MAX_LISTED],
        "skipped_non_image": len(scan.non_image),
        "unlabelled_images": len(scan.unlabelled),
        "skipped_files": [os.path.relpath(p, root) for p in (scan.non_image + scan.unlabelled)[:MAX_LISTED]],
    }


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    if not sizes:
        return {}
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    common = Counter(f"{w}x{h}" for w, h in sizes).most_common(3)
    return {"min_wh": [min(widths), min(heights)], "max_wh": [max(widths), max(heights)],
            "most_common": [[s, n] for s, n in common], "distinct": len(set(sizes))}


def _format_bias(formats: dict[str, Counter]) -> dict[str, Any] | None:
    """The formats' share per class and their total-variation distance; None when a class is empty."""
    n_real, n_fake = sum(formats["real"].values()), sum(formats["fake"].values())
    if not n_real or not n_fake:
        return None
    keys = sorted(set(formats["real"]) | set(formats["fake"]))
    tv = 0.5 * sum(abs(formats["real"][k] / n_real - formats["fake"][k] / n_fake) for k in keys)
    return {"tv_distance": round(tv, 4), "biased": tv >= FORMAT_BIAS_TV}


def _duplicates(hashes) -> tuple[list[dict], list[dict]]:
    """Groups of identical files that span several splits, and groups that carry both labels."""
    cross, conflicts = [], []
    for digest, files in sorted(hashes.items()):
        if len(files) < 2:
            continue
        entry = {"sha256": digest[:16], "files": [f"{split}:{rel}" for split, rel, _ in files]}
        if len({split for split, _, _ in files}) > 1:
            cross.append(entry)
        if len({label for _, _, label in files}) > 1:
            conflicts.append(entry)
    return cross, conflicts


def _problems(report: dict, n_images: int, n_bad: int, max_frac: float) -> tuple[list[str], list[str]]:
    """Blocking problems and warnings, as one-line messages naming the splits / files."""
    blocking, warnings = [], []
    root = report["root"]
    if n_images == 0:
        blocking.append(f"{root}: no labelled images; {LAYOUT_HELP}")
    for split, info in report["splits"].items():
        if not info.get("present"):
            blocking.append(f"{root}/{split}: split folder missing")
            continue
        if info["images"] == 0:
            if n_images:
                blocking.append(f"{root}/{split}: split holds no labelled images")
            continue
        missing = [c for c, n in info["classes"].items() if n == 0]
        if missing:
            blocking.append(f"{root}/{split}: only one class (no {missing[0]} images): AUC and BCE need both")
        for subset, c in info["subsets"].items():
            if c["real"] == 0 or c["fake"] == 0:
                warnings.append(f"{root}/{split}/{subset}: only one class, its per-subset AUC is undefined")
        bias = info.get("format_bias")
        if bias and bias["biased"]:
            warnings.append(f"{root}/{split}: file format predicts the label (real {info['formats']['real']}, "
                            f"fake {info['formats']['fake']}): a detector can learn the format, not the fakes")
        if info["smaller_than_crop"]:
            warnings.append(f"{root}/{split}: {counted(info['smaller_than_crop'], 'image')} smaller than the crop "
                            f"({report['crop_size']}px) will be zero-padded")
        if info["smaller_than_min_side"]:
            side = report["min_side"]
            blocking.append(f"{root}/{split}: {counted(info['smaller_than_min_side'], 'image')} smaller than "
                            f"{side}x{side} pixels, the least the teacher (teacher.arch) scores at full size: "
                            f"{_listed(info['smaller_than_min_side_files'], info['smaller_than_min_side'])}; "
                            f"remove or resize them")
        skipped = info["skipped_non_image"] + info["unlabelled_images"]
        if skipped:
            warnings.append(f"{root}/{split}: {counted(info['skipped_non_image'], 'non-image file')} and "
                            f"{counted(info['unlabelled_images'], 'image')} outside a class folder are not used")
    if n_bad:
        files = [u["path"] for s in report["splits"].values() for u in s.get("unreadable", [])]
        frac = n_bad / max(n_images, 1)
        msg = (f"{n_bad} of {n_images} images unreadable ({frac:.1%}, data.max_unreadable_fraction="
               f"{max_frac:g}): {_listed(files, len(files))}")
        (blocking if frac > max_frac else warnings).append(msg)
    t = report["totals"]
    if t["duplicates_across_splits"]:
        ex = report["duplicates_across_splits"][0]["files"]
        warnings.append(f"exact duplicates across splits (leakage): {counted(t['duplicates_across_splits'], 'group')} "
                        f"of identical files, e.g. {' = '.join(ex[:2])}")
    if t["duplicates_with_both_labels"]:
        ex = report["duplicates_with_both_labels"][0]["files"]
        warnings.append(f"identical files that carry both labels: "
                        f"{counted(t['duplicates_with_both_labels'], 'group')}, e.g. {' = '.join(ex[:2])}")
    return blocking, warnings


def _listed(files: list[str], total: int) -> str:
    """The first SHOWN of `total` files for a message, and how many more there are."""
    return ", ".join(files[:SHOWN]) + (f" and {total - SHOWN} more" if total > SHOWN else "")


def raise_on_blocking(report: dict, report_path: str | os.PathLike | None = None) -> None:
    """Raise one LadedaError listing every blocking problem of an `analyze_dataset` report."""
    if report["blocking"]:
        where = f" (report: {report_path})" if report_path else ""
        raise LadedaError(f"data check failed{where}: " + "; ".join(report["blocking"]))


def unreadable_files(report: dict) -> set[str]:
    """Paths (relative to the data root) the check found unreadable: pass as `exclude` to `scan_split`."""
    return {u["path"] for s in report["splits"].values() for u in s.get("unreadable", [])}
