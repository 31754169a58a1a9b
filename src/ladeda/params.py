"""Typed, validated `params.yaml`: unknown keys, wrong types and out-of-range values fail before any work.

Each section is a dataclass; `load_params(path)` returns a `Params`. Errors name the dotted key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ladeda.errors import LadedaError
from ladeda.models import ARCHS, PREPROCESS_NAMES

TEACHER_CHOICES = ("wildrf", "forensynth", "finetuned", "default")


@dataclass
class SplitCounts:
    """Images per class in each split of a generated domain."""

    train: int = 500
    val: int = 200
    test: int = 300


@dataclass
class PrepareDataParams:
    """The embedded default dataset (`prepare_data`)."""

    seed: int = 0
    image_size: int = 64
    source: SplitCounts = field(default_factory=lambda: SplitCounts(600, 200, 200))
    target: SplitCounts = field(default_factory=SplitCounts)


@dataclass
class DataParams:
    """Where the data is and how images are turned into tensors (official recipe: resize, crop, flip)."""

    root: str = "data/default/target"
    source_root: str = "data/default/source"
    load_size: Optional[int] = None
    crop_size: int = 64
    blur_prob: float = 0.0
    blur_sigma: float = 3.0
    jpeg_prob: float = 0.0
    jpeg_quality: list = field(default_factory=lambda: [30, 100])
    max_unreadable_fraction: float = 0.01
    num_workers: int = 0


@dataclass
class TeacherParams:
    """The LaDeDa teacher: architecture and the pretrained checkpoint `diagnose` starts from."""

    arch: str = "LaDeDa9"
    width: int = 16
    preprocess: str = "NPR"
    npr_scale: float = 1.0
    pretrained: str = "weights/pretrained/default_LaDeDa.pth"


@dataclass
class FitParams:
    """One training run: epochs, optimiser, early stopping."""

    epochs: int = 50
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    patience: int = 5
    lr_factor: float = 0.5
    lr_patience: int = 2
    bn_momentum: Optional[float] = None  # null keeps the official BatchNorm momenta


@dataclass
class DiagnoseParams:
    """AUC bands of the pretrained teacher: good > `good`, marginal in [`bad`, `good`], bad < `bad`."""

    good: float = 0.65
    bad: float = 0.55
    batch_size: int = 128


@dataclass
class FinetuneParams(FitParams):
    """`finetune_teacher`: policy auto|always|never and how many residual stages train."""

    policy: str = "auto"
    unfreeze_blocks: int = 1


@dataclass
class EvaluateTeacherParams:
    """Distillation recommendation: ready >= `ready`, limited in [`skip`, `ready`), skip < `skip`."""

    ready: float = 0.65
    skip: float = 0.55
    batch_size: int = 128


@dataclass
class StudentParams(FitParams):
    """Tiny-LaDeDa training: single_stage (epochs, lr) or two_stage (s1: fit the patch map; s2: combined)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    preprocess: str = "right_diag"
    npr_scale: float = 1.0
    schedule: str = "single_stage"
    epochs_s1: int = 5
    lr_s1: float = 1e-3
    epochs_s2: int = 20
    lr_s2: float = 1e-4


@dataclass
class TeacherFile:
    """A teacher checkpoint; arch/preprocess/npr_scale describe official plain state dicts."""

    path: str = ""
    arch: Optional[str] = None
    preprocess: Optional[str] = None
    npr_scale: Optional[float] = None


@dataclass
class EvaluateParams:
    """`evaluate_student`: scoring batch and the latency measurement."""

    batch_size: int = 128
    latency_batch: int = 32
    latency_repeats: int = 5


