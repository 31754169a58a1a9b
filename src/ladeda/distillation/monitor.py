"""Per-epoch distillation diagnostics: each weighted term's share of the loss, and student-teacher patch agreement.

The shares show what an alpha really weighs (a term's share, not its weight, is what the gradient sees);
the agreement shows whether the student learns the teacher's patch map, on the validation split.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import nn

from ladeda.core import distributed
from ladeda.core.errors import LadedaError
from ladeda.core.runtime import CPU, Runtime
from ladeda.distillation.agreement import PatchAgreement
from ladeda.evaluation.scoring import score_models


def loss_shares(bce: float, mse: float, alpha_task: float, alpha_distill: float) -> dict[str, float]:
    """`share_task` = alpha_task*bce / (alpha_task*bce + alpha_distill*mse), `share_distill` likewise (epoch means)."""
    task, distill = alpha_task * bce, alpha_distill * mse
    total = task + distill
    if not total > 0:
        return {}  # both weighted terms 0: no share to speak of
    return {"share_task": task / total, "share_distill": distill / total}


class DistillMonitor:
    """Epoch metrics for `fit(epoch_metrics=...)`: loss shares from the row, patch agreement on the validation split.

    The frozen teacher's validation maps are computed once (lazily, with its inference copy) and cached;
    each epoch scores only the student, which is tiny. One monitor serves every phase of a schedule.
    Under several processes each rank keeps the maps of its validation shard and the agreement statistics
    are merged over the ranks.
    """

    def __init__(self, teacher: nn.Module, val_loader: Iterable, runtime: Runtime = CPU):
        self.teacher, self.val_loader, self.runtime = teacher, val_loader, runtime
        self._teacher_maps: list[np.ndarray] | None = None
        self._indices: np.ndarray | None = None

    def teacher_maps(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The teacher's validation patch maps and their dataset indices (computed on first use)."""
        if self._teacher_maps is None:
            s = score_models({"teacher": self.teacher}, self.val_loader, self.runtime,
                             patch_maps=True, desc="validate teacher maps", gather=False)["teacher"]
            self._teacher_maps, self._indices = s.patch_maps, s.indices
        return self._teacher_maps, self._indices

    def agreement(self, student: nn.Module) -> dict[str, float]:
        """`val_patch_pearson` / `val_patch_spearman` of the aligned student maps against the cached teacher maps."""
        teacher_maps, indices = self.teacher_maps()
        acc = PatchAgreement(seed=self.runtime.rank)  # each rank its own Spearman subsample keys
        done = 0

        def add(maps):  # streams the student's maps against the cached teacher maps, batch by batch
            nonlocal done
            acc.update(maps["model"], teacher_maps[done:done + len(maps["model"])])
            done += len(maps["model"])

        s = score_models({"model": student}, self.val_loader, self.runtime, desc="validate patch maps", on_maps=add,
                         gather=False)
        if not np.array_equal(s["model"].indices, indices):
            raise LadedaError("the validation loader changed its order between passes; patch agreement needs "
                              "a fixed order (shuffle=False)")
        a = PatchAgreement.merged(distributed.gather_objects(acc)).result()
        return {"val_patch_pearson": a["pearson"], "val_patch_spearman": a["spearman"]}

    def for_phase(self, alpha_task: float, alpha_distill: float):
        """The `epoch_metrics(model, row)` hook of one phase: its loss shares and the patch agreement."""
        def epoch_metrics(model: nn.Module, row: dict) -> dict[str, float]:
            shares = loss_shares(row["train_bce"], row["train_mse"], alpha_task, alpha_distill)
            return {**shares, **self.agreement(model)}
        return epoch_metrics
