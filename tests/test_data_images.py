"""Image reading and transforms: odd file modes, broken files, small images, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda.data.images import is_image, load_rgb
from ladeda.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from ladeda.core.errors import LadedaError


def _noise(h=40, w=48, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def test_is_image_case_insensitive():
    assert is_image("a/B.PNG") and is_image("x.JpEg") and is_image("y.tiff") and is_image("z.webp")
    assert not is_image("notes.txt") and not is_image("png") and not is_image("a.gif")


def test_rgb_png_roundtrip(tmp_path):
    arr = _noise()
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), arr)


def test_16bit_png_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    out = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert out.shape == (3, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # v / 257, not min(v, 255)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_rgba_png_drops_alpha_keeps_colour(tmp_path):
    arr = _noise(c=4)
    arr[..., 3] = 0  # fully transparent: compositing on black would give zeros
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "alpha.png")
    out = np.asarray(load_rgb(tmp_path / "alpha.png"))
    assert np.array_equal(out, arr[..., :3])


def test_greyscale_jpeg_and_palette_and_cmyk(tmp_path):
    Image.fromarray(_noise(c=0)).save(tmp_path / "grey.jpg", quality=95)
    out = np.asarray(load_rgb(tmp_path / "grey.jpg"))
    assert out.shape == (40, 48, 3) and (out[..., 0] == out[..., 2]).all()
    pal = Image.fromarray(_noise()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert load_rgb(tmp_path / "pal.png").mode == "RGB"
    Image.new("CMYK", (8, 6), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    cmyk = np.asarray(load_rgb(tmp_path / "cmyk.jpg"))
    assert cmyk.shape == (6, 8, 3) and cmyk[..., 1].mean() < 40 and cmyk[..., 0].mean() > 200  # magenta


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing"])
def test_unreadable_file_names_the_path(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.png"
    if kind != "missing":
        Image.fromarray(_noise(64, 64)).save(tmp_path / "ok.png")
        data = (tmp_path / "ok.png").read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not an image" * 10, "empty": b""}[kind])
    with pytest.raises(LadedaError, match=f"bad_{kind}.png"):
        load_rgb(path)


def test_train_transform_deterministic_and_normalised():
    img = Image.fromarray(_noise(80, 90))
    t = build_transform("train", 64, blur_prob=0.5, jpeg_prob=0.5)
    torch.manual_seed(3)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(3)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(a[0], x) for x in a[1:])  # random crops differ between calls
    assert a[0].shape == (3, 64, 64) and a[0].dtype == torch.float32 and type(a[0]) is torch.Tensor
    black = build_transform("val", 8)(Image.new("RGB", (8, 8)))
    assert torch.allclose(black[:, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))


def test_val_centre_crop_and_test_even_full_image():
    arr = _noise(41, 51)
    img = Image.fromarray(arr)
    val = build_transform("val", 32)(img)
    assert val.shape == (3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    back = ((val * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    top, left = round((41 - 32) / 2), round((51 - 32) / 2)  # torchvision rounds half to even
    assert np.abs(back.astype(int) - arr[top:top + 32, left:left + 32].astype(int)).max() <= 1
    test = build_transform("test", 32)
    out = test(img)
    assert out.shape == (3, 40, 50) and test.output_size(51, 41) == (40, 50)  # origin kept, odd row/col dropped
    assert build_transform("test", 32, even=False)(img).shape == (3, 41, 51)
    resized = build_transform("test", 32, load_size=48)
    assert resized(img).shape == (3, 48, 48) and resized.fixed_size == (48, 48)


@pytest.mark.parametrize("mode", ["train", "val"])
def test_image_smaller_than_crop_is_zero_padded(mode):
    img = Image.new("RGB", (20, 12), (255, 255, 255))
    out = build_transform(mode, 32)(img)
    assert out.shape == (3, 32, 32)
    pixels = (out * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).clamp(0, 1)
    white = (pixels > 0.99).all(dim=0).sum().item()
    black = (pixels < 0.01).all(dim=0).sum().item()
    assert white == 20 * 12 and black == 32 * 32 - 20 * 12
