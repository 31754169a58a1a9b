"""Student-teacher patch agreement, computed streaming: Pearson and Spearman correlation of the aligned patch logits.

Keeping every patch map of a large test set costs gigabytes (a 224-px LaDeDa9 map has 625 patches, the
aligned student's as many again), so `PatchAgreement` keeps only running float64 moments for Pearson
(exact, merged batch by batch) and, for Spearman, which needs the ranks of all patches, the patches
themselves up to `spearman_cap` pairs and beyond that a seeded uniform sample of that many (each patch
gets a random key; the smallest keys stay), reported with how many patches it used.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.stats import spearmanr

from ladeda.core.errors import LadedaError
from ladeda.distillation.loss import align
from ladeda.evaluation.moments import centred_comoment

SPEARMAN_CAP = 2_000_000  # patch pairs kept for Spearman (32 MB); more are subsampled uniformly


class PatchAgreement:
    """Accumulates aligned (student, teacher) patch-logit pairs one batch at a time; `result()` gives the correlations."""

    def __init__(self, spearman_cap: int = SPEARMAN_CAP, seed: int = 0):
        self.n = 0
        self.mean = np.zeros(2)  # running means of (student, teacher)
        self.comoment = np.zeros((2, 2))  # running sums of centred products (Chan et al.'s pairwise merge)
        self.cap = spearman_cap
        self.rng = np.random.default_rng(seed)
        self.kept = np.empty((0, 2))
        self.keys = np.empty(0)

    def update(self, student_maps: Iterable, teacher_maps: Iterable) -> None:
        """Add images: per-image (H, W) student and (h, w) teacher maps (arrays or tensors), or (B, 1, ., .) batches."""
        pairs = []
        for sm, tm in zip(_images(student_maps), _images(teacher_maps), strict=True):
            pairs.append(torch.stack([align(sm[None, None], tm[None, None]).flatten(), tm.flatten()], 1))
        if pairs:
            self._add(torch.cat(pairs).double().numpy())

    def _add(self, xy: np.ndarray) -> None:
        mean, comoment = centred_comoment(xy.T)  # the same bits on every CPU (a BLAS `@` sums per CPU model)
        self._combine(len(xy), mean, comoment, xy, self.rng.random(len(xy)))

    def _combine(self, m: int, mean: np.ndarray, comoment: np.ndarray, xy: np.ndarray, keys: np.ndarray) -> None:
        """Merge a set of `m` pairs given by its means and centred comoment (Chan et al.), and its sample."""
        delta = mean - self.mean
        total = self.n + m
        self.comoment += comoment + np.outer(delta, delta) * self.n * m / total
        self.mean += delta * m / total
        self.n = total
        self.kept, self.keys = np.concatenate([self.kept, xy]), np.concatenate([self.keys, keys])
        if len(self.keys) > self.cap:
            keep = np.argpartition(self.keys, self.cap)[:self.cap]
            keep.sort()  # the stream's order, so the sample does not depend on argpartition's
            self.kept, self.keys = self.kept[keep], self.keys[keep]

    def merge(self, other: "PatchAgreement") -> None:
        """Add another accumulator's pairs (another rank's shard): moments merged exactly, samples re-capped."""
        if other.n:
            self._combine(other.n, other.mean, other.comoment, other.kept, other.keys)

    @classmethod
    def merged(cls, parts: list["PatchAgreement"]) -> "PatchAgreement":
        """One accumulator of several, folded in order (the first is returned, updated)."""
        first, *rest = parts
        for other in rest:
            first.merge(other)
        return first

    def result(self) -> dict[str, float]:
        """{"pearson", "spearman", "patches", "spearman_patches"}; NaN where a map is constant (no correlation)."""
        if self.n == 0:
            raise LadedaError("patch agreement needs at least one pair of patch maps")
        c = self.comoment
        with np.errstate(invalid="ignore", divide="ignore"):
            pearson = float(c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]))
        spearman = float(spearmanr(self.kept[:, 0], self.kept[:, 1]).statistic)
        return {"pearson": pearson, "spearman": spearman, "patches": self.n, "spearman_patches": len(self.kept)}


def patch_agreement(student_maps: list, teacher_maps: list) -> dict[str, float]:
    """Pearson and Spearman correlation between the aligned student patch logits and the teacher's, over all patches.

    Maps are per image ((H, W) student, (h, w) teacher; sizes may differ between images). Pearson says how
    well the student reproduces the teacher's logits up to a linear map; Spearman only how well it ranks patches.
    """
    if len(student_maps) != len(teacher_maps) or not len(student_maps):
        raise LadedaError(f"patch agreement needs one student map per teacher map, got {len(student_maps)} "
                          f"and {len(teacher_maps)}")
    acc = PatchAgreement()
    acc.update(student_maps, teacher_maps)
    return acc.result()


def _images(maps) -> Iterable[torch.Tensor]:
    """Per-image 2-D tensors of a (B, 1, h, w) batch or of a list of 2-D maps."""
    if isinstance(maps, torch.Tensor) and maps.dim() == 4:
        return list(maps[:, 0].float())
    return [torch.as_tensor(m).float() for m in maps]
