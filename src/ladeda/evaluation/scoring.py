"""Batched scoring: image logits (and optionally patch maps) of a model over a data loader.

LaDeDa and Tiny-LaDeDa are scored through their fast inference copies (`models.fastpath`: folded
BatchNorms, channels-last oneDNN convs), which give the plain models' logits within float tolerance and
run about 3.5x faster on the CPU; validation after every training epoch, the gates' scoring and the
robustness conditions all go through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

from ladeda.core import distributed
from ladeda.core.errors import LadedaError
from ladeda.core.runtime import CPU, Runtime
from ladeda.models.fastpath import FAST_PATH_MODELS, WORK_PIXELS, FastModel, optimize_for_inference
from ladeda.models.tiling import patch_map_in_pieces, scoring_pixels


@dataclass
class Scores:
    """Image logits (and optional per-image patch-logit maps) with labels and dataset indices."""

    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    patch_maps: list[np.ndarray] | None = None


def score(model: nn.Module, loader: Iterable, runtime: Runtime = CPU, patch_maps: bool = False,
          desc: str = "score", fast: bool = True) -> Scores:
    """Run `model` in eval mode over a loader of (images, labels, indices) batches."""
    return score_models({"model": model}, loader, runtime, patch_maps, desc, fast=fast)["model"]


@torch.no_grad()
def score_models(models: Mapping[str, nn.Module], loader: Iterable, runtime: Runtime = CPU,
                 patch_maps: bool = False, desc: str = "score",
                 on_maps: Callable[[dict[str, torch.Tensor]], None] | None = None,
                 gather: bool = True, max_pixels: int | None = None, fast: bool = True) -> dict[str, Scores]:
    """Run several models in eval mode over one pass of a loader (each batch is decoded once for all of them).

    The models are moved to `runtime.device` and run under its autocast; logits and maps come back as
    fp32 CPU arrays, so metrics and gates never see reduced precision. `on_maps({name: (B, 1, h, w) map})`
    receives every batch's patch maps (fp32, CPU) without them being kept: streaming statistics over a
    large split (`patch_maps=True` keeps them all, in `Scores.patch_maps`). Under several processes each
    scores its shard of the loader and, with `gather`, every rank gets the scores of the whole split in
    dataset-index order (`gather=False`: this rank's shard only, for statistics merged by the caller).
    Each batch runs in pieces of at most `max_pixels` input pixels (default: `models.tiling.SCORING_PIXELS`
    of the device; fast copies on the CPU use cache-sized pieces, `models.fastpath.WORK_PIXELS`, or fewer),
    so full-size test images of any size are scored, in exact tiles when one does not fit. `fast`: run
    LaDeDa / Tiny-LaDeDa as `optimize_for_inference` copies (the models passed in are only moved to the
    device and put in eval mode); other models run as they are.
    """
    for model in models.values():
        model.to(runtime.device).eval()
    if fast:
        models = {name: _inference_copy(m, max_pixels) for name, m in models.items()}
    logits = {name: [] for name in models}
    maps = {name: [] for name in models}
    labels, indices = [], []
    want_maps = patch_maps or on_maps is not None
    budget = max_pixels or scoring_pixels(runtime.device)
    for x, y, idx in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        runtime.share_threads()
        x = x.to(runtime.device, non_blocking=True)
        batch_maps: dict[str, torch.Tensor] = {}
        for name, model in models.items():
            with runtime.autocast():
                out = _patch_map(model, x, budget).float().cpu()
            if want_maps:
                batch_maps[name] = out
            logits[name].append(out.mean(dim=(1, 2, 3)))  # what the models' forward computes
            if patch_maps:
                maps[name].extend(out[:, 0].numpy())
        if on_maps:
            on_maps(batch_maps)
        labels.append(torch.as_tensor(y))
        indices.append(torch.as_tensor(idx))
    local = {name: Scores(_cat(logits[name]).double().numpy(), _cat(labels).numpy(), _cat(indices).numpy(),
                          maps[name] if patch_maps else None) for name in models}
    if gather and distributed.world_size() > 1:
        local = {name: _merge([part[name] for part in distributed.gather_objects(local)]) for name in models}
    if not len(next(iter(local.values())).labels) and (gather or distributed.world_size() == 1):
        raise LadedaError("nothing to score: the split has no images")
    return local


def _inference_copy(model: nn.Module, max_pixels: int | None) -> nn.Module:
    """The fast-path copy of a LaDeDa / Tiny-LaDeDa (CPU pieces within `max_pixels`); any other model as it is."""
    if not isinstance(model, FAST_PATH_MODELS):
        return model
    return optimize_for_inference(model, min(WORK_PIXELS, max_pixels or WORK_PIXELS))


def _patch_map(model: nn.Module, x: torch.Tensor, budget: int) -> torch.Tensor:
    """The model's patch map of a batch; LaDeDa / Tiny-LaDeDa run in pieces of `budget` pixels (exact tiles
    for larger images, see `models.tiling`); a fast-path copy brings its own pieces."""
    if isinstance(model, FastModel) or not hasattr(model, "trunk"):
        return model.patch_map(x)
    return patch_map_in_pieces(model, x, budget)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors) if tensors else torch.empty(0)


def _merge(parts: list[Scores]) -> Scores:
    """The ranks' shards of one split as one Scores in dataset-index order (a rank may have had no batch)."""
    parts = [p for p in parts if len(p.indices)] or parts[:1]
    indices = np.concatenate([p.indices for p in parts])
    order = np.argsort(indices, kind="stable")
    maps = None
    if parts[0].patch_maps is not None:
        every = [m for p in parts for m in p.patch_maps]
        maps = [every[i] for i in order]
    return Scores(np.concatenate([p.logits for p in parts])[order], np.concatenate([p.labels for p in parts])[order],
                  indices[order], maps)
