"""Patch maps of batches and images of any size in bounded pieces: micro-batches, or exact tiles of one image.

Every LaDeDa / Tiny-LaDeDa layer after the parameter-free input filter is an unpadded conv with residuals
cropped at the bottom-right, so patch-map cell (i, j) depends only on the filtered-image window
[S*i, S*i+R) x [S*j, S*j+R) (`PatchGeometry.trunk_stride` / `trunk_size`). Running the trunk on windows that
cover a block of cells therefore gives exactly those cells, and a full-size test image that would not fit
in memory is scored tile by tile with the same result (in eval mode: BatchNorm uses its running statistics).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ladeda.models.geometry import PatchGeometry, patch_geometry

# Pixels per piece when the evaluation stages score a batch (plain models): CPU batches of the default
# (128 images of 64x64 = 2^19 pixels) run whole; larger work is split so memory stays bounded (LaDeDa9
# width 64 holds ~1 KB of activations per input pixel and layer at fp32). GPUs take larger pieces.
SCORING_PIXELS = {"cpu": 1 << 20, "cuda": 1 << 22}


def scoring_pixels(device: torch.device) -> int:
    """The piece size (pixels) for scoring on `device` (see SCORING_PIXELS)."""
    return SCORING_PIXELS.get(device.type, SCORING_PIXELS["cuda"])


def patch_map_in_pieces(model: nn.Module, x: torch.Tensor, budget: int,
                        geometry: PatchGeometry | None = None) -> torch.Tensor:
    """(B, 1, h, w) patch logits of `model` (with `input_filter` and `trunk`) on a (B, 3, H, W) batch, computed
    in pieces of about `budget` pixels: the whole batch, micro-batches of whole images, or, for an image larger
    than `budget`, exact tiles of its patch grid (module doc)."""
    b, _, h, w = x.shape
    if h * w <= budget:
        per = max(1, budget // (h * w))
        if b <= per:
            return model.trunk(model.input_filter(x))
        return torch.cat([model.trunk(model.input_filter(part)) for part in x.split(per)])
    geometry = geometry or patch_geometry(model)
    return torch.cat([tiled_trunk(model.trunk, model.input_filter(x[i:i + 1]), geometry, budget) for i in range(b)])


def tiled_trunk(trunk, z: torch.Tensor, geometry: PatchGeometry, budget: int) -> torch.Tensor:
    """Patch map of a filtered batch `z` computed by `trunk` tile by tile on the patch grid, tiles of about
    `budget` pixels and nearly equal size."""
    s, r = geometry.trunk_stride, geometry.trunk_size
    nh, nw = (z.shape[-2] - r) // s + 1, (z.shape[-1] - r) // s + 1
    side = max(1, (math.isqrt(budget) - r) // s + 1)  # cells per tile side so a tile has ~budget pixels
    th, tw = _even_split(nh, side), _even_split(nw, side)
    out = None
    for i0 in range(0, nh, th):
        i1 = min(nh, i0 + th)
        for j0 in range(0, nw, tw):
            j1 = min(nw, j0 + tw)
            cells = trunk(z[..., s * i0: s * (i1 - 1) + r, s * j0: s * (j1 - 1) + r])
            if out is None:  # the trunk's dtype (autocast may lower it)
                out = cells.new_empty((z.shape[0], 1, nh, nw))
            out[..., i0:i1, j0:j1] = cells
    return out


def _even_split(n: int, most: int) -> int:
    """Tile length that splits n cells into ceil(n / most) nearly equal tiles."""
    return math.ceil(n / math.ceil(n / most))
