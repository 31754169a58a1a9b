"""Tiny-LaDeDa training schedules: single_stage, or two_stage (fit the teacher's patch map, then the combined loss)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ladeda.distillation.loss import make_distill_step
from ladeda.distillation.monitor import DistillMonitor
from ladeda.distillation.teacher_maps import TeacherMaps
from ladeda.core.errors import LadedaError
from ladeda.core.params import StudentParams
from ladeda.core.runtime import CPU, Runtime
from ladeda.training.fit import FitConfig, FitResult, fit


@dataclass
class Phase:
    """One `fit` run of the schedule and the loss weights it uses."""

    name: str
    epochs: int
    lr: float
    alpha_task: float
    alpha_distill: float


def plan_schedule(s: StudentParams, alpha_task: float, alpha_distill: float, distill: bool) -> list[Phase]:
    """The phases to run. Without distillation (gate says skip) the student trains on BCE only, in one phase."""
    if not distill:
        epochs, lr = (s.epochs, s.lr) if s.schedule == "single_stage" else (s.epochs_s2, s.lr_s2)
        phases = [Phase("student", epochs, lr, 1.0, 0.0)]
    elif s.schedule == "single_stage":
        phases = [Phase("student", s.epochs, s.lr, alpha_task, alpha_distill)]
    else:
        phases = [Phase("stage1", s.epochs_s1, s.lr_s1, 0.0, 1.0),
                  Phase("stage2", s.epochs_s2, s.lr_s2, alpha_task, alpha_distill)]
    phases = [ph for ph in phases if ph.epochs > 0]
    if not phases:
        raise LadedaError("student: the schedule has no epochs; set student.epochs (single_stage) or "
                          "student.epochs_s1 / student.epochs_s2 (two_stage) above 0")
    return phases


def train_student(student: nn.Module, teacher: nn.Module | None, phases: list[Phase], train_loader: Iterable,
                  val_loader: Iterable, s: StudentParams, seed: int, *, target: str, scale: float | None = None,
                  on_best: Callable[[nn.Module, int, dict], None] | None = None,
                  log_epoch: Callable[[dict], None] | None = None, resume_dir: str | None = None,
                  extra: dict | None = None, on_epoch_end: Callable[[int], None] | None = None,
                  teacher_maps: TeacherMaps | None = None, runtime: Runtime = CPU) -> list[tuple[Phase, FitResult]]:
    """Run the phases in order with the shared fit loop; the student carries over from phase to phase.

    Epochs are numbered across phases for logging and `on_best` fires on a new best validation AUC
    over the whole schedule. Each phase resumes from its own `last` checkpoint in `resume_dir`; those
    files are kept until the whole schedule has finished, so an interrupted stage 2 does not redo stage 1.
    The distillation term is compared in `target` space (`scale`: the teacher sigma for `standardized`, see
    `targets.target_scale`). With a teacher, every epoch row also has the loss shares and the validation
    patch agreement (`monitor`); the teacher's validation maps are computed once for all phases. The training
    maps come from `teacher_maps` when given (one `TeacherMaps` of `teacher`, e.g. the cached one the teacher
    scale was measured with), else from an uncached one; every phase shares it.
    """
    results: list[tuple[Phase, FitResult]] = []
    if teacher is not None:
        teacher.to(runtime.device)
    teacher_maps = (teacher_maps or TeacherMaps(teacher)) if teacher is not None else None
    monitor = DistillMonitor(teacher, val_loader, runtime) if teacher is not None else None
    offset, overall_best = 0, float("-inf")
    for phase in phases:
        def best(model, epoch, row, _offset=offset):
            nonlocal overall_best
            if row["val_auc"] > overall_best and on_best:
                on_best(model, epoch + _offset, {**row, "epoch": epoch + _offset})
            overall_best = max(overall_best, row["val_auc"])

        def log(row, _offset=offset):
            if log_epoch:
                log_epoch({**row, "epoch": row["epoch"] + _offset})

        config = replace(FitConfig.from_section(s, seed, phase=phase.__dict__, target=target, scale=scale,
                                                **(extra or {})), epochs=phase.epochs, lr=phase.lr)
        step = make_distill_step(teacher_maps, phase.alpha_task, phase.alpha_distill, target=target, scale=scale)
        result = fit(student, train_loader, val_loader, config, step_fn=step, on_best=best, log_epoch=log,
                     epoch_metrics=monitor.for_phase(phase.alpha_task, phase.alpha_distill) if monitor else None,
                     last_path=f"{resume_dir}/{phase.name}.pt" if resume_dir else None,
                     on_epoch_end=on_epoch_end, keep_last=True, desc=phase.name, runtime=runtime)
        results.append((phase, result))
        offset += result.epochs_run
    if resume_dir and runtime.is_main:
        for phase in phases:
            Path(resume_dir, f"{phase.name}.pt").unlink(missing_ok=True)
    return results
