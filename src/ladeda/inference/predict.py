"""Score image files, folders or globs with a checkpoint; stream a CSV, optional heatmaps (`ladeda predict`).

The command line is in `ladeda.inference.cli`; this module is the library (`predict`, `iter_predictions`).

Streaming: files are read in chunks (up to `4 * batch_size` files or 64 MP), images of equal size within
a chunk are batched together (no resizing unless `--resize`; NPR models get odd sides cropped by one
pixel first, which is what the model does anyway), CSV rows are written as each chunk finishes, in
input order. Only the file list and, for the metric set, the labels and logits of labelled images
(9 bytes each) are held for the whole run, so 10,000+ images run in bounded memory.

Files come from `ladeda.data.folders.find_images`. Labels: an image whose path has a `0_real`/`real`
or `1_fake`/`fake` folder (the nearest one wins; `ladeda.data.folders.label_from_path`) is labelled,
and the metric set of `ladeda.evaluation.metrics.detection_metrics` is printed for the labelled
images. Unreadable files (and images smaller than the model's patch) are reported as warnings,
skipped and counted in the one-line summary.
"""

from __future__ import annotations

import array
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

from ladeda.core.errors import LadedaError
from ladeda.core.files import atomic_path, check_output
from ladeda.core.runtime import configure_threads, resolve_device
from ladeda.core.text import counted
from ladeda.data.folders import find_images, label_from_path
from ladeda.data.images import load_rgb
from ladeda.data.transforms import normalize_arrays
from ladeda.evaluation.metrics import detection_metrics, sigmoid
from ladeda.reporting.heatmap import heatmap_path, save_heatmap
from ladeda.models.checkpoints import load_model
from ladeda.models.fastpath import FastModel, optimize_for_inference

CSV_COLUMNS = ("path", "fake_probability", "logit", "prediction", "height", "width", "model")
CHUNK_PIXELS = 64 << 20  # decoded pixels held at once (about 200 MB of RGB)
BATCH_PIXELS = 1 << 18  # per image slot: a batch holds at most batch_size * 512 x 512 pixels


@dataclass
class Prediction:
    """One scored image. `prob_map` (per-patch fake probability) and `image` are kept only for heatmaps."""

    path: Path
    label: int | None
    logit: float
    height: int
    width: int
    scored_size: tuple[int, int]
    prob_map: np.ndarray | None = None
    image: Image.Image | None = None

    @property
    def probability(self) -> float:
        """The fake probability, sigmoid(logit) in float64, as written to the CSV."""
        return float(sigmoid(np.float64(self.logit)))


@dataclass
class Skipped:
    """A file that could not be scored, and why."""

    path: Path
    reason: str


@dataclass
class Summary:
    """What a predict run did (also printed as one line)."""

    scored: int
    fake: int
    skipped: int
    seconds: float
    out: Path
    metrics: dict | None = None
    heatmaps: Path | None = None
    device: str = "cpu"

    def line(self, threshold: float) -> str:
        """The one-line summary printed at the end of a run (counts, speed, where the output went)."""
        rate = self.scored / self.seconds if self.seconds > 0 else float("nan")
        text = (f"scored {counted(self.scored, 'image')} ({self.fake} fake, {self.scored - self.fake} real at "
                f"threshold {threshold:g}), skipped {self.skipped} (unreadable or too small), in {self.seconds:.1f} s "
                f"({rate:.1f} img/s on {self.device}); wrote {self.out}")
        return text + (f" and heatmaps under {self.heatmaps}" if self.heatmaps else "")


def iter_predictions(model: FastModel | nn.Module, files: Sequence[Path], *, batch_size: int = 32,
                     device: torch.device | str = "cpu", resize: int | None = None, keep_maps: bool = False,
                     chunk_files: int | None = None) -> Iterator[Prediction | Skipped]:
    """Score `files` in input order, yielding one Prediction or Skipped per file, holding one chunk at a time."""
    model = optimize_for_inference(model)
    geometry = model.geometry
    chunk_files = chunk_files or max(4 * batch_size, 16)
    chunk: list[Skipped | tuple[Path, np.ndarray, tuple[int, int], Image.Image | None]] = []
    pixels = 0
    for path in files:
        try:
            image = load_rgb(path)
        except LadedaError as err:
            chunk.append(Skipped(path, str(err)))
            continue
        scored = image.resize((resize, resize), Image.BILINEAR) if resize else image
        arr = np.asarray(scored)
        if geometry.crop_even:
            arr = arr[: arr.shape[0] - arr.shape[0] % 2, : arr.shape[1] - arr.shape[1] % 2]
        if min(arr.shape[:2]) < geometry.min_size:
            chunk.append(Skipped(path, f"{path}: {image.height}x{image.width} is smaller than the model's "
                                       f"{geometry.min_size}x{geometry.min_size} minimum"))
            continue
        chunk.append((path, arr, (image.height, image.width), image if keep_maps else None))
        pixels += arr.shape[0] * arr.shape[1]
        if len(chunk) >= chunk_files or pixels >= CHUNK_PIXELS:
            yield from _score_chunk(model, chunk, batch_size, device, keep_maps)
            chunk, pixels = [], 0
    if chunk:
        yield from _score_chunk(model, chunk, batch_size, device, keep_maps)


