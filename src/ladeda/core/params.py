"""The schema of `params.yaml`: typed sections (pydantic) that reject unknown keys, wrong types and bad ranges.

`params.yaml` is the only source of values: no field has a default here, so a key missing from the
file is an error that names it. `load_params(path)` returns a validated `Params`; every error is one
line naming the dotted key, e.g. params.yaml: `finetune.epochs` must be >= 1, got 0.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ladeda.core.errors import LadedaError

TeacherArch = Literal["LaDeDa5", "LaDeDa9", "LaDeDa17", "LaDeDa33"]
Arch = Literal["LaDeDa5", "LaDeDa9", "LaDeDa17", "LaDeDa33", "TinyLaDeDa"]
Preprocess = Literal["NPR", "raw", "x_grad", "y_grad", "left_diag", "right_diag"]
TeacherName = Literal["wildrf", "forensynth", "finetuned", "default"]
DistillTarget = Literal["standardized", "raw", "probability"]  # see distillation/targets.py
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # the range every RNG takes (numpy's is the narrowest)
Positive = Annotated[float, Field(gt=0.0)]


class Section(BaseModel):
    """A params section: strict types, no unknown keys, no defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SplitCounts(Section):
    """Images per class in each split of a generated domain."""

    train: Count
    val: Count
    test: Count


class PrepareDataParams(Section):
    """The embedded default dataset (`prepare_data`)."""

    seed: Seed
    image_size: Annotated[int, Field(ge=16, multiple_of=2)]
    source: SplitCounts
    target: SplitCounts


class DataParams(Section):
    """Where the data is and how images become tensors (official recipe: resize, crop, flip)."""

    root: str
    source_root: str
    load_size: Optional[Count]
    crop_size: Annotated[int, Field(ge=9)]  # one LaDeDa9 patch
    blur_prob: Probability
    blur_sigma: Positive
    jpeg_prob: Probability
    jpeg_quality: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=2, max_length=2)]
    max_unreadable_fraction: Probability

    @model_validator(mode="after")
    def _sizes(self):
        if self.load_size is not None and self.load_size < self.crop_size:
            raise ValueError("`data.load_size` must be null or >= data.crop_size")
        if self.jpeg_quality[0] > self.jpeg_quality[1]:
            raise ValueError("`data.jpeg_quality` must be [low, high] with low <= high")
        return self


class TeacherParams(Section):
    """The LaDeDa teacher: architecture and the pretrained checkpoint `diagnose` starts from."""

    arch: TeacherArch
    width: Count  # official checkpoints: 64
    preprocess: Preprocess
    npr_scale: Positive
    pretrained: str


class FitParams(Section):
    """One training run: epochs, optimiser, early stopping, validation batch."""

    epochs: Count
    lr: Positive
    weight_decay: Annotated[float, Field(ge=0.0)]
    batch_size: Count
    val_batch_size: Count
    patience: NonNegative
    lr_factor: Annotated[float, Field(gt=0.0, lt=1.0)]  # plateau schedule only
    lr_patience: NonNegative
    lr_schedule: Literal["plateau", "cosine"]
    ema: Annotated[float, Field(ge=0.0, lt=1.0)]  # per-step decay of the weight average; 0 = off
    bn_momentum: Optional[Annotated[float, Field(gt=0.0, le=1.0)]]  # null keeps the official momenta


class BandParams(Section):
    """An AUC band's two thresholds (named by LOW and HIGH) must be ordered: low <= high."""

    SECTION: ClassVar[str]
    LOW: ClassVar[str]
    HIGH: ClassVar[str]

    @model_validator(mode="after")
    def _ordered(self):
        low, high = f"{self.SECTION}.{self.LOW}", f"{self.SECTION}.{self.HIGH}"
        if getattr(self, self.LOW) > getattr(self, self.HIGH):
            raise ValueError(f"`{low}` must satisfy {low} <= {high}")
        return self


class DiagnoseParams(BandParams):
    """AUC bands of the pretrained teacher: good > `good`, marginal in [`bad`, `good`], bad < `bad`."""

    SECTION, LOW, HIGH = "diagnose", "bad", "good"
    good: Probability
    bad: Probability
    batch_size: Count


class FinetuneParams(FitParams):
    """`finetune_teacher`: policy auto|always|never and how many residual stages train."""

    policy: Literal["auto", "always", "never"]
    unfreeze_blocks: Annotated[int, Field(ge=0, le=4)]  # 0 = head only, 4 = every stage


class EvaluateTeacherParams(BandParams):
    """Distillation recommendation: ready >= `ready`, limited in [`skip`, `ready`), skip < `skip`."""

    SECTION, LOW, HIGH = "evaluate_teacher", "skip", "ready"
    ready: Probability
    skip: Probability
    batch_size: Count


class StudentParams(FitParams):
    """Tiny-LaDeDa training: single_stage (epochs, lr) or two_stage (s1: fit the patch map; s2: combined)."""

    preprocess: Preprocess
    npr_scale: Positive
    schedule: Literal["single_stage", "two_stage"]
    epochs_s1: Count
    lr_s1: Positive
    epochs_s2: Count
    lr_s2: Positive


class DistillParams(Section):
    """The space the distillation term compares patch maps in (see `distillation.targets`)."""

    target: DistillTarget  # raw: the official recipe (MSE on logits)


