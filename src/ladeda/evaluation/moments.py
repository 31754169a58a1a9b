"""Means, covariances and centred comoments in float64 that have the same bits on every CPU.

NumPy's `@`, `np.dot` and `np.cov` hand the products to BLAS, whose kernels (chosen per CPU model)
sum in different orders, so a DeLong interval or a patch correlation of the same scores differed in its
last digits between two machines and a fresh clone saw changed metrics. Here every sum is NumPy's own
pairwise reduction over a contiguous vector: its order depends only on the length.
"""

from __future__ import annotations

import numpy as np


def centred_comoment(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k,) row means and the (k, k) sums of centred products of a (k, n) float array (n * the biased covariance)."""
    rows = np.ascontiguousarray(np.atleast_2d(rows), dtype=np.float64)  # every row a contiguous vector
    mean = np.array([np.sum(r) for r in rows]) / rows.shape[1]
    centred = rows - mean[:, None]
    return mean, np.array([[np.sum(a * b) for b in centred] for a in centred])  # a * b is b * a: symmetric


def covariance(rows: np.ndarray) -> np.ndarray:
    """(k, k) sample covariance (ddof 1) of the rows of a (k, n) or (n,) array, like `np.atleast_2d(np.cov(rows))`."""
    rows = np.atleast_2d(rows)
    return centred_comoment(rows)[1] / (rows.shape[1] - 1)
