"""Streaming patch agreement equals the correlation over all patches at once, and stays close when it subsamples."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ladeda.distillation.agreement import PatchAgreement, patch_agreement
from torch.nn import functional as F

from ladeda.distillation.loss import ALIGN_KERNEL, ALIGN_STRIDE, align


def maps(n, seed, sizes=((33, 33), (41, 49), (25, 57))):
    """Per-image student (H, W) and teacher (h, w) maps of mixed sizes, correlated but not identical."""
    g = torch.Generator().manual_seed(seed)
    students, teachers = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        s = torch.randn(h, w, generator=g)
        t = F.avg_pool2d(s[None, None], ALIGN_KERNEL, ALIGN_STRIDE)[0, 0]  # what `align` makes of s
        students.append(s.numpy())
        teachers.append((2 * t + 0.5 * torch.randn(t.shape, generator=g) + 3).numpy())
    return students, teachers


def all_at_once(students, teachers):
    s = torch.cat([align(torch.as_tensor(a)[None, None], torch.as_tensor(b)[None, None]).flatten()
                   for a, b in zip(students, teachers)]).double()
    t = torch.cat([torch.as_tensor(b).flatten() for b in teachers]).double()
    return float(torch.corrcoef(torch.stack([s, t]))[0, 1]), float(spearmanr(s.numpy(), t.numpy()).statistic)


def test_streaming_over_batches_equals_all_patches_at_once():
    students, teachers = maps(30, seed=0)
    acc = PatchAgreement()
    for i in range(0, 30, 7):  # uneven batches
        acc.update(students[i:i + 7], teachers[i:i + 7])
    pearson, spearman = all_at_once(students, teachers)
    r = acc.result()
    assert r["pearson"] == pytest.approx(pearson, abs=1e-9) and 0.5 < pearson < 0.99
    assert r["spearman"] == pytest.approx(spearman, abs=1e-12)
    assert r["patches"] == r["spearman_patches"] == sum(t.size for t in teachers)
    assert patch_agreement(students, teachers)["pearson"] == pytest.approx(pearson, abs=1e-9)


def test_batches_of_maps_as_the_scorer_hands_them_over():
    students, teachers = maps(6, seed=1, sizes=((33, 33),))
    acc = PatchAgreement()
    acc.update(torch.as_tensor(np.stack(students))[:, None], torch.as_tensor(np.stack(teachers))[:, None])
    assert acc.result()["pearson"] == pytest.approx(all_at_once(students, teachers)[0], abs=1e-9)


def test_above_the_cap_spearman_is_a_close_deterministic_estimate():
    students, teachers = maps(400, seed=2)
    exact = all_at_once(students, teachers)[1]

    def estimate(seed):
        acc = PatchAgreement(spearman_cap=2_000, seed=seed)
        for i in range(0, 400, 16):
            acc.update(students[i:i + 16], teachers[i:i + 16])
        return acc.result()

    r = estimate(0)
    assert r["spearman_patches"] == 2_000 < r["patches"]
    assert r["spearman"] == estimate(0)["spearman"] != estimate(1)["spearman"]
    assert abs(r["spearman"] - exact) < 0.03  # a 2,000-pair sample of a correlation near 0.8
    assert r["pearson"] == pytest.approx(all_at_once(students, teachers)[0], abs=1e-9)  # never subsampled


def test_a_constant_map_has_no_correlation():
    students, teachers = maps(3, seed=3)
    r = patch_agreement(students, [np.zeros_like(t) for t in teachers])
    assert math.isnan(r["pearson"]) and math.isnan(r["spearman"])
