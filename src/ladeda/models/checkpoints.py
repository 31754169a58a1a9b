"""Save self-describing checkpoints and load ours or the official plain state dicts into the right model."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ladeda
from ladeda.core.errors import LadedaError
from ladeda.core.files import save_torch
from ladeda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ladeda.models import ARCHS, arch_name, build_model

FORMAT = "ladeda-checkpoint"


def provenance() -> dict[str, str]:
    """Which software wrote a checkpoint: library versions.

    Nothing that changes without the inputs changing (no wall-clock time, no git HEAD: committing
    results would change the bytes): the same inputs give the same checkpoint bytes, so a rerun changes
    nothing DVC tracks. The exact code is in dvc.lock, which records the hash of every source folder.
    """
    return {"ladeda": ladeda.__version__, "torch": str(torch.__version__), "python": platform.python_version()}


def model_meta(model: nn.Module) -> dict[str, Any]:
    """What it takes to rebuild `model`: arch, width, input filter and its scale."""
    return {
        "arch": arch_name(model),
        "width": int(getattr(model, "width", 0)),
        "preprocess": model.preprocess,
        "npr_scale": float(model.npr_scale),
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, image_size: int | None = None,
                    params: dict | None = None, metrics: dict | None = None, **extra: Any) -> None:
    """Write a self-describing checkpoint atomically (temp file + rename).

    It holds the model description, the state dict (on CPU), the image size and normalisation the
    model expects, the params and metrics that produced it, provenance, and any `extra` fields.
    """
    ckpt = {
        "format": FORMAT,
        **model_meta(model),
        "image_size": image_size,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # default layout
        "params": params or {},
        "metrics": metrics or {},
        "provenance": provenance(),
        **extra,
    }
    save_torch(ckpt, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely (`weights_only=True`, on the CPU); a bad file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise LadedaError(f"checkpoint {path} not found: train it with `dvc repro` or put the file there")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LadedaError(f"checkpoint {path} cannot be read as a PyTorch file ({first})") from None
    if not isinstance(obj, dict):
        raise LadedaError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict or a ladeda checkpoint")
    return obj


def is_ours(ckpt: dict) -> bool:
    """True for a checkpoint written by save_checkpoint."""
    return ckpt.get("format") == FORMAT


def plain_state_dict(ckpt: dict) -> dict[str, torch.Tensor]:
    """The state dict of an official file: plain, wrapped in `state_dict`/`model`, maybe `module.`-prefixed."""
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_model(path: str | os.PathLike, arch: str | None = None, preprocess: str | None = None,
               npr_scale: float | None = None, width: int | None = None) -> nn.Module:
    """Load a model in eval mode from our checkpoint or an official plain state dict.

    Ours describe themselves; any of `arch`/`preprocess`/`npr_scale`/`width` given must agree with
    the file. For an official file say what it is (`arch`, `preprocess`, and `npr_scale` 2/3 for
    ForenSynth LaDeDa); the width is read from the weights. Weights with NaN or inf are refused.
    """
    ckpt = read_checkpoint(path)
    if is_ours(ckpt):
        asked = {"arch": arch, "preprocess": preprocess, "npr_scale": npr_scale, "width": width}
        for key, want in asked.items():
            have = ckpt.get(key)
            if key == "width" and ckpt.get("arch") == "TinyLaDeDa":
                continue
            if want is not None and have != want:
                raise LadedaError(f"checkpoint {path} is {_describe(ckpt)}, but {key}={want!r} was asked; "
                                  f"change the params or use a matching checkpoint")
        model = build_model(ckpt["arch"], ckpt["preprocess"], ckpt["npr_scale"], ckpt.get("width") or None)
        state = ckpt["state_dict"]
    else:
        if arch is None:
            raise LadedaError(f"checkpoint {path} is a plain state dict; say what it is, e.g. "
                              f"load_model(path, arch='LaDeDa9', preprocess='NPR') "
                              f"(`--arch/--preprocess` on the command line)")
        if arch not in ARCHS:
            raise LadedaError(f"unknown arch {arch!r} for {path}; choose one of {', '.join(ARCHS)}")
        state = plain_state_dict(ckpt)
        found = _width_of(state)
        if arch != "TinyLaDeDa" and width is not None and found is not None and found != width:
            raise LadedaError(f"checkpoint {path} is {arch} width {found}, params ask width {width}; "
                              f"set the width to {found}")
        model = build_model(arch, preprocess, 1.0 if npr_scale is None else npr_scale,
                            found if arch != "TinyLaDeDa" else None)
    _load_state(model, state, path)
    return model.eval()


def _width_of(state: dict[str, torch.Tensor]) -> int | None:
    w = state.get("conv1.weight")
    return int(w.shape[0]) if w is not None and w.dim() == 4 else None


def _describe(ckpt: dict) -> str:
    width = "" if ckpt.get("arch") == "TinyLaDeDa" else f" width {ckpt.get('width')}"
    return f"{ckpt.get('arch')}{width} ({ckpt.get('preprocess')}, npr_scale {ckpt.get('npr_scale'):g})"


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """Strict load that names missing/unexpected/mis-shaped keys and the first NaN/inf tensor, never a traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise LadedaError(f"checkpoint {path} does not fit {arch_name(model)}: {', '.join(parts)}; "
                          f"check --arch/width (LaDeDa5/9/17/33 differ in conv2 shapes)")
    bad = next((k for k in own if state[k].is_floating_point() and not torch.isfinite(state[k]).all()), None)
    if bad is not None:
        raise LadedaError(f"checkpoint {path} has weights that are not finite (NaN or inf), first in {bad}; "
                          f"its scores would be meaningless: use another checkpoint (training may have diverged)")
    model.load_state_dict(state, strict=True)


def checkpoint_on_best(path: str | Path, image_size: int, params: dict, **extra):
    """An `on_best` callback for `fit` that writes a self-describing checkpoint with the epoch's metrics."""
    def on_best(model: nn.Module, epoch: int, metrics: dict) -> None:
        save_checkpoint(path, model, image_size=image_size, params=params, metrics=metrics, epoch=epoch, **extra)
    return on_best