@torch.inference_mode()
def _score_chunk(model: FastModel, chunk, batch_size: int, device, keep_maps: bool) -> Iterator[Prediction | Skipped]:
    """Bucket a chunk by size, run each bucket in batches, yield the chunk's items in input order."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for k, entry in enumerate(chunk):
        if not isinstance(entry, Skipped):
            buckets.setdefault(entry[1].shape[:2], []).append(k)
    logits: list[float] = [0.0] * len(chunk)
    maps: list[np.ndarray | None] = [None] * len(chunk)
    for (h, w), members in buckets.items():
        per = max(1, min(batch_size, (batch_size * BATCH_PIXELS) // (h * w)))
        for start in range(0, len(members), per):
            idx = members[start:start + per]
            patch = model.patch_map(normalize_arrays([chunk[k][1] for k in idx], device))
            image_logits = patch.mean(dim=(1, 2, 3)).double().cpu().numpy()
            probs = torch.sigmoid(patch[:, 0]).float().cpu().numpy() if keep_maps else None
            for n, k in enumerate(idx):
                logits[k] = float(image_logits[n])
                if probs is not None:
                    maps[k] = probs[n]
    for k, entry in enumerate(chunk):
        if isinstance(entry, Skipped):
            yield entry
            continue
        path, arr, (height, width), image = entry
        yield Prediction(path, label_from_path(path), logits[k], height, width, arr.shape[:2], maps[k], image)


def model_description(model: nn.Module, weights: str | os.PathLike) -> str:
    """The CSV `model` column: arch, width (LaDeDa), input filter and weights file, e.g. `LaDeDa9-w64-NPR@x.pth`."""
    arch = getattr(model, "arch", type(model).__name__)
    width = "" if arch == "TinyLaDeDa" else f"-w{model.width}"
    scale = f"x{model.npr_scale:g}" if model.preprocess == "NPR" and model.npr_scale != 1.0 else ""
    return f"{arch}{width}-{model.preprocess}{scale}@{Path(weights).name}"


def predict(weights: str | os.PathLike, inputs: str | Sequence[str], out: str | os.PathLike, *,
            arch: str | None = None, preprocess: str | None = None, npr_scale: float | None = None,
            heatmaps: str | os.PathLike | None = None, batch_size: int = 32, device: str = "auto",
            threshold: float = 0.5, resize: int | None = None, threads: int | None = None,
            progress: bool = True) -> Summary:
    """Score images with a checkpoint, write the CSV (atomically) and heatmaps, print warnings/metrics/summary.

    Output paths are checked before the model is loaded; a non-finite logit stops the run (no CSV).
    """
    if batch_size < 1:
        raise LadedaError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0.0 <= threshold <= 1.0:
        raise LadedaError(f"--threshold is a probability between 0 and 1, got {threshold}")
    check_output(out, "--out")
    if heatmaps is not None:
        check_output(heatmaps, "--heatmaps", folder=True)
    dev = resolve_device(device)
    model = load_model(weights, arch=arch, preprocess=preprocess, npr_scale=npr_scale)
    files, root = find_images(inputs)
    where = str(dev)
    if dev.type == "cpu":
        n = configure_threads(threads)
        where = f"cpu, {n} thread{'s' if n > 1 else ''}"
    fast = optimize_for_inference(model.to(dev))
    if resize is not None and resize < fast.geometry.min_size:
        raise LadedaError(f"--resize {resize} is below the model's {fast.geometry.min_size}-pixel minimum")
    name = model_description(fast, weights)
    labels, logits = array.array("b"), array.array("d")
    scored = fake = skipped = 0
    start = time.perf_counter()
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle, \
            tqdm(total=len(files), unit="img", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for item in iter_predictions(fast, files, batch_size=batch_size, device=dev, resize=resize,
                                     keep_maps=heatmaps is not None):
            bar.update(1)
            if isinstance(item, Skipped):
                skipped += 1
                tqdm.write(f"warning: skipped {item.reason}", file=sys.stderr)
                continue
            if not math.isfinite(item.logit):
                raise LadedaError(f"{weights} gives a non-finite logit ({item.logit}) for {item.path}: the model "
                                  f"overflows, so its scores are meaningless; no CSV written")
            p = item.probability
            is_fake = p > threshold
            scored += 1
            fake += int(is_fake)
            writer.writerow((str(item.path), f"{p:.6f}", f"{item.logit:.6f}", "fake" if is_fake else "real",
                             item.height, item.width, name))
            if item.label is not None:
                labels.append(item.label)
                logits.append(item.logit)
            if heatmaps is not None:
                save_heatmap(heatmap_path(heatmaps, item.path, root), item.image, item.prob_map, fast.geometry,
                             item.scored_size)
        if scored == 0:
            raise LadedaError(f"none of the {len(files)} image files could be scored (see the warnings); "
                              f"no CSV written")
    summary = Summary(scored, fake, skipped, time.perf_counter() - start, out,
                      heatmaps=Path(heatmaps) if heatmaps is not None else None, device=where)
    if len(labels):
        summary.metrics = _report_metrics(np.asarray(labels), np.asarray(logits), scored)
    print(summary.line(threshold))
    return summary


def _report_metrics(labels: np.ndarray, logits: np.ndarray, scored: int) -> dict | None:
    """Print detection_metrics for the labelled images (or why there are none) and return them."""
    unlabelled = scored - len(labels)
    note = f" ({counted(unlabelled, 'unlabelled image')} not included)" if unlabelled else ""
    try:
        metrics = detection_metrics(labels, logits, "the labelled images")
    except LadedaError as err:
        print(f"metrics: not computed: {err}{note}")
        return None
    print(f"metrics on {metrics['n']} labelled images ({metrics['n_real']} real, {metrics['n_fake']} fake; "
          f"accuracies at p = 0.5){note}:")
    print("  " + "  ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}"  # no interval with a single image of a class
                           for k, v in metrics.items() if not k.startswith("n")))
    return metrics
