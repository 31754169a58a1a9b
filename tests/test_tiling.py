"""Scoring in bounded pieces: the evaluation stages' micro-batches and exact tiles equal the whole-batch patch map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ladeda.evaluation.scoring import score_models
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.models.fastpath import FastModel
from ladeda.models.tiling import patch_map_in_pieces
from test_fastpath import randomize_batchnorm


def trunk_inputs(model) -> list[tuple[int, ...]]:
    """Record the shape of every input the model's first conv sees (one entry per trunk call)."""
    seen: list[tuple[int, ...]] = []
    model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    return seen


@pytest.mark.parametrize("build", [lambda: LaDeDa9("right_diag", width=8), lambda: TinyLaDeDa("NPR", npr_scale=2 / 3)],
                         ids=["ladeda9", "tiny"])
def test_plain_models_run_in_micro_batches_and_exact_tiles(build):
    torch.manual_seed(2)
    model = randomize_batchnorm(build())
    x = torch.randn(4, 3, 83, 101)
    with torch.no_grad():
        whole = model.patch_map(x)
        seen = trunk_inputs(model)
        micro = patch_map_in_pieces(model, x, 2 * 83 * 101)
        assert [s[0] for s in seen] == [2, 2]  # two micro-batches of two whole images
        seen.clear()
        tiled = patch_map_in_pieces(model, x, 1000)
    assert len(seen) >= 4 * 4 and all(b == 1 and h * w <= 1000 for b, _, h, w in seen)  # tiles, none whole
    tol = 1e-5 * max(1.0, float(whole.abs().max()))
    torch.testing.assert_close(micro, whole, rtol=1e-5, atol=tol)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=tol)


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast-path"])
def test_scoring_full_size_images_larger_than_the_budget_gives_the_same_scores(fast, monkeypatch):
    """A test split of images too large for one piece: scored tile by tile, same logits and patch maps."""
    torch.manual_seed(3)
    teacher, student = randomize_batchnorm(LaDeDa9("NPR", width=8)), randomize_batchnorm(TinyLaDeDa())
    batches = [(torch.randn(2, 3, 96, 130), torch.tensor([0, 1]), torch.tensor([0, 1])),
               (torch.randn(1, 3, 140, 72), torch.tensor([1]), torch.tensor([2]))]
    models = {"teacher": teacher, "student": student}
    whole = score_models(models, batches, patch_maps=True, max_pixels=1 << 20, fast=False)
    seen = trunk_inputs(teacher)
    if fast:  # the fast copies are made inside score_models: record what their trunks see
        trunk = FastModel.trunk
        monkeypatch.setattr(FastModel, "trunk", lambda self, z: seen.append(tuple(z.shape)) or trunk(self, z))
    tiled = score_models(models, batches, patch_maps=True, max_pixels=2000, fast=fast)
    assert seen and max(h * w for _, _, h, w in seen) <= 2000  # every piece within the budget
    for name in models:
        np.testing.assert_allclose(tiled[name].logits, whole[name].logits, rtol=1e-5, atol=1e-5)
        for a, b in zip(tiled[name].patch_maps, whole[name].patch_maps, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))
        assert list(tiled[name].indices) == [0, 1, 2]
