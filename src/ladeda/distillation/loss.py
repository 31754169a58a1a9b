"""Distillation geometry and loss: the student's stride-2 patch map pooled onto the teacher's stride-8 grid.

Teacher patch (i, j) covers pixels [8i, 8i+9); the student cells 4i..4i+2 cover the same window
(10x10 with the stride), so avg_pool2d(kernel 3, stride 4) of the student map lands exactly on the
teacher map: the official per-patch recipe done densely in one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ladeda.core.errors import LadedaError
from ladeda.distillation.targets import check_target, distill_term
from ladeda.distillation.teacher_maps import TeacherMaps, as_teacher_maps

ALIGN_KERNEL = 3
ALIGN_STRIDE = 4  # teacher stride 8 / student stride 2


def align(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Average the student's patch logits over each teacher patch: (B,1,H,W) -> teacher's (B,1,h,w)."""
    aligned = F.avg_pool2d(student_map, kernel_size=ALIGN_KERNEL, stride=ALIGN_STRIDE)
    if aligned.shape != teacher_map.shape:
        raise LadedaError(
            f"cannot align a student patch map of {tuple(student_map.shape[-2:])} with a teacher map of "
            f"{tuple(teacher_map.shape[-2:])}: distillation needs a stride-8 LaDeDa9 teacher and a Tiny-LaDeDa "
            f"student on the same images (got aligned {tuple(aligned.shape[-2:])})")
    return aligned


def distill_loss(student_map: torch.Tensor, teacher_map: torch.Tensor | None, labels: torch.Tensor,
                 alpha_task: float, alpha_distill: float, *, target: str,
                 scale: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha_task * BCE(image logit, label) + alpha_distill * MSE(aligned student map, teacher map) in `target` space.

    `target` is raw | standardized (both maps divided by the teacher `scale`) | probability (sigmoids); see
    `targets`. A weight of 0 leaves its term out of the graph entirely (the distillation term is then only
    measured, under no_grad, for the log); `teacher_map=None` means BCE only. Returns the total and the
    unweighted terms for logging: `bce`, and `mse` (the distillation term in the chosen space).
    """
    image_logit = student_map.mean(dim=(1, 2, 3))
    bce = F.binary_cross_entropy_with_logits(image_logit, labels.float())
    total = image_logit.new_zeros(())
    if alpha_task:
        total = total + alpha_task * bce
    terms = {"bce": bce.item()}
    if teacher_map is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and bool(alpha_distill)):
            mse = distill_term(align(student_map, teacher_map), teacher_map, target, scale)
        terms["mse"] = mse.item()
        if alpha_distill:
            total = total + alpha_distill * mse
    elif alpha_distill:
        raise LadedaError("alpha_distill > 0 needs a teacher patch map")
    return total, terms


def make_distill_step(teacher: nn.Module | TeacherMaps | None, alpha_task: float, alpha_distill: float, *,
                      target: str, scale: float | None = None):
    """A `fit` step: teacher patch maps under no_grad, student trained on the combined loss in `target` space.

    The maps come from an inference copy of the frozen teacher (BatchNorm folded, channels-last: same
    maps to float tolerance, about twice as fast on a CPU); the teacher itself is left untouched. Pass a
    `TeacherMaps` to share one (and its cache of maps) between steps. With `teacher=None` (distillation
    skipped) the student trains on BCE alone. A bad target or scale fails here, before training starts.
    """
    if teacher is not None:
        check_target(target, scale)
    teacher_maps = as_teacher_maps(teacher) if teacher is not None else None

    def step(student: nn.Module, x: torch.Tensor, y: torch.Tensor):
        teacher_map = teacher_maps(x) if teacher_maps is not None else None
        total, terms = distill_loss(student.patch_map(x), teacher_map, y, alpha_task, alpha_distill,
                                    target=target, scale=scale)
        return total, terms

    return step
