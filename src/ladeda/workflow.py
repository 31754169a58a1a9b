"""Turn typed params into the objects stages use: split loaders, fit configs, teachers, checkpoint callbacks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from ladeda.checkpoints import load_model, save_checkpoint
from ladeda.data.folders import LabeledImages, make_loader
from ladeda.data.transforms import build_transform
from ladeda.errors import LadedaError
from ladeda.evaluate import detection_metrics, score
from ladeda.gates import distill_recommendation
from ladeda.params import DataParams, FitParams, Params, TeacherFile
from ladeda.train import FitConfig

OFFICIAL_HELP = ("download {name} from the official LaDeDa release (see README, 'Official checkpoints') "
                 "and put it at {path}, or choose another teacher_weights")


def split_loader(data: DataParams, root: str, split: str, batch_size: int, seed: int) -> DataLoader:
    """Loader of `{root}/{split}` with the split's transform (train: crop+flip, shuffled; val/test: fixed)."""
    mode = "train" if split == "train" else ("val" if split == "val" else "test")
    transform = build_transform(mode, data.crop_size, data.load_size, even=True, blur_prob=data.blur_prob,
                                blur_sigma=data.blur_sigma, jpeg_prob=data.jpeg_prob,
                                jpeg_quality=data.jpeg_quality)
    dataset = LabeledImages.from_split(root, split, transform)
    print(f"{root}: {dataset.scan.summary()}")
    return make_loader(dataset, batch_size, shuffle=mode == "train", seed=seed, num_workers=data.num_workers)


def fit_config(section: FitParams, seed: int, epochs: int | None = None, lr: float | None = None,
               **extra) -> FitConfig:
    """FitConfig from a params section; `extra` (params, data root) must match for a resume."""
    return FitConfig(epochs=section.epochs if epochs is None else epochs, lr=section.lr if lr is None else lr,
                     weight_decay=section.weight_decay, patience=section.patience, lr_factor=section.lr_factor,
                     lr_patience=section.lr_patience, seed=seed, extra=extra)


def load_pretrained_teacher(p: Params) -> nn.Module:
    """`teacher.pretrained`: ours (checked against `teacher.*`) or an official state dict described by them."""
    t = p.teacher
    path = Path(t.pretrained)
    if not path.is_file():
        hint = ("run `dvc repro pretrain_teacher`" if path.name == "default_LaDeDa.pth"
                else OFFICIAL_HELP.format(name=path.name, path=path))
        raise LadedaError(f"teacher.pretrained {path} not found: {hint}")
    return load_model(path, arch=t.arch, preprocess=t.preprocess, npr_scale=t.npr_scale, width=t.width)


def load_teacher_file(name: str, tf: TeacherFile) -> nn.Module:
    """The teacher checkpoint `teachers.<name>`; a missing file says how to get it."""
    path = Path(tf.path)
    if not path.is_file():
        hint = {"finetuned": "run `dvc repro finetune_teacher`", "default": "run `dvc repro pretrain_teacher`"}
        raise LadedaError(f"teachers.{name}.path {path} not found: "
                          + hint.get(name, OFFICIAL_HELP.format(name=path.name, path=path)))
    return load_model(path, arch=tf.arch, preprocess=tf.preprocess, npr_scale=tf.npr_scale)


def checkpoint_on_best(path: str | Path, image_size: int, params: dict, **extra):
    """An `on_best` callback for `fit` that writes a self-describing checkpoint with the epoch's metrics."""
    def on_best(model: nn.Module, epoch: int, metrics: dict) -> None:
        save_checkpoint(path, model, image_size=image_size, params=params, metrics=metrics, epoch=epoch, **extra)
    return on_best


def read_metrics(path: str | Path, stage: str) -> dict:
    """A metrics JSON written by an earlier stage; missing means that stage has not run."""
    path = Path(path)
    if not path.is_file():
        raise LadedaError(f"{path} not found: run `dvc repro {stage}` first")
    return json.loads(path.read_text())


def as_dict(section) -> dict:
    """A params section (dataclass) as a plain dict for checkpoints and metrics."""
    return dataclasses.asdict(section)


def distillation_gate(p: Params, teacher: nn.Module, val_loader) -> dict:
    """The distillation recommendation for the selected teacher.

    For `teacher_weights: finetuned` it is the one `evaluate_teacher` wrote; any other teacher is scored
    on the validation split here and put through the same thresholds.
    """
    if p.teacher_weights == "finetuned":
        m = read_metrics("metrics/evaluate_teacher.json", "evaluate_teacher")
        return {"recommendation": m["recommendation"], "teacher_val_auc": m["val_auc"], "from": "evaluate_teacher"}
    s = score(teacher, val_loader, desc="teacher val")
    auc = detection_metrics(s.labels, s.logits, name="validation split")["auc"]
    rec = distill_recommendation(auc, p.evaluate_teacher.ready, p.evaluate_teacher.skip)
    return {"recommendation": rec, "teacher_val_auc": auc, "from": "train_student"}