@dataclass
class Params:
    """The whole `params.yaml`."""

    seed: int = 0
    alpha_distill: float = 0.05
    alpha_task: Optional[float] = None
    teacher_weights: str = "finetuned"
    prepare_data: PrepareDataParams = field(default_factory=PrepareDataParams)
    data: DataParams = field(default_factory=DataParams)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    pretrain: FitParams = field(default_factory=FitParams)
    diagnose: DiagnoseParams = field(default_factory=DiagnoseParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    evaluate_teacher: EvaluateTeacherParams = field(default_factory=EvaluateTeacherParams)
    student: StudentParams = field(default_factory=StudentParams)
    teachers: dict = field(default_factory=dict)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    @property
    def task_weight(self) -> float:
        """alpha_task, with null meaning 1 - alpha_distill."""
        return 1.0 - self.alpha_distill if self.alpha_task is None else self.alpha_task

    def teacher_file(self, name: str | None = None) -> TeacherFile:
        """The teacher checkpoint selected by `teacher_weights` (or `name`)."""
        name = name or self.teacher_weights
        if name not in self.teachers:
            raise LadedaError(f"params.yaml: teacher_weights={name!r} has no entry under `teachers`")
        return self.teachers[name]


def load_params(path: str | os.PathLike = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read, type-check and validate a params file; `overrides` maps dotted keys to values (CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise LadedaError(f"{path} not found: run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LadedaError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: dict, source: str = "params") -> Params:
    """Build and validate Params from a plain dict."""
    if not isinstance(raw, dict):
        raise LadedaError(f"{source}: expected a mapping at the top level")
    params = _build(Params, raw, "", source)
    _validate(params, source)
    return params


def _build(cls, raw: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        key = prefix + unknown[0]
        raise LadedaError(f"{source}: unknown key `{key}`; known keys here: {', '.join(sorted(names))}")
    values = {}
    for name in names & set(raw):
        values[name] = _convert(raw[name], hints[name], prefix + name, source)
    return cls(**values)


def _convert(value, hint, key: str, source: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key, source)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise LadedaError(f"{source}: `{key}` must be a mapping, got {value!r}")
        return _build(hint, value, key + ".", source)
    if hint is dict:
        if not isinstance(value, dict):
            raise LadedaError(f"{source}: `{key}` must be a mapping, got {value!r}")
        return {k: _convert(v, TeacherFile, f"{key}.{k}", source) for k, v in value.items()}
    if hint is list:
        if not isinstance(value, list):
            raise LadedaError(f"{source}: `{key}` must be a list, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise LadedaError(f"{source}: `{key}` must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LadedaError(f"{source}: `{key}` must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LadedaError(f"{source}: `{key}` must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise LadedaError(f"{source}: `{key}` must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {hint} for {key}")  # a bug in this module, not user input


def _check(ok: bool, source: str, key: str, what: str) -> None:
    if not ok:
        raise LadedaError(f"{source}: `{key}` {what}")


def _validate(p: Params, s: str) -> None:
    _check(0.0 <= p.alpha_distill <= 1.0, s, "alpha_distill", f"must be in [0, 1], got {p.alpha_distill}")
    _check(p.alpha_task is None or 0.0 <= p.alpha_task <= 1.0, s, "alpha_task",
           f"must be null or in [0, 1], got {p.alpha_task}")
    _check(p.task_weight + p.alpha_distill > 0, s, "alpha_task", "and alpha_distill cannot both be 0")
    _check(p.teacher_weights in TEACHER_CHOICES, s, "teacher_weights",
           f"must be one of {', '.join(TEACHER_CHOICES)}, got {p.teacher_weights!r}")
    _check(p.teacher_weights in p.teachers, s, "teachers",
           f"needs an entry for teacher_weights={p.teacher_weights!r}")
    for name, tf in p.teachers.items():
        _check(bool(tf.path), s, f"teachers.{name}.path", "must name a checkpoint file")
        _check(tf.arch is None or tf.arch in ARCHS, s, f"teachers.{name}.arch", f"must be one of {', '.join(ARCHS)}")
        _check(tf.preprocess is None or tf.preprocess in PREPROCESS_NAMES, s, f"teachers.{name}.preprocess",
               f"must be one of {', '.join(PREPROCESS_NAMES)}")
    for sec, counts in (("prepare_data.source", p.prepare_data.source), ("prepare_data.target", p.prepare_data.target)):
        for split in ("train", "val", "test"):
            _check(getattr(counts, split) >= 1, s, f"{sec}.{split}", "must be at least 1")
    _check(p.prepare_data.image_size >= 16 and p.prepare_data.image_size % 2 == 0, s,
           "prepare_data.image_size", "must be an even number >= 16")
    d = p.data
    _check(d.crop_size >= 9, s, "data.crop_size", f"must be at least 9 (one LaDeDa9 patch), got {d.crop_size}")
    _check(d.load_size is None or d.load_size >= d.crop_size, s, "data.load_size", "must be null or >= data.crop_size")
    for key in ("blur_prob", "jpeg_prob", "max_unreadable_fraction"):
        _check(0.0 <= getattr(d, key) <= 1.0, s, f"data.{key}", "must be in [0, 1]")
    _check(len(d.jpeg_quality) == 2 and all(isinstance(q, int) and 1 <= q <= 100 for q in d.jpeg_quality)
           and d.jpeg_quality[0] <= d.jpeg_quality[1], s, "data.jpeg_quality", "must be [low, high] with 1 <= low <= high <= 100")
    _check(d.num_workers >= 0, s, "data.num_workers", "must be >= 0")
    t = p.teacher
    _check(t.arch in ARCHS and t.arch != "TinyLaDeDa", s, "teacher.arch", "must be LaDeDa5, LaDeDa9, LaDeDa17 or LaDeDa33")
    _check(t.width >= 1, s, "teacher.width", "must be >= 1 (official: 64)")
    _check(t.preprocess in PREPROCESS_NAMES, s, "teacher.preprocess", f"must be one of {', '.join(PREPROCESS_NAMES)}")
    _check(p.student.preprocess in PREPROCESS_NAMES, s, "student.preprocess", f"must be one of {', '.join(PREPROCESS_NAMES)}")
    for sec in ("pretrain", "finetune", "student"):
        f = getattr(p, sec)
        for key in ("epochs", "patience", "lr_patience") + (("epochs_s1", "epochs_s2") if sec == "student" else ()):
            _check(getattr(f, key) >= 0, s, f"{sec}.{key}", f"must be >= 0, got {getattr(f, key)}")
        for key in ("lr",) + (("lr_s1", "lr_s2") if sec == "student" else ()):
            _check(getattr(f, key) > 0, s, f"{sec}.{key}", f"must be > 0, got {getattr(f, key)}")
        _check(f.weight_decay >= 0, s, f"{sec}.weight_decay", "must be >= 0")
        _check(f.batch_size >= 1, s, f"{sec}.batch_size", "must be >= 1")
        _check(0 < f.lr_factor < 1, s, f"{sec}.lr_factor", "must be in (0, 1)")
        _check(f.bn_momentum is None or 0 < f.bn_momentum <= 1, s, f"{sec}.bn_momentum", "must be null or in (0, 1]")
    _check(p.finetune.policy in ("auto", "always", "never"), s, "finetune.policy", "must be auto, always or never")
    _check(0 <= p.finetune.unfreeze_blocks <= 4, s, "finetune.unfreeze_blocks", "must be 0 (head only) to 4 (all stages)")
    _check(p.student.schedule in ("single_stage", "two_stage"), s, "student.schedule", "must be single_stage or two_stage")
    _check(0 <= p.diagnose.bad <= p.diagnose.good <= 1, s, "diagnose.bad", "must satisfy 0 <= diagnose.bad <= diagnose.good <= 1")
    _check(0 <= p.evaluate_teacher.skip <= p.evaluate_teacher.ready <= 1, s, "evaluate_teacher.skip",
           "must satisfy 0 <= evaluate_teacher.skip <= evaluate_teacher.ready <= 1")
    for sec in ("diagnose", "evaluate_teacher", "evaluate"):
        _check(getattr(p, sec).batch_size >= 1, s, f"{sec}.batch_size", "must be >= 1")
    _check(p.evaluate.latency_batch >= 1 and p.evaluate.latency_repeats >= 1, s, "evaluate.latency_batch",
           "and evaluate.latency_repeats must be >= 1")


def stage_params(description: str, flags: dict[str, tuple[str, type]] | None = None,
                 argv: list[str] | None = None) -> Params:
    """Parse a stage's command line: `--params FILE` plus flags that override dotted params keys.

    `flags` maps a flag (e.g. `--epochs`) to (dotted key, type), so stages also run outside DVC.
    """
    flags = flags or {}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for flag, (key, typ) in flags.items():
        parser.add_argument(flag, type=typ, dest=key, default=None, help=f"overrides `{key}`")
    args = vars(parser.parse_args(argv))
    return load_params(args.pop("params"), overrides=args)
