"""Patch geometry: which input pixels each cell of a model's patch map sees (tiling, heatmaps, export)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ladeda.models import build_model
from ladeda.models.ladeda import LaDeDa
from ladeda.models.tiny import TinyLaDeDa


@dataclass(frozen=True)
class PatchGeometry:
    """Where patch-map cell (i, j) sits in the input image, in input pixels.

    Cell i covers rows [offset + stride*i, offset + stride*i + size) (same for columns). The offset is
    -1 for the 3x3 gradient filters (their zero padding reaches one pixel outside the image), 0 for
    NPR and raw. `trunk_stride` / `trunk_size` are the same numbers on the filtered image, which is
    what tiling needs; `min_size` is the smallest input side the model accepts; `crop_even` says the
    filter (NPR) drops the last row/column of an odd side.
    """

    stride: int
    size: int
    offset: int
    trunk_stride: int
    trunk_size: int
    min_size: int
    crop_even: bool = False

    def cells(self, length: int) -> int:
        """How many patch-map cells an input side of `length` pixels gives (0 when it is too small)."""
        if length < self.min_size:
            return 0
        filtered = length - length % 2 if self.crop_even else length
        return (filtered - self.trunk_size) // self.trunk_stride + 1


def patch_geometry(model: nn.Module) -> PatchGeometry:
    """The patch geometry of a LaDeDa, Tiny-LaDeDa or FastModel (see PatchGeometry)."""
    if getattr(model, "geometry", None) is not None:  # a fast-path copy carries its model's geometry
        return model.geometry
    if isinstance(model, LaDeDa):
        stride, size = 8, int(model.patch)  # stem 3x3 + 3x3 convs at strides 1/2/4/8: 5, 9, 17, 33
    elif isinstance(model, TinyLaDeDa):
        stride, size = 2, 5  # 3x3 conv, then a stride-2 3x3 conv
    else:
        raise TypeError(f"no patch geometry for {type(model).__name__}")
    name = model.input_filter.name
    if name in ("NPR", "raw"):
        # NPR: window starts are even (stride is even) and its last pixel is even, i.e. a 2x2 block's
        # top-left, so no pixel outside the window enters. NPR crops odd sides, so the minimum is even.
        min_size = size + size % 2 if name == "NPR" else size
        return PatchGeometry(stride, size, 0, stride, size, min_size, crop_even=name == "NPR")
    return PatchGeometry(stride, size + 2, -1, stride, size, size)  # 3x3 filter with zero padding


def min_image_side(arch: str, preprocess: str) -> int:
    """The smallest image side `arch` with input filter `preprocess` scores at full size in the pipeline.

    The data loaders' test transform drops the last row / column of an odd side (`EvenCrop`), so it is the
    model's `min_size` rounded up to even: LaDeDa9 needs 10x10 (a 9x9 image becomes 8x8), TinyLaDeDa 6x6.
    """
    size = patch_geometry(build_model(arch, preprocess, width=1)).min_size
    return size + size % 2
