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
   (NHWC), which oneDNN runs 3-5x faster than NCHW for these thin (8-channel) layers. Large convs
   run on oneDNN even where torch would choose its generic im2col path (`OneDNNConv2d`).
4. Cache-sized work units (CPU only). The thin Tiny-LaDeDa activations of a whole 32-image batch
   (66 MB per layer at 256x256) do not fit in cache and the layers become memory-bound: one 3x3
   8->8 conv ran at 580 img/s on a 32-image batch but 1,250 img/s on 1-4 images. So a batch is run
   in micro-batches of about `work_pixels` pixels (default 2^17, two 256x256 images; see
   WORK_PIXELS), and an image larger than that is run in exact tiles of its patch grid
   (`models.tiling`, which the evaluation stages use too). Tiling also bounds the memory a very
   large image needs, on any device (GPU pieces: `tiling.SCORING_PIXELS`).

The copy is for inference only: its module names differ from the official state dict (do not save it
as a checkpoint; export or keep the original model for that).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ladeda.models.folding import fold_batchnorms, fold_stem, linear_as_conv
from ladeda.models.geometry import patch_geometry
from ladeda.models.ladeda import LaDeDa
from ladeda.models.tiling import patch_map_in_pieces, scoring_pixels
from ladeda.models.tiny import TinyLaDeDa

# Pixels per CPU work unit (micro-batch or tile). Measured at 256x256 on one thread, img/s by work
# unit of 2^14 / 2^15 / 2^16 / 2^17 / 2^18 / 2^19 / 2^21 pixels: Tiny-LaDeDa 131 / 183 / 243 / 307 /
# 306 / 209 / 120; LaDeDa9 (width 64) at 2^15 / 2^16 / 2^17 / 2^18: 1.32 / 1.47 / 1.41 / 1.17.
WORK_PIXELS = 1 << 17
# Convs with fewer multiply-adds than this keep torch's own backend choice (oneDNN costs ~0.05 ms a call).
ONEDNN_MIN_MACS = 1 << 22
# The architectures with a fast path: anything else is scored as it is.
FAST_PATH_MODELS = (LaDeDa, TinyLaDeDa)


class FastModel(nn.Module):
    """Inference-only copy of a LaDeDa / Tiny-LaDeDa: folded stem and BatchNorms, channels-last, cache-sized work.

    Same API as the models: `patch_map(x)` -> (B, 1, h, w) patch logits, `forward(x)` -> (B,) image
    logits, and the attributes `preprocess`, `npr_scale`, `width`, `input_filter`, plus `geometry`.
    """

    def __init__(self, model: nn.Module, work_pixels: int = WORK_PIXELS):
        super().__init__()
        if not isinstance(model, FAST_PATH_MODELS):
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
        _use_onednn(self)
        self.work_pixels = max(1, int(work_pixels))
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

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
        budget = self.work_pixels if x.device.type == "cpu" else scoring_pixels(x.device)  # GPU: memory only
        return patch_map_in_pieces(self, x, budget, self.geometry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) image logits: the mean of the patch logits."""
        return self.patch_map(x).mean(dim=(1, 2, 3))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, preprocess={self.preprocess}, work_pixels={self.work_pixels}"


def optimize_for_inference(model: nn.Module, work_pixels: int = WORK_PIXELS) -> FastModel:
    """An eval-only FastModel copy of `model` (the original is untouched); a FastModel is returned as is.

    `work_pixels`: pixels per CPU work unit (micro-batch or tile), see WORK_PIXELS.
    """
    if isinstance(model, FastModel):
        return model
    with torch.no_grad():
        return FastModel(model, work_pixels)


class OneDNNConv2d(nn.Conv2d):
    """A Conv2d that runs on oneDNN for float32 CPU tensors when that is the faster choice.

    torch picks its generic im2col path for many small-batch convs on one thread (1x1 kernels,
    small inputs), which was 7x slower for Tiny-LaDeDa's 8->8 1x1 conv on 254x254 maps (4.1 vs
    0.6 ms for 2 images) and 10-40% slower for LaDeDa9's large 1x1 convs. oneDNN has a fixed cost
    of about 0.05 ms a call, though, so small convs (fewer than ONEDNN_MIN_MACS multiply-adds) and
    the one-channel head keep torch's choice. Tracing and ONNX export always see a
    plain conv, so exported graphs stay portable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or x.device.type != "cpu"
                or x.dtype != torch.float32 or self.out_channels == 1 or isinstance(self.padding, str)
                or self.padding_mode != "zeros" or not torch.backends.mkldnn.is_available()
                or self._macs(x) < ONEDNN_MIN_MACS):
            return super().forward(x)
        return torch.mkldnn_convolution(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                        list(self.dilation), self.groups)

    def _macs(self, x: torch.Tensor) -> int:
        """Approximate multiply-adds of this conv on `x` (output pixels x weights per output pixel)."""
        return (x.shape[0] * x.shape[-2] * x.shape[-1] // (self.stride[0] * self.stride[1])
                * self.weight.shape[0] * self.weight[0].numel())


def _use_onednn(module: nn.Module) -> None:
    """Turn every nn.Conv2d below `module` into a OneDNNConv2d with the same weights (in place)."""
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            child.__class__ = OneDNNConv2d  # same attributes and parameters, different forward
        else:
            _use_onednn(child)
