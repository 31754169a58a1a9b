"""CPU-independent float64 moments: equal to NumPy's, and the metrics built on them keep their bits under
another BLAS kernel."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ladeda.evaluation.moments import centred_comoment, covariance

# Scores and patch pairs like those of the default's test split; prints every float64 metric that uses moments.
METRICS = """
import json, numpy as np, torch
from ladeda.distillation.agreement import PatchAgreement
from ladeda.evaluation.intervals import auc_interval, paired_auc_test
rng = np.random.default_rng(0)
y = rng.integers(0, 2, 600)
a = rng.standard_normal(600) + y
b = a + rng.standard_normal(600)
acc = PatchAgreement()
for _ in range(3):  # 200 images a batch: 27x27 student maps align with 7x7 teacher maps (9,800 patch pairs)
    student = torch.from_numpy(rng.standard_normal((200, 1, 27, 27)) * 3.0 + 1.0)
    acc.update(student, torch.from_numpy(rng.standard_normal((200, 1, 7, 7)) * 8.0 - 2.0))
out = {"interval": auc_interval(y, a), "paired": paired_auc_test(y, a, b), "agreement": acc.result(),
       "comoment": acc.comoment.ravel().tolist()}
print(json.dumps(out))
"""


def test_moments_match_numpy():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 1001)) * [[1.0], [5.0], [0.1]] + [[0.0], [3.0], [-1.0]]
    np.testing.assert_allclose(covariance(rows), np.cov(rows), rtol=1e-12)
    np.testing.assert_allclose(covariance(rows[0]), np.atleast_2d(np.cov(rows[0])), rtol=1e-12)
    mean, comoment = centred_comoment(rows)
    np.testing.assert_allclose(mean, rows.mean(axis=1), rtol=1e-14)
    centred = rows - rows.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(comoment, centred @ centred.T, rtol=1e-12)
    assert np.array_equal(comoment, comoment.T)


@functools.cache
def _metrics_with_blas_kernel(coretype: str) -> dict:
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    done = subprocess.run([sys.executable, "-c", METRICS], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("other", ["Sandybridge", "Prescott"])  # AVX and SSE3 kernels: any x86-64 CPU runs them
def test_intervals_and_patch_agreement_keep_their_bits_under_another_blas_kernel(other):
    # OpenBLAS picks its kernels by CPU model; OPENBLAS_CORETYPE emulates another CPU. A `@` or np.cov here
    # changed the comoment and the paired test's standard error in their last bits.
    assert _metrics_with_blas_kernel(other) == _metrics_with_blas_kernel("Haswell")
