"""Write a model as a TorchScript or ONNX file for deployment without this package (`ladeda export`).

The command line is in `ladeda.inference.cli`; this module is the library (`export_model`, ...).

The exported graph is the fast path (`ladeda.models.fastpath`: folded stem and BatchNorms, 1x1-conv head)
with the input filter inside, so it takes what the models take and returns both outputs:

- input `image`: float32 (B, 3, H, W), RGB scaled to 0..1 then ImageNet-normalised
  (mean 0.485 0.456 0.406, std 0.229 0.224 0.225); batch, height and width are dynamic (NPR models
  crop an odd side by one pixel themselves; the smallest side is in the metadata);
- output `logit`: (B,) image logits (fake probability = sigmoid(logit));
- output `patch_map`: (B, 1, h, w) patch logits; cell (i, j) covers input pixels
  [offset + stride*i, offset + stride*i + size) (metadata `patch_stride`, `patch_size`, `patch_offset`).

Metadata (arch, width, input filter, npr_scale, normalisation, geometry) is stored as ONNX
`metadata_props` / a TorchScript extra file `ladeda.json`. TorchScript is produced by tracing
(`torch.jit.trace`; torch 2.14 marks TorchScript deprecated but still supports it); the recorded
shape arithmetic keeps height and width dynamic. ONNX uses torch's TorchScript-based exporter
(`dynamo=False`, opset 17), which needs only the `onnx` package, not `onnxscript`; checking an ONNX
file with onnxruntime needs the optional extra `pip install -e .[onnx]`.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ladeda.core.errors import LadedaError
from ladeda.core.files import atomic_path, check_output
from ladeda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ladeda.models.fastpath import FastModel, optimize_for_inference
from ladeda.models.filters import KERNELS

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logit", "patch_map"]


class FixedFilter(nn.Module):
    """A 3x3 gradient filter as a depthwise conv with a constant (3, 1, 3, 3) kernel.

    The model's InputFilter expands its kernel to the input's channel count at run time, which ONNX
    cannot export as a conv weight; RGB has 3 channels, so a fixed kernel is the same filter.
    """

    def __init__(self, name: str):
        super().__init__()
        kernel = torch.tensor(KERNELS[name], dtype=torch.float32).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the filter to each RGB channel separately (zero padding, same size out)."""
        return F.conv2d(x, self.kernel, padding=1, groups=3)


class ExportGraph(nn.Module):
    """What is exported: normalised image batch -> (image logits (B,), patch logits (B, 1, h, w))."""

    def __init__(self, model: nn.Module):
        super().__init__()
        fast = copy.deepcopy(optimize_for_inference(model)).cpu().float()  # the caller's model is untouched
        self.fast: FastModel = fast
        self.input_filter = FixedFilter(fast.preprocess) if fast.preprocess in KERNELS else fast.input_filter

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image logits and patch logits of a normalised batch: the exported model's two outputs."""
        patch = self.fast.trunk(self.input_filter(x))
        return patch.mean(dim=(1, 2, 3)), patch


def export_metadata(model: nn.Module) -> dict[str, str]:
    """String metadata describing the exported model's input, outputs and geometry."""
    fast = model.fast if isinstance(model, ExportGraph) else optimize_for_inference(model)
    g = fast.geometry
    return {
        "producer": "ladeda",
        "arch": fast.arch,
        "width": str(fast.width),
        "preprocess": fast.preprocess,
        "npr_scale": f"{fast.npr_scale:g}",
        "input": "image: float32 (B, 3, H, W) RGB in 0..1, normalised with mean/std below",
        "normalization": json.dumps({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}),
        "outputs": "logit: (B,) image logits; patch_map: (B, 1, h, w) patch logits",
        "patch_stride": str(g.stride),
        "patch_size": str(g.size),
        "patch_offset": str(g.offset),
        "min_size": str(g.min_size),
    }


def _example(graph: ExportGraph) -> torch.Tensor:
    """A random input big enough for the model, for tracing (sizes stay dynamic)."""
    side = max(64, graph.fast.geometry.min_size)
    return torch.randn(1, 3, side, side)


def export_torchscript(model: nn.Module, out: str | os.PathLike) -> Path:
    """Trace the export graph and save it (atomically) with `ladeda.json` metadata as an extra file."""
    graph = ExportGraph(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated.*")
        traced = torch.jit.trace(graph, (_example(graph),), check_trace=False)
        with atomic_path(out) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={"ladeda.json": json.dumps(export_metadata(graph))})
    return Path(out)


def export_onnx(model: nn.Module, out: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Export the graph to ONNX (dynamic batch, height, width) with metadata, written atomically."""
    try:
        import onnx
    except ImportError:
        raise LadedaError("ONNX export needs the `onnx` package: pip install -e .[onnx]") from None
    graph = ExportGraph(model).eval()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logit": {0: "batch"},
            "patch_map": {0: "batch", 2: "rows", 3: "cols"}}
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
        torch.onnx.export(graph, (_example(graph),), str(tmp), dynamo=False, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, dynamic_axes=axes, opset_version=opset)
        proto = onnx.load(str(tmp))
        for key, value in export_metadata(graph).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return Path(out)


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str) -> Path:
    """Export `model` as `fmt` (`onnx` or `torchscript`) to `out` (checked first: `--out` in errors)."""
    check_output(out, "--out")
    if fmt == "onnx":
        return export_onnx(model, out)
    if fmt == "torchscript":
        return export_torchscript(model, out)
    raise LadedaError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load an exported TorchScript file and its metadata (for checks and users without ladeda's models)."""
    extra = {"ladeda.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated.*")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["ladeda.json"] or "{}")
