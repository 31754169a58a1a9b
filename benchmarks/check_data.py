"""Data-check benchmark: images/s of `analyze_dataset` (read, decode, hash) serial, with 2 workers and automatic.

Not a test: run it on an otherwise idle machine; the projection for 720,000 files (about ForenSynths' size)
assumes the rate stays linear and the files are in the page cache like the generated ones here.

    .venv/bin/python benchmarks/check_data.py              # 3,000 JPEGs of 256x256
    .venv/bin/python benchmarks/check_data.py -n 2000 --workers 1 2 4

The images are random noise saved as JPEG (quality 90), spread over train/val/test x 0_real/1_fake, in a
temporary folder that is removed afterwards. Each setting is timed once after one warm-up pass (which also fills
the page cache); the 1-minute load average is printed before and after: other work slows every number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ladeda.data.check import analyze_dataset, resolve_workers
from ladeda.data.folders import SPLITS
from ladeda.evaluation.efficiency import cpu_model, load_average

PROJECT_FILES = 720_000


def make_dataset(root: Path, n: int, side: int = 256, seed: int = 0) -> None:
    """`n` distinct random JPEGs, as evenly as possible over the splits and classes the data check expects."""
    rng = np.random.default_rng(seed)
    folders = [root / split / cls for split in SPLITS for cls in ("0_real", "1_fake")]
    for folder in folders:
        folder.mkdir(parents=True)
    for i in range(n):
        arr = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folders[i % len(folders)] / f"{i:07d}.jpg", format="JPEG", quality=90)


def time_check(root: Path, workers: int | None) -> float:
    """Wall seconds of one full `analyze_dataset` run."""
    start = time.perf_counter()
    report = analyze_dataset(root, progress=False, workers=workers)
    elapsed = time.perf_counter() - start
    assert report["totals"]["unreadable"] == 0, report["blocking"] + report["warnings"]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="images to generate (default 3000)")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="explicit settings; auto is added")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, usable CPUs {cpus}")
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="ladeda-check-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_dataset(root, args.n, args.side)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 1e6
        print(f"generated {args.n} JPEGs of {args.side}x{args.side} ({size_mb:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        time_check(root, 1)  # warm-up: page cache, imports, PIL's decoders
        print(f"\n| workers | processes | wall s | images/s | projected for {PROJECT_FILES:,} files |")
        print("|---|---|---|---|---|")
        for workers in [*args.workers, None]:
            seconds = time_check(root, workers)
            rate = args.n / seconds
            projected = PROJECT_FILES / rate
            name = "auto" if workers is None else str(workers)
            print(f"| {name} | {resolve_workers(workers, args.n)} | {seconds:.2f} | {rate:,.0f} | "
                  f"{projected / 60:.1f} min |")
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