class TeacherFile(Section):
    """An official teacher checkpoint (a plain state dict) and what it is."""

    path: Annotated[str, Field(min_length=1)]
    arch: Optional[Arch] = None
    preprocess: Optional[Preprocess] = None
    npr_scale: Optional[Positive] = None


class EvaluateParams(Section):
    """`evaluate_student`: scoring batch and the latency measurement."""

    batch_size: Count
    latency_batch: Count
    latency_repeats: Count


class SocialMediaParams(Section):
    """The social-media chain of `evaluate_robustness`: resize down and up, blur, then JPEG re-compression."""

    resize_scale: Annotated[float, Field(gt=0.0, lt=1.0)]
    blur_sigma: Positive
    jpeg_quality: Annotated[int, Field(ge=1, le=100)]


class RobustnessParams(Section):
    """`evaluate_robustness`: the strengths of each degradation of the test split."""

    jpeg_quality: list[Annotated[int, Field(ge=1, le=100)]]
    resize_scale: list[Annotated[float, Field(gt=0.0, lt=1.0)]]
    blur_sigma: list[Positive]
    social_media: SocialMediaParams
    format_bias_quality: Annotated[int, Field(ge=1, le=100)]
    format_bias_min_drop: Annotated[float, Field(ge=0.0, le=1.0)]  # smaller significant drops are no shortcut
    batch_size: Count

    @model_validator(mode="after")
    def _distinct(self):
        for key in ("jpeg_quality", "resize_scale", "blur_sigma"):
            values = getattr(self, key)
            if len(set(values)) != len(values):  # each value names one condition in the metrics
                raise ValueError(f"`robustness.{key}` lists a value twice: {values}")
        return self


class RuntimeParams(Section):
    """How the stages use the hardware (`core.runtime`): device, precision, training processes, loader workers,
    CPU threads."""

    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    nproc: Count  # data-parallel training processes (all nodes together); changes results: a DVC param
    num_workers: Union[Literal["auto"], NonNegative]
    threads: Union[Literal["auto"], Count]


class PathsParams(Section):
    """The checkpoints the stages write; dvc.yaml declares the same paths through `${paths.*}`."""

    pretrained: str
    finetuned: str
    student_best: str
    student_final: str
    resume: str  # interrupted training state (not a DVC output)


class Params(Section):
    """The whole `params.yaml`."""

    seed: Seed
    alpha_distill: Probability
    alpha_task: Optional[Probability]
    teacher_weights: TeacherName
    distill: DistillParams
    prepare_data: PrepareDataParams
    data: DataParams
    teacher: TeacherParams
    pretrain: FitParams
    diagnose: DiagnoseParams
    finetune: FinetuneParams
    evaluate_teacher: EvaluateTeacherParams
    student: StudentParams
    teachers: dict[str, TeacherFile]
    evaluate: EvaluateParams
    robustness: RobustnessParams
    runtime: RuntimeParams
    paths: PathsParams

    @model_validator(mode="after")
    def _weights(self):
        if self.task_weight + self.alpha_distill <= 0:
            raise ValueError("`alpha_task` and alpha_distill cannot both be 0")
        return self

    @property
    def task_weight(self) -> float:
        """alpha_task, with null meaning 1 - alpha_distill."""
        return 1.0 - self.alpha_distill if self.alpha_task is None else self.alpha_task

    def teacher_file(self, name: str | None = None) -> TeacherFile:
        """The teacher checkpoint `teacher_weights` (or `name`) selects: the pipeline's own or one of `teachers`."""
        name = name or self.teacher_weights
        if name == "finetuned":
            return TeacherFile(path=self.paths.finetuned)
        if name == "default":
            return TeacherFile(path=self.paths.pretrained)
        if name not in self.teachers:
            raise LadedaError(f"params.yaml: teacher_weights={name!r} has no entry under `teachers`")
        return self.teachers[name]


def load_params(path: str | os.PathLike = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file; `overrides` maps dotted keys to values (CLI flags; None is skipped)."""
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


def params_from_dict(raw: Any, source: str = "params") -> Params:
    """Validate a plain dict as Params; the first problem becomes one LadedaError naming the key."""
    if not isinstance(raw, dict):
        raise LadedaError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise LadedaError(f"{source}: {describe_error(err.errors()[0])}") from None


def describe_error(error: dict) -> str:
    """One pydantic error as `` `dotted.key` what is wrong, got value``."""
    key = ".".join(str(part) for part in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "value_error":  # a cross-field check: its message names its keys
        message = str(ctx.get("error", error["msg"]))
        return message if message.startswith("`") else f"`{key}` {message}"
    if kind == "extra_forbidden":
        return f"unknown key `{key}`; check the spelling against params.yaml's comments"
    if kind == "missing":
        return f"`{key}` is missing; every key must be set in params.yaml"
    what = {"greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}",
            "less_than_equal": "must be <= {le}", "less_than": "must be < {lt}",
            "multiple_of": "must be a multiple of {multiple_of}", "int_type": "must be an integer",
            "float_type": "must be a number", "string_type": "must be a string", "bool_type": "must be true or false",
            "dict_type": "must be a mapping", "model_type": "must be a mapping", "list_type": "must be a list",
            "literal_error": "must be one of {expected}", "string_too_short": "must not be empty",
            "too_short": "must have {min_length} items", "too_long": "must have {max_length} items",
            "string_pattern_mismatch": "must match {pattern}"}.get(kind)
    bounds = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}  # 1.0 -> 1
    text = what.format(**bounds) if what else error["msg"]
    return f"`{key}` {text}, got {value!r}"


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
