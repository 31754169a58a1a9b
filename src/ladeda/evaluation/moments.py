"""Means, covariances and centred comoments in float64 that have the same bits on every CPU.

NumPy's `@`, `np.dot` and `np.cov` hand the products to BLAS, whose kernels (chosen per CPU model)
sum in different orders, so a DeLong interval or a patch correlation of the same scores differed in its
last digits between two machines and a fresh clone saw changed metrics. Here every sum is NumPy's own
pairwise reduction over a contiguous vector: its order depends only on the length.
"""

from __future__ import annotations

import numpy as np


def means(rows: np.ndarray) -> np.ndarray:
    """(k,) mean of each row of a (k, n) float array."""
    rows = np.asarray(rows, dtype=np.float64)
    return np.array([np.sum(np.ascontiguousarray(r)) / rows.shape[1] for r in rows])


def centred_comoment(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k,) row means and the (k, k) sums of centred products of a (k, n) float array (n * the biased covariance)."""
    rows = np.asarray(rows, dtype=np.float64)
    mean = means(rows)
    centred = [np.ascontiguousarray(r - m) for r, m in zip(rows, mean)]
    k = len(centred)
    out = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = np.sum(centred[i] * centred[j])
    return mean, out


def covariance(rows: np.ndarray) -> np.ndarray:
    """(k, k) sample covariance (ddof 1) of the rows of a (k, n) or (n,) array, like `np.atleast_2d(np.cov(rows))`."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    return centred_comoment(rows)[1] / (rows.shape[1] - 1)
