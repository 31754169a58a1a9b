"""A fast inference path for LaDeDa / Tiny-LaDeDa: the same patch map with fewer FLOPs and cache-sized work.

`optimize_for_inference(model)` returns an eval-only copy (`FastModel`) with the model's `patch_map` /
`forward` API whose outputs equal the plain model's within float tolerance (tests check it with
non-trivial BatchNorm statistics). What it changes, and why (measured on 2 CPU cores, torch 2.14.1):

1. The linear stem is one conv. `conv1` (1x1, 3->C) and `conv2` (3x3, C->C, no padding) have no
   non-linearity between them and `conv1` has rank 3, so together they are a single 3x3 conv 3->C;
   `bn1` folds into it. This removes 4.8 of LaDeDa9's 41.9 GFLOPs per 256x256 image and 46 of
   Tiny-LaDeDa's 108 MFLOPs (the full-resolution C->C 3x3 conv was the costliest layer of both).
2. Every other BatchNorm is folded into the conv before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`),
   so inference does one pass over each activation instead of two.
3. The per-location linear head becomes a 1x1 conv; all weights and inputs are channels-last
   (NHWC), which oneDNN runs 3-5x faster than NCHW for these thin (8-channel) layers.
4. Cache-sized work units (CPU only). The thin Tiny-LaDeDa activations of a whole 32-image batch
   (66 MB per layer at 256x256) do not fit in cache and the layers become memory-bound: one 3x3
   8->8 conv ran at 580 img/s on a 32-image batch but 1,250 img/s on 1-4 images. So a batch is run
   in micro-batches of about `work_pixels` pixels, and an image larger than that is run in tiles of
   its patch grid. Tiles are exact, not approximate: after the parameter-free input filter (applied to
   the whole image first) every layer is an unpadded conv and residuals are cropped at the
   bottom-right, so patch-map cell (i, j) depends only on the trunk input window
   [S*i, S*i+R) x [S*j, S*j+R) (S = 8 for LaDeDa, 2 for Tiny-LaDeDa; R = patch size, 5 for Tiny
   on the filtered image). Tiling also bounds the memory used by a very large image on any device.

The copy is for inference only: its module names differ from the official state dict (do not save it
as a checkpoint; export or keep the original model for that).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ladeda.models import LaDeDa, TinyLaDeDa

# Working-set target of one CPU work unit: about this many bytes per stem channel-pixel. 4 MiB of
# stem activations (131k pixels for Tiny-LaDeDa, 2 images of 256x256) was in the fast plateau measured
# for 1-4 images; 32 images were 2.5x slower.
CACHE_BYTES = 4 << 20
# On a GPU, only very large images are tiled (to bound memory); batches run whole.
GPU_WORK_PIXELS = 1 << 22


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
    if isinstance(model, FastModel):
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


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to the CPUs this process may use (or `num_threads`); returns it.

    `OMP_NUM_THREADS` wins when set. Inter-op threads are set to 1 (inference runs one op at a time;
    extra pools only compete for the same cores); torch allows that only before any parallel work,
    so it is skipped silently when too late.
    """
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            num_threads = int(env)
        else:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:  # not Linux
                num_threads = os.cpu_count() or 1
    num_threads = max(1, int(num_threads))
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return num_threads


