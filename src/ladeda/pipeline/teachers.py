"""The teachers the stages load: the pretrained one `diagnose` starts from, and the one `teacher_weights` selects."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ladeda.core.errors import LadedaError
from ladeda.core.params import Params
from ladeda.core.runtime import CPU, Runtime
from ladeda.evaluation.metrics import detection_metrics
from ladeda.evaluation.scoring import score
from ladeda.models.checkpoints import load_model
from ladeda.pipeline.gates import distill_recommendation
from ladeda.core.outputs import read_metrics

OFFICIAL_HELP = ("download {name} from the official LaDeDa release (see README, 'Official checkpoints') "
                 "and put it at {path}, or choose another teacher_weights")
PRODUCED_BY = {"finetuned": "finetune_teacher", "default": "pretrain_teacher"}


def load_pretrained_teacher(p: Params) -> nn.Module:
    """`teacher.pretrained`: ours (checked against `teacher.*`) or an official state dict described by them."""
    t = p.teacher
    path = Path(t.pretrained)
    if not path.is_file():
        hint = ("run `dvc repro pretrain_teacher`" if path == Path(p.paths.pretrained)
                else OFFICIAL_HELP.format(name=path.name, path=path))
        raise LadedaError(f"teacher.pretrained {path} not found: {hint}")
    return load_model(path, arch=t.arch, preprocess=t.preprocess, npr_scale=t.npr_scale, width=t.width)


def load_selected_teacher(p: Params) -> nn.Module:
    """The teacher `teacher_weights` names; a missing file says how to get it."""
    name, tf = p.teacher_weights, p.teacher_file()
    path = Path(tf.path)
    if not path.is_file():
        hint = (f"run `dvc repro {PRODUCED_BY[name]}`" if name in PRODUCED_BY
                else OFFICIAL_HELP.format(name=path.name, path=path))
        raise LadedaError(f"teacher_weights={name}: {path} not found: {hint}")
    return load_model(path, arch=tf.arch, preprocess=tf.preprocess, npr_scale=tf.npr_scale)


def distillation_gate(p: Params, teacher: nn.Module, val_loader, runtime: Runtime = CPU) -> dict:
    """The distillation recommendation for the selected teacher.

    For `teacher_weights: finetuned` it is the one `evaluate_teacher` wrote; any other teacher is scored
    on the validation split here and put through the same thresholds.
    """
    if p.teacher_weights == "finetuned":
        m = read_metrics("evaluate_teacher")
        return {"recommendation": m["recommendation"], "teacher_val_auc": m["val_auc"], "from": "evaluate_teacher"}
    s = score(teacher, val_loader, runtime, desc="teacher val")
    auc = detection_metrics(s.labels, s.logits, name="validation split")["auc"]
    rec = distill_recommendation(auc, p.evaluate_teacher.ready, p.evaluate_teacher.skip)
    return {"recommendation": rec, "teacher_val_auc": auc, "from": "train_student"}
