"""Batched scoring: image logits (and optionally patch maps) of a model over a data loader."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ladeda.core.errors import LadedaError


@dataclass
class Scores:
    """Image logits (and optional per-image patch-logit maps) with labels and dataset indices."""

    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    patch_maps: list[np.ndarray] | None = None


def score(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu", patch_maps: bool = False,
          desc: str = "score") -> Scores:
    """Run `model` in eval mode over a loader of (images, labels, indices) batches."""
    return score_models({"model": model}, loader, device, patch_maps, desc)["model"]


@torch.no_grad()
def score_models(models: Mapping[str, nn.Module], loader: Iterable, device: str | torch.device = "cpu",
                 patch_maps: bool = False, desc: str = "score") -> dict[str, Scores]:
    """Run several models in eval mode over one pass of a loader (each batch is decoded once for all of them)."""
    for model in models.values():
        model.eval()
    logits = {name: [] for name in models}
    maps = {name: [] for name in models}
    labels, indices = [], []
    for x, y, idx in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        x = x.to(device)
        for name, model in models.items():
            if patch_maps:
                pm = model.patch_map(x)
                maps[name].extend(pm[:, 0].cpu().numpy())
                logits[name].append(pm.mean(dim=(1, 2, 3)).cpu())
            else:
                logits[name].append(model(x).cpu())
        labels.append(torch.as_tensor(y))
        indices.append(torch.as_tensor(idx))
    if not labels:
        raise LadedaError("nothing to score: the split has no images")
    y, i = torch.cat(labels).numpy(), torch.cat(indices).numpy()
    return {name: Scores(torch.cat(logits[name]).double().numpy(), y, i, maps[name] if patch_maps else None)
            for name in models}
