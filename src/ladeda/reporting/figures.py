"""The report's pictures (matplotlib, offline PNGs): validation AUC per epoch, teacher vs student ROC,
AUC under each degradation, and patch heatmaps of a few test images.

PNGs carry no software or time metadata, so the same numbers give the same bytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ladeda.core.files import atomic_path
from ladeda.data.images import load_rgb
from ladeda.evaluation.robustness import CURVES
from ladeda.models.geometry import PatchGeometry
from ladeda.reporting.heatmap import render_heatmap

MODEL_STYLE = {"teacher": {"color": "tab:blue", "marker": "o"}, "student": {"color": "tab:orange", "marker": "s"}}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 90) -> Path:
    """Write a matplotlib figure as PNG atomically (no metadata: byte-stable) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    _pyplot().close(fig)
    return Path(path)


def read_curve(path: str | os.PathLike, field: str) -> list[tuple[float, float]]:
    """(step, value) rows of a DVCLive TSV log (`plots/<stage>/plots/metrics/<field>.tsv`); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [(float(row["step"]), float(row[field])) for row in csv.DictReader(f, delimiter="\t")]


def auc_per_epoch(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike) -> Path:
    """One line per training stage: validation AUC against the epoch (DVCLive steps)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for name, rows in curves.items():
        if rows:
            ax.plot([r[0] for r in rows], [r[1] for r in rows], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel="validation AUC", title="Validation AUC per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def roc_curves(rocs: Mapping[str, Sequence[Mapping[str, float]]], aucs: Mapping[str, float],
               path: str | os.PathLike) -> Path:
    """Teacher and student ROC on the test split, with the chance diagonal; the legend gives each AUC."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    for name, rows in rocs.items():
        ax.plot([r["fpr"] for r in rows], [r["tpr"] for r in rows], color=MODEL_STYLE[name]["color"],
                label=f"{name} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the test split",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


PANEL_LABELS = {"jpeg": "JPEG quality", "resize": "resize scale (down and up)", "blur": "Gaussian blur sigma"}


def robustness_curves(rows: Mapping[str, Sequence[Mapping[str, float]]], clean: Mapping[str, float],
                      path: str | os.PathLike) -> Path:
    """AUC vs JPEG quality / resize scale / blur sigma, one line per model; the dotted line is its clean AUC."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(10, 3.1), sharey=True)
    for ax, (family, (x, _)) in zip(axes, CURVES.items()):
        label = PANEL_LABELS[family]
        for name, style in MODEL_STYLE.items():
            data = rows.get(family) or []
            if name not in clean or not data:
                continue
            ax.plot([r[x] for r in data], [r[f"{name}_auc"] for r in data], label=name, **style)
            ax.axhline(clean[name], color=style["color"], lw=0.8, ls=":")
        if family == "jpeg":
            ax.invert_xaxis()  # stronger degradation to the right in every panel
        ax.set(xlabel=label, title=f"AUC vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test AUC")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass
class HeatmapRow:
    """One test image with each model's patch fake-probability map and image fake probability."""

    image: Image.Image
    label: int
    title: str
    maps: dict[str, np.ndarray]
    probabilities: dict[str, float]
    scored_size: tuple[int, int]  # (H, W) the models saw (NPR's even crop may drop a row / column)


def heatmap_grid(rows: Sequence[HeatmapRow], geometries: Mapping[str, PatchGeometry],
                 path: str | os.PathLike, scale: int = 3) -> Path:
    """Rows of test images: the image, then each model's patch heatmap over it (blue real, red fake)."""
    plt = _pyplot()
    names = list(geometries)
    fig, axes = plt.subplots(len(rows), 1 + len(names), figsize=(1.9 * (1 + len(names)), 2.0 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        big = row.image.resize((row.image.width * scale, row.image.height * scale), Image.NEAREST)
        panels = [(big, f"{row.title}\n{'fake' if row.label else 'real'}")]
        for name in names:
            geometry = geometries[name]
            overlay = render_heatmap(row.image, row.maps[name], geometry, row.scored_size)
            panels.append((overlay.resize(big.size, Image.NEAREST), f"{name}: p(fake) {row.probabilities[name]:.2f}"))
        for ax, (img, title) in zip(axes[r], panels):
            ax.imshow(np.asarray(img), interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def heatmap_examples(models: Mapping[str, nn.Module], dataset, per_group: int = 1,
                     candidates: int = 16) -> list[HeatmapRow]:
    """For each subset and class, the `per_group` most textured (highest pixel standard deviation) of its first
    `candidates` test images, with each model's patch fake-probability map: the same images every run, and
    ones with something to look at (flat crops make uninformative heatmaps)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, sample in enumerate(dataset.samples):
        group = groups.setdefault((sample.subset, sample.label), [])
        if len(group) < candidates:
            group.append(i)
    def texture(i: int) -> float:
        return float(np.asarray(load_rgb(dataset.samples[i].path)).std())

    picked = {key: sorted(idx, key=texture, reverse=True)[:per_group] for key, idx in groups.items()}
    rows = []
    with torch.no_grad():
        for (subset, label), indices in sorted(picked.items()):
            for i in indices:
                x, _, _ = dataset[i]
                maps, probs = {}, {}
                for name, model in models.items():
                    pm = model.eval().patch_map(x.unsqueeze(0))
                    maps[name] = torch.sigmoid(pm[0, 0]).numpy()
                    probs[name] = float(torch.sigmoid(pm.mean()))
                rows.append(HeatmapRow(load_rgb(dataset.samples[i].path), label, subset or "test", maps, probs,
                                       tuple(x.shape[-2:])))
    return rows
