"""A sample grid PNG (rows of real and fake images per domain / subset) so a person can look at the data."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ladeda.data.folders import Sample
from ladeda.data.images import load_rgb
from ladeda.core.files import atomic_path


def grid_rows(samples: Sequence[Sample], name: str, per_row: int = 8) -> list[tuple[str, list[str]]]:
    """Rows (title, paths) of the first `per_row` real and fake images of each subset of `samples`."""
    rows = []
    for subset in sorted({s.subset for s in samples}):
        for label, cls in ((0, "real"), (1, "fake")):
            paths = [s.path for s in samples if s.subset == subset and s.label == label][:per_row]
            if paths:
                rows.append((f"{name}{'/' + subset if subset else ''} {cls}", paths))
    return rows


def save_sample_grid(rows: Sequence[tuple[str, Sequence[str]]], path: str | os.PathLike, cell: float = 0.9) -> None:
    """Draw each row's images (pixels shown unsmoothed) with its title, and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max((len(p) for _, p in rows), default=1)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols + 1.6, cell * len(rows) + 0.2),
                             squeeze=False)
    for r, (title, paths) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(paths):
                ax.imshow(np.asarray(load_rgb(paths[c])), interpolation="nearest")
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=1.5 / (cell * n_cols + 1.6), right=0.99, top=0.99, bottom=0.01,
                        wspace=0.05, hspace=0.08)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