class FastModel(nn.Module):
    """Inference-only copy of a LaDeDa / Tiny-LaDeDa: folded stem and BatchNorms, channels-last, cache-sized work.

    Same API as the models: `patch_map(x)` -> (B, 1, h, w) patch logits, `forward(x)` -> (B,) image
    logits, and the attributes `preprocess`, `npr_scale`, `width`, `input_filter`, plus `geometry`.
    """

    def __init__(self, model: nn.Module, cache_bytes: int = CACHE_BYTES):
        super().__init__()
        if not isinstance(model, (LaDeDa, TinyLaDeDa)):
            raise TypeError(f"optimize_for_inference needs a LaDeDa or TinyLaDeDa model, got {type(model).__name__}")
        model = copy.deepcopy(model).eval()
        self.arch = type(model).__name__
        self.preprocess, self.npr_scale, self.width = model.preprocess, model.npr_scale, model.width
        self.geometry = patch_geometry(model)
        self.input_filter = model.input_filter
        self.stem = fold_stem(model.conv1, model.conv2, model.bn1)
        self.relu = nn.ReLU(inplace=True)
        layers = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
        self.blocks = nn.Sequential(*(fold_batchnorms(layer) for layer in layers))
        self.head = linear_as_conv(model.fc)
        self.work_pixels = max(1, cache_bytes // (4 * self.stem.out_channels))
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        """Patch logits of an already filtered batch, in one piece (no micro-batching or tiling)."""
        return self.head(self.blocks(self.relu(self.stem(z))))

    def patch_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits of a normalised (B, 3, H, W) batch, run in cache-sized pieces."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        x = x.contiguous(memory_format=torch.channels_last)
        b, _, h, w = x.shape
        if min(h, w) < self.geometry.min_size:
            raise ValueError(f"{self.arch} ({self.preprocess}) needs images of at least "
                             f"{self.geometry.min_size}x{self.geometry.min_size} pixels, got {h}x{w}")
        budget = self.work_pixels if x.device.type == "cpu" else GPU_WORK_PIXELS
        if h * w <= budget:
            per = max(1, budget // (h * w))
            if b <= per:
                return self.trunk(self.input_filter(x))
            return torch.cat([self.trunk(self.input_filter(part)) for part in x.split(per)])
        return torch.cat([self._tiled(self.input_filter(x[i:i + 1]), budget) for i in range(b)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) image logits: the mean of the patch logits."""
        return self.patch_map(x).mean(dim=(1, 2, 3))

    def _tiled(self, z: torch.Tensor, budget: int) -> torch.Tensor:
        """Patch map of one filtered image computed tile by tile on the patch grid (exact, see module doc)."""
        s, r = self.geometry.trunk_stride, self.geometry.trunk_size
        nh, nw = (z.shape[-2] - r) // s + 1, (z.shape[-1] - r) // s + 1
        side = max(1, (math.isqrt(budget) - r) // s + 1)  # cells per tile side so a tile has ~budget pixels
        th, tw = _even_split(nh, side), _even_split(nw, side)
        out = z.new_empty((z.shape[0], 1, nh, nw))
        for i0 in range(0, nh, th):
            i1 = min(nh, i0 + th)
            for j0 in range(0, nw, tw):
                j1 = min(nw, j0 + tw)
                tile = z[..., s * i0: s * (i1 - 1) + r, s * j0: s * (j1 - 1) + r]
                out[..., i0:i1, j0:j1] = self.trunk(tile)
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, preprocess={self.preprocess}, work_pixels={self.work_pixels}"


def optimize_for_inference(model: nn.Module, cache_bytes: int = CACHE_BYTES) -> FastModel:
    """An eval-only FastModel copy of `model` (the original is untouched); a FastModel is returned as is."""
    if isinstance(model, FastModel):
        return model
    with torch.no_grad():
        return FastModel(model, cache_bytes)


def fold_stem(conv1: nn.Conv2d, conv2: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv equal to bn(conv2(conv1(x))) in eval mode, for a 1x1 `conv1` directly followed by `conv2`.

    W[o, c, u, v] = sum_m W2[o, m, u, v] * W1[m, c] (computed in float64), and conv1's bias, if any,
    passes through conv2 as a constant; then BatchNorm is folded with fuse_conv_bn_eval.
    """
    if conv1.kernel_size != (1, 1) or conv1.stride != (1, 1) or conv1.padding not in ((0, 0), "valid"):
        raise ValueError("fold_stem needs a 1x1, stride-1, unpadded first conv")
    if conv2.padding not in ((0, 0), "valid") or conv1.groups != 1 or conv2.groups != 1:
        raise ValueError("fold_stem needs an unpadded, ungrouped second conv")
    w1 = conv1.weight.detach().double()[:, :, 0, 0]  # (M, C)
    w2 = conv2.weight.detach().double()  # (O, M, kh, kw)
    bias = torch.zeros(w2.shape[0], dtype=torch.float64, device=w2.device)
    if conv2.bias is not None:
        bias = bias + conv2.bias.detach().double()
    if conv1.bias is not None:
        bias = bias + torch.einsum("omuv,m->o", w2, conv1.bias.detach().double())
    stem = nn.Conv2d(w1.shape[1], w2.shape[0], conv2.kernel_size, stride=conv2.stride, bias=True,
                     dilation=conv2.dilation).to(device=w2.device, dtype=conv2.weight.dtype)
    stem.weight.data.copy_(torch.einsum("omuv,mc->ocuv", w2, w1))
    stem.bias.data.copy_(bias)
    return fuse_conv_bn_eval(stem.eval(), bn.eval())


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """A copy of `module` with each BatchNorm2d folded into the conv before it and replaced by Identity.

    Pairs are `convK`/`bnK` attributes of one module (the residual blocks) and consecutive
    (Conv2d, BatchNorm2d) entries of a Sequential (the downsample branches).
    """
    module = copy.deepcopy(module).eval()
    _fold_in_place(module)
    left = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm {', '.join(left)}: no conv directly before it")
    return module


def _fold_in_place(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        children = list(module)
        for k in range(len(children) - 1):
            if isinstance(children[k], nn.Conv2d) and isinstance(children[k + 1], nn.BatchNorm2d):
                module[k] = fuse_conv_bn_eval(children[k], children[k + 1])
                module[k + 1] = nn.Identity()
    for name, child in list(module.named_children()):
        conv = getattr(module, "conv" + name[2:], None) if name.startswith("bn") else None
        if isinstance(child, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
            setattr(module, "conv" + name[2:], fuse_conv_bn_eval(conv, child))
            setattr(module, name, nn.Identity())
        else:
            _fold_in_place(child)


def linear_as_conv(fc: nn.Linear) -> nn.Conv2d:
    """The per-location linear head as an equivalent 1x1 conv (no permutes around it)."""
    conv = nn.Conv2d(fc.in_features, fc.out_features, 1, bias=fc.bias is not None).to(fc.weight)
    conv.weight.data.copy_(fc.weight.detach().view(fc.out_features, fc.in_features, 1, 1))
    if fc.bias is not None:
        conv.bias.data.copy_(fc.bias.detach())
    return conv


def _even_split(n: int, most: int) -> int:
    """Tile length that splits n cells into ceil(n / most) nearly equal tiles."""
    return math.ceil(n / math.ceil(n / most))
