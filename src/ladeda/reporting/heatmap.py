"""Patch heatmaps: each patch's fake probability painted on the pixels it covers, over the image.

A heatmap PNG has exactly the size of the input image. Geometry: patch-map cell (i, j) covers the
input window [offset + S*i, offset + S*i + R) in each axis (LaDeDa9: S = 8, R = 9, offset 0, i.e.
pixels [8i, 8i+9); Tiny-LaDeDa with a 3x3 filter: S = 2, R = 7, offset -1; see
`ladeda.models.geometry.PatchGeometry`). Each cell's value is placed at its window's centre and values are
interpolated bilinearly between neighbouring centres (constant beyond the outermost centres up to
the window edges), so the map lines up with the pixels the model actually looked at. Pixels that no
window covers (the row/column NPR drops from an odd side, the few border pixels a LaDeDa stride-8
grid does not reach) are shown darkened without colour. With `--resize` the map is computed at the
resized size and mapped back onto the original pixels proportionally.

Colours: matplotlib's `coolwarm` on a fixed 0..1 scale of per-patch fake probability
(sigmoid of the patch logit; blue = real, red = fake), blended at 55% over the image, so colours
mean the same in every heatmap. A colour-scale strip (1 at the top, 0 at the bottom, labelled when the
image is large enough) is drawn inside the right edge of the image.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ladeda.models.geometry import PatchGeometry
from ladeda.core.files import atomic_path

COLORMAP = "coolwarm"
ALPHA = 0.55
UNCOVERED_DIM = 0.4


def _axis(cells: int, out_len: int, scored_len: int, geometry: PatchGeometry):
    """Per output pixel along one axis: the two neighbouring cells, the blend weight and 'covered'."""
    pos = (np.arange(out_len) + 0.5) * (scored_len / out_len) - 0.5  # pixel centres in scored coordinates
    lo = max(0, geometry.offset)
    hi = min(scored_len, geometry.offset + geometry.stride * (cells - 1) + geometry.size)
    covered = (pos >= lo - 0.5) & (pos < hi - 0.5)
    t = np.clip((pos - geometry.offset - (geometry.size - 1) / 2) / geometry.stride, 0, cells - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, cells - 1)
    return i0, i1, (t - i0).astype(np.float32), covered


def probability_field(probs: np.ndarray, geometry: PatchGeometry, scored_size: tuple[int, int],
                      out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel probability (out_h, out_w) and the mask of covered pixels, from a (h, w) patch map.

    `scored_size` is the (height, width) the model saw, `out_size` the image's own size (equal unless
    the image was resized for scoring).
    """
    probs = np.asarray(probs, dtype=np.float32)
    r0, r1, rf, rcov = _axis(probs.shape[0], out_size[0], scored_size[0], geometry)
    c0, c1, cf, ccov = _axis(probs.shape[1], out_size[1], scored_size[1], geometry)
    rows = probs[r0] * (1 - rf)[:, None] + probs[r1] * rf[:, None]
    field = rows[:, c0] * (1 - cf)[None, :] + rows[:, c1] * cf[None, :]
    return field, rcov[:, None] & ccov[None, :]


def render_heatmap(image: Image.Image, probs: np.ndarray, geometry: PatchGeometry,
                   scored_size: tuple[int, int] | None = None) -> Image.Image:
    """The RGB overlay (same size as `image`) of a patch probability map, with a colour-scale strip."""
    from matplotlib import colormaps  # imported only when heatmaps are asked for

    cmap = colormaps[COLORMAP]
    w, h = image.size
    field, covered = probability_field(probs, geometry, scored_size or (h, w), (h, w))
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    colour = cmap(np.clip(field, 0, 1))[..., :3].astype(np.float32)
    out = np.where(covered[..., None], (1 - ALPHA) * base + ALPHA * colour, UNCOVERED_DIM * base)
    strip = max(2, min(24, w // 16))
    if w > strip + 1:
        scale = cmap(np.linspace(1.0, 0.0, h))[:, :3].astype(np.float32)
        out[:, w - strip:] = scale[:, None, :]
        out[:, w - strip - 1] = 0.0  # a dark line between image and scale
    result = Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if h >= 64 and w >= 96:
        _label_scale(result, strip)
    return result


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """Pillow's built-in font at `size` points, cached (loaded once per size, not once per heatmap)."""
    return ImageFont.load_default(size=size)


def _label_scale(img: Image.Image, strip: int) -> None:
    """Write 1 / 0.5 / 0 (fake probability) beside the colour strip, on dark boxes for contrast."""
    draw = ImageDraw.Draw(img)
    font = _font(max(10, min(16, img.height // 16)))
    w, h = img.size
    for text, frac in (("1", 0.0), ("0.5", 0.5), ("0", 1.0)):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        x = w - strip - 3 - tw
        y = int(min(max(frac * h - th / 2, 1), h - th - 2))
        draw.rectangle((x - 2, y - 1, x + tw + 1, y + th + 1), fill=(0, 0, 0))
        draw.text((x - left, y - top), text, fill=(255, 255, 255), font=font)


def heatmap_path(out_dir: str | os.PathLike, file: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Where the heatmap of `file` goes: its path relative to `root` mirrored under `out_dir`, `.png` appended.

    `root/a/cat.jpg` -> `out_dir/a/cat.jpg.png`: unique for distinct inputs, even with equal base names.
    """
    file, root = Path(os.path.abspath(file)), Path(os.path.abspath(root))
    try:
        rel = file.relative_to(root)
    except ValueError:
        rel = Path(file.name)
    return Path(out_dir) / rel.parent / (rel.name + ".png")


def save_heatmap(path: str | os.PathLike, image: Image.Image, probs: np.ndarray, geometry: PatchGeometry,
                 scored_size: tuple[int, int] | None = None) -> Path:
    """Render and write one heatmap PNG atomically; returns its path."""
    rendered = render_heatmap(image, probs, geometry, scored_size)
    with atomic_path(path) as tmp:
        rendered.save(tmp, format="PNG", compress_level=1)  # fast; heatmaps are for looking at
    return Path(path)
