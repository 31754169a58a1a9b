"""The space the distillation term compares patch maps in, so that alpha_distill means the same for any teacher.

`raw`: MSE on the patch logits (the official recipe); its size follows the teacher's logit scale (tens,
against a BCE below one), so a given alpha_distill weighs differently from teacher to teacher.
`standardized`: both maps divided by sigma, the standard deviation of the frozen teacher's patch logits on
the training split, measured once before training: the term is about 1 for an uninformed student.
`probability`: MSE of the sigmoids, bounded in [0, 1] like the task term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

from ladeda.core import distributed
from ladeda.core.errors import LadedaError
from ladeda.core.params import DistillTarget
from ladeda.core.runtime import seed_everything
from ladeda.data.loaders import reseed_loader
from ladeda.distillation.teacher_maps import TeacherMaps, as_teacher_maps

TARGETS: tuple[str, ...] = get_args(DistillTarget)  # the values params.yaml's `distill.target` takes


def check_target(target: str, scale: float | None) -> None:
    """A known target, and for `standardized` a finite scale above 0 (else a one-line LadedaError)."""
    if target not in TARGETS:
        raise LadedaError(f"unknown distillation target {target!r}: use one of {', '.join(TARGETS)}")
    if target == "standardized" and (scale is None or not math.isfinite(scale) or scale <= 0):
        raise LadedaError(f"distillation target `standardized` needs a finite teacher scale above 0, got {scale!r}: "
                          "the teacher's patch logits do not vary on the training split; use distill.target raw "
                          "or probability, or check the teacher")


def distill_term(aligned: torch.Tensor, teacher_map: torch.Tensor, target: str, scale: float | None) -> torch.Tensor:
    """The unweighted distillation term: MSE between the aligned student map and the teacher map in `target` space."""
    check_target(target, scale)
    if target == "standardized":
        aligned, teacher_map = aligned / scale, teacher_map / scale
    elif target == "probability":
        aligned, teacher_map = torch.sigmoid(aligned), torch.sigmoid(teacher_map)
    return F.mse_loss(aligned, teacher_map, reduction="mean")


@torch.no_grad()
def measure_scale(teacher: nn.Module | TeacherMaps, loader: Iterable, seed: int,
                  device: str | torch.device = "cpu") -> float:
    """Standard deviation of all the frozen teacher's patch logits over one pass of `loader` (the training split).

    The pass is reproducible: the RNGs and the loader's shuffling generator are reseeded from `seed` first
    (random crops and flips draw from them; `fit` reseeds everything again per epoch). The maps come from the
    teacher's inference copy (BatchNorm folded; a `TeacherMaps` keeps them for the training that follows),
    summed per batch in float64; under several processes the ranks' sums are combined. A scale of 0 or not
    finite is a LadedaError.
    """
    maps = as_teacher_maps(teacher)
    seed_everything(seed)
    reseed_loader(loader, seed)
    count, total, squares, low, high = 0, 0.0, 0.0, math.inf, -math.inf
    for x, _, _ in tqdm(loader, desc="teacher scale", leave=False, dynamic_ncols=True):
        values = maps(x.to(device)).double()
        count += values.numel()
        total, squares = total + float(values.sum()), squares + float((values ** 2).sum())
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    if distributed.world_size() > 1:  # each rank saw its share of every batch: combine in rank order
        parts = distributed.gather_objects((count, total, squares, low, high))
        count, total, squares = (sum(part[k] for part in parts) for k in range(3))
        low, high = min(part[3] for part in parts), max(part[4] for part in parts)
    if count == 0:
        raise LadedaError("cannot measure the teacher scale: the training split is empty")
    mean = total / count
    scale = math.sqrt(max(squares / count - mean * mean, 0.0)) if high > low else 0.0  # all equal: exactly 0
    check_target("standardized", scale)
    return scale


def target_scale(target: str, teacher: nn.Module | TeacherMaps | None, loader: Iterable, seed: int,
                 device: str | torch.device = "cpu") -> float | None:
    """The scale `target` needs: the measured teacher sigma for `standardized` with a teacher, else None."""
    check_target(target, 1.0)
    if target != "standardized" or teacher is None:
        return None
    return measure_scale(teacher, loader, seed, device)
