"""The fast inference path gives the plain model's outputs (folded stem/BatchNorm, micro-batches, tiles)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from ladeda.evaluation import scoring
from ladeda.models import fastpath
from ladeda.core.runtime import configure_threads, idle_cpus
from ladeda.models.fastpath import FastModel, optimize_for_inference
from ladeda.models.folding import fold_batchnorms
from ladeda.models.geometry import patch_geometry
from ladeda.models import LaDeDa9, TinyLaDeDa


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


MODELS = {
    "ladeda9-npr": lambda: LaDeDa9("NPR", width=8),
    "ladeda9-right_diag": lambda: LaDeDa9("right_diag", npr_scale=1.0, width=8),
    "tiny-npr": lambda: TinyLaDeDa("NPR", npr_scale=2 / 3),
    "tiny-right_diag": lambda: TinyLaDeDa("right_diag"),
}


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal within float32 tolerance, scaled to the output's magnitude (random LaDeDa logits reach ~100)."""
    scale = max(1.0, float(a.abs().max()))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-5 * scale)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_path_equals_plain_model(name):
    torch.manual_seed(0)
    model = randomize_batchnorm(MODELS[name]())
    fast = optimize_for_inference(model)
    assert isinstance(fast, FastModel)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    for shape in [(3, 3, 64, 64), (2, 3, 67, 45)]:  # an odd size: NPR crops it
        x = torch.randn(*shape)
        with torch.no_grad():
            plain_map, plain_logit = model.patch_map(x), model(x)
            fast_map, fast_logit = fast.patch_map(x), fast(x)
        assert fast_map.shape == plain_map.shape
        assert_close(plain_map, fast_map)
        assert_close(plain_logit, fast_logit)


@pytest.mark.parametrize("name", ["ladeda9-npr", "tiny-right_diag"])
def test_onednn_convs_equal_plain_model(name, monkeypatch):
    """Force every conv (but the 1-channel head) onto torch.mkldnn_convolution and compare."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    calls = []
    original = torch.mkldnn_convolution
    monkeypatch.setattr(fastpath, "ONEDNN_MIN_MACS", 0)
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: calls.append(1) or original(*a))
    model = randomize_batchnorm(MODELS[name]())
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 64, 50)
    with torch.no_grad():
        assert_close(model.patch_map(x), fast.patch_map(x))
    convs = sum(isinstance(m, nn.Conv2d) for m in fast.modules())
    assert len(calls) == convs - 1


@pytest.mark.parametrize("name", ["ladeda9-right_diag", "tiny-npr"])
def test_micro_batches_and_tiles_are_exact(name):
    torch.manual_seed(1)
    model = randomize_batchnorm(MODELS[name]())
    fast = optimize_for_inference(model)
    x = torch.randn(5, 3, 71, 90)
    with torch.no_grad():
        whole = fast.trunk(fast.input_filter(x))
        fast.work_pixels = 2 * 71 * 90  # micro-batches of 2 images
        micro = fast.patch_map(x)
        fast.work_pixels = 900  # every image in several tiles (30x30 input pixels each)
        tiled = fast.patch_map(x)
    torch.testing.assert_close(micro, whole, rtol=1e-5, atol=1e-5 * max(1.0, float(whole.abs().max())))
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5 * max(1.0, float(whole.abs().max())))


def test_original_model_is_untouched():
    model = randomize_batchnorm(TinyLaDeDa()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert model.training and not fast.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimize_for_inference(fast) is fast


class MeanColour(nn.Module):
    """A detector that is neither LaDeDa nor Tiny-LaDeDa: scoring must run it as it is."""

    def patch_map(self, x):
        return x.mean(dim=1, keepdim=True)


def test_scoring_runs_ladeda_models_through_the_fast_path_with_the_plain_scores(monkeypatch):
    torch.manual_seed(4)
    models = {"teacher": randomize_batchnorm(LaDeDa9("NPR", width=8)),
              "student": randomize_batchnorm(TinyLaDeDa("right_diag"), seed=1).train(), "other": MeanColour()}
    before = {k: v.clone() for k, v in models["teacher"].state_dict().items()}
    batches = [(torch.randn(4, 3, 48, 40), torch.tensor([0, 1, 0, 1]), torch.arange(4)),
               (torch.randn(3, 3, 48, 40), torch.tensor([1, 0, 1]), torch.arange(4, 7))]
    ran: list[type] = []
    patch_map = scoring._patch_map
    monkeypatch.setattr(scoring, "_patch_map", lambda model, x, budget: ran.append(type(model)) or patch_map(
        model, x, budget))
    fast = scoring.score_models(models, batches, patch_maps=True)
    assert ran == [FastModel, FastModel, MeanColour] * 2
    assert all(torch.equal(before[k], v) for k, v in models["teacher"].state_dict().items())
    assert not models["student"].training  # put in eval mode, as before
    ran.clear()
    plain = scoring.score_models(models, batches, patch_maps=True, fast=False)
    assert ran == [LaDeDa9, TinyLaDeDa, MeanColour] * 2
    for name in models:
        assert_close(torch.from_numpy(plain[name].logits), torch.from_numpy(fast[name].logits))
        for a, b in zip(plain[name].patch_maps, fast[name].patch_maps, strict=True):
            assert_close(torch.from_numpy(a), torch.from_numpy(b))
        assert list(fast[name].indices) == list(range(7)) and list(fast[name].labels) == list(plain[name].labels)


@pytest.mark.parametrize("name,stride,size,offset", [("ladeda9-npr", 8, 9, 0), ("tiny-right_diag", 2, 7, -1),
                                                     ("tiny-npr", 2, 5, 0)])
def test_patch_geometry_matches_what_each_cell_sees(name, stride, size, offset):
    """Perturb one pixel: exactly the cells whose window [offset + S*i, offset + S*i + R) holds it change."""
    torch.manual_seed(2)
    model = randomize_batchnorm(MODELS[name]())
    g = patch_geometry(model)
    assert (g.stride, g.size, g.offset) == (stride, size, offset)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        base = model.patch_map(x)[0, 0]
        for py, px in [(0, 0), (17, 30), (26, 9), (47, 47)]:
            y = x.clone()
            y[0, :, py, px] += 50.0
            changed = (model.patch_map(y)[0, 0] - base).abs() > 1e-6
            expect = torch.zeros_like(changed)
            for i in range(base.shape[0]):
                for j in range(base.shape[1]):
                    inside_r = offset + stride * i <= py < offset + stride * i + size
                    inside_c = offset + stride * j <= px < offset + stride * j + size
                    expect[i, j] = inside_r and inside_c
            assert torch.equal(changed, expect), (py, px)
    assert g.cells(48) == base.shape[0]


def test_too_small_input_is_a_clear_error():
    fast = optimize_for_inference(LaDeDa9(width=8))
    assert fast.geometry.min_size == 10  # 9x9 patch, NPR needs an even side
    with pytest.raises(ValueError, match="at least 10x10"):
        fast.patch_map(torch.randn(1, 3, 9, 40))


def test_fold_batchnorms_removes_every_batchnorm():
    folded = fold_batchnorms(randomize_batchnorm(LaDeDa9(width=8)).layer2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure_threads() == 2 and torch.get_num_threads() == 2
        assert 1 <= idle_cpus(0.05) <= len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)
