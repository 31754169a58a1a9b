"""Batched scoring: image logits (and optionally patch maps) of a model over a data loader."""

from __future__ import annotations

from collections.abc import Iterable
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


@torch.no_grad()
def score(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu", patch_maps: bool = False,
          desc: str = "score") -> Scores:
    """Run `model` in eval mode over a loader of (images, labels, indices) batches."""
    model.eval()
    logits, labels, indices, maps = [], [], [], []
    for x, y, idx in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        x = x.to(device)
        if patch_maps:
            pm = model.patch_map(x)
            maps.extend(pm[:, 0].cpu().numpy())
            logits.append(pm.mean(dim=(1, 2, 3)).cpu())
        else:
            logits.append(model(x).cpu())
        labels.append(torch.as_tensor(y))
        indices.append(torch.as_tensor(idx))
    if not logits:
        raise LadedaError("nothing to score: the split has no images")
    return Scores(torch.cat(logits).double().numpy(), torch.cat(labels).numpy(), torch.cat(indices).numpy(),
                  maps if patch_maps else None)
