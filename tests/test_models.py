"""Exact LaDeDa / Tiny-LaDeDa architectures: parameter counts, official names, map shapes, receptive field."""

import pytest
import torch
import torch.nn.functional as F

from ladeda.models import LaDeDa5, LaDeDa9, LaDeDa17, LaDeDa33, TinyLaDeDa, build_model, npr
from ladeda.models.filters import InputFilter


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomise_bn(model, seed=0):
    """Give BatchNorm non-trivial running statistics so eval-mode tests mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def test_ladeda9_parameter_count_and_official_names():
    model = LaDeDa9()
    assert n_params(model) == 13_641_793
    sd = model.state_dict()
    assert len(sd) == 321
    assert sd["fc.weight"].shape == (1, 2048)
    assert sd["conv1.weight"].shape == (64, 3, 1, 1)
    assert sd["conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer1.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["layer3.0.conv2.weight"].shape == (256, 256, 1, 1)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    for i in (1, 2, 3, 4):
        assert f"layer{i}.0.downsample.0.weight" in sd and f"layer{i}.0.downsample.1.running_var" in sd
    assert "layer1.1.downsample.0.weight" not in sd
    assert not any("input_filter" in k for k in sd)


def test_tiny_parameter_count_and_official_names():
    model = TinyLaDeDa()
    assert n_params(model) == 1_297
    sd = model.state_dict()
    assert len(sd) == 21
    assert set(sd) >= {"conv1.weight", "conv2.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                       "layer1.0.bn1.weight", "layer1.0.conv2.weight", "layer1.0.bn2.bias", "fc.weight", "fc.bias"}
    assert sd["layer1.0.conv2.weight"].shape == (8, 8, 3, 3) and sd["fc.weight"].shape == (1, 8)


def test_variants_differ_only_in_conv2_kernels():
    names = {cls: {k: v.shape for k, v in cls(width=8).state_dict().items()} for cls in (LaDeDa5, LaDeDa9, LaDeDa17, LaDeDa33)}
    assert names[LaDeDa5].keys() == names[LaDeDa33].keys()
    k3 = {cls: [k for k, s in d.items() if len(s) == 4 and s[-1] == 3] for cls, d in names.items()}
    assert len(k3[LaDeDa5]) == 2 and len(k3[LaDeDa9]) == 3 and len(k3[LaDeDa17]) == 4 and len(k3[LaDeDa33]) == 5


@pytest.mark.parametrize("size,teacher_hw,tiny_hw", [(224, 27, 110), (256, 31, 126), (64, 7, 30)])
def test_map_shapes(size, teacher_hw, tiny_hw):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert LaDeDa9(width=8).eval().patch_map(x).shape == (1, 1, teacher_hw, teacher_hw)
        assert TinyLaDeDa().eval().patch_map(x).shape == (1, 1, tiny_hw, tiny_hw)


def test_image_logit_is_mean_of_patch_logits():
    torch.manual_seed(0)
    for model in (randomise_bn(LaDeDa9(width=8)), randomise_bn(TinyLaDeDa())):
        x = torch.randn(3, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(model(x), model.patch_map(x).mean(dim=(1, 2, 3)), atol=1e-6)
            assert model(x).shape == (3,)


def receptive_window(model, size, cell):
    """Rows/cols of the input with a non-zero gradient for one output cell (double precision)."""
    model = randomise_bn(model).double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    model.patch_map(x)[0, 0, cell[0], cell[1]].backward()
    nz = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = nz.any(dim=1).nonzero().flatten(), nz.any(dim=0).nonzero().flatten()
    return rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1


@pytest.mark.parametrize("cell", [(0, 0), (2, 3), (6, 6)])
def test_ladeda9_receptive_field_is_9x9_with_stride_8(cell):
    torch.manual_seed(1)
    r0, r1, c0, c1 = receptive_window(LaDeDa9(preprocess="raw", width=4), 64, cell)
    assert (r0, r1, c0, c1) == (8 * cell[0], 8 * cell[0] + 9, 8 * cell[1], 8 * cell[1] + 9)


def test_tiny_receptive_field_is_7x7_with_gradient_filter_stride_2():
    torch.manual_seed(2)
    r0, r1, c0, c1 = receptive_window(TinyLaDeDa("right_diag"), 32, (5, 4))
    # 5x5 trunk window at origin 2*i, widened by one pixel each side by the 3x3 filter.
    assert (r0, r1, c0, c1) == (9, 16, 7, 14)


def test_dense_patch_map_equals_scoring_each_9x9_patch_alone():
    torch.manual_seed(3)
    model = randomise_bn(LaDeDa9(preprocess="raw", width=8))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = model.patch_map(x)
        patches = F.unfold(x, kernel_size=9, stride=8)  # (B, 3*81, L)
        b, _, n = patches.shape
        patches = patches.transpose(1, 2).reshape(b * n, 3, 9, 9)
        alone = model.patch_map(patches).reshape(b, 1, 7, 7)
    assert torch.allclose(dense, alone, atol=1e-5)


def test_dense_patch_map_equals_patches_with_npr_on_even_origins():
    torch.manual_seed(4)
    model = randomise_bn(LaDeDa9(preprocess="NPR", width=8))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense = model.patch_map(x)
        # NPR is local to 2x2 blocks: filter first, then the trunk sees each 9x9 patch of the filtered image.
        filtered = npr(x)
        trunk = LaDeDa9(preprocess="raw", width=8)
        trunk.load_state_dict(model.state_dict())
        trunk.eval()
        patches = F.unfold(filtered, 9, stride=8).transpose(1, 2).reshape(-1, 3, 9, 9)
        alone = trunk.patch_map(patches).reshape(1, 1, 7, 7)
    assert torch.allclose(dense, alone, atol=1e-5)


def test_npr_zeroes_a_quarter_and_crops_odd_sizes():
    x = torch.randn(2, 3, 8, 10)
    out = npr(x)
    assert out.shape == x.shape
    assert (out == 0).float().mean().item() == pytest.approx(0.25)
    assert torch.equal(out[..., ::2, ::2], torch.zeros_like(out[..., ::2, ::2]))
    assert torch.equal(out[..., 1, 1], x[..., 1, 1] - x[..., 0, 0])
    odd = npr(torch.randn(1, 3, 9, 11))
    assert odd.shape == (1, 3, 8, 10)
    assert torch.allclose(npr(x, 2 / 3), out * 2 / 3)


def test_gradient_filters_are_depthwise_cross_correlation():
    x = torch.zeros(1, 3, 5, 5)
    x[0, 1, 2, 3] = 1.0  # impulse in the green channel
    out = InputFilter("x_grad")(x)
    # Cross-correlation with [[-1,0,1],[-2,0,2],[-1,0,1]]: output left of the impulse sees +2.
    assert out[0, 1, 2, 2] == 2 and out[0, 1, 2, 4] == -2 and out[0, 1, 1, 2] == 1
    assert out[0, 0].abs().sum() == 0 and out[0, 2].abs().sum() == 0
    assert InputFilter("raw")(x) is x
    with pytest.raises(ValueError, match="unknown input filter"):
        InputFilter("sobel")


def test_build_model_by_name():
    assert isinstance(build_model("LaDeDa9", "NPR", 1.0, 16), LaDeDa9)
    assert build_model("LaDeDa9", width=16).width == 16
    assert build_model("TinyLaDeDa").preprocess == "right_diag"
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("ResNet50")
