"""params.yaml loads into typed objects; bad keys, types and ranges are one clear error naming the key."""

import re
import typing
from pathlib import Path

import pytest

from ladeda.core.errors import LadedaError
from ladeda.core.params import Arch, Params, Preprocess, TeacherArch, load_params, params_from_dict, stage_params
from ladeda.models import ARCHS, PREPROCESS_NAMES
from helpers import project_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_load_with_types():
    p = load_params(ROOT / "params.yaml")
    assert p.teacher.arch == "LaDeDa9" and isinstance(p.teacher.width, int)
    assert isinstance(p.finetune.lr, float) and p.finetune.policy in ("auto", "always", "never")
    assert p.alpha_task is None and p.task_weight == pytest.approx(1 - p.alpha_distill)
    assert p.teachers["forensynth"].npr_scale == pytest.approx(2 / 3, rel=1e-6)


def test_pipeline_teachers_resolve_to_the_paths_the_stages_write():
    p = load_params(ROOT / "params.yaml")
    assert p.teacher_file("finetuned").path == p.paths.finetuned
    assert p.teacher_file("default").path == p.paths.pretrained
    assert p.teacher_file("wildrf").arch == "LaDeDa9"


def test_schema_names_match_the_models():
    assert set(typing.get_args(Arch)) == set(ARCHS)
    assert set(typing.get_args(TeacherArch)) == set(ARCHS) - {"TinyLaDeDa"}
    assert set(typing.get_args(Preprocess)) == set(PREPROCESS_NAMES)


def test_params_yaml_is_the_only_source_of_values():
    """No field has a default: removing any key of params.yaml is an error naming it."""
    raw = project_params()
    for section, value in raw.items():
        keys = [section] + ([f"{section}.{k}" for k in value] if isinstance(value, dict) and section != "teachers" else [])
        for dotted in keys:
            cut = project_params()
            *parents, leaf = dotted.split(".")
            node = cut
            for part in parents:
                node = node[part]
            del node[leaf]
            with pytest.raises(LadedaError, match=f"`{dotted}` is missing"):
                params_from_dict(cut, source="params.yaml")
    assert not any(f.default is not None and not f.is_required() for f in Params.model_fields.values())


def test_alpha_task_explicit_value_is_used():
    assert params_from_dict(project_params({"alpha_task": 0.3})).task_weight == 0.3


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.update(alpha_distil=0.1), "unknown key `alpha_distil`"),
    (lambda r: r["student"].update(epoch=3), "unknown key `student.epoch`"),
    (lambda r: r.update(alpha_distill=1.5), "`alpha_distill` must be <= 1, got 1.5"),
    (lambda r: r.update(alpha_task=-0.1), "`alpha_task` must be >= 0, got -0.1"),
    (lambda r: r.update(alpha_task=0.0, alpha_distill=0.0), "`alpha_task` and alpha_distill cannot both be 0"),
    (lambda r: r["finetune"].update(epochs=-1), "`finetune.epochs` must be >= 1, got -1"),
    (lambda r: r["pretrain"].update(epochs=0), "`pretrain.epochs` must be >= 1, got 0"),
    (lambda r: r["finetune"].update(epochs=0), "`finetune.epochs` must be >= 1, got 0"),
    (lambda r: r["student"].update(epochs=0), "`student.epochs` must be >= 1, got 0"),
    (lambda r: r["student"].update(epochs_s1=0), "`student.epochs_s1` must be >= 1, got 0"),
    (lambda r: r["student"].update(epochs_s2=0), "`student.epochs_s2` must be >= 1, got 0"),
    (lambda r: r.update(seed=2**32), "`seed` must be < 4294967296, got 4294967296"),
    (lambda r: r["prepare_data"].update(seed=2**64), "`prepare_data.seed` must be < 4294967296"),
    (lambda r: r["finetune"].update(epochs="ten"), "`finetune.epochs` must be an integer, got 'ten'"),
    (lambda r: r["finetune"].update(epochs=2.5), "`finetune.epochs` must be an integer"),
    (lambda r: r["student"].update(lr=0), "`student.lr` must be > 0"),
    (lambda r: r["student"].update(val_batch_size=0), "`student.val_batch_size` must be >= 1"),
    (lambda r: r["diagnose"].update(good=0.5, bad=0.6), "`diagnose.bad` must satisfy"),
    (lambda r: r["evaluate_teacher"].update(ready=0.5, skip=0.6), "`evaluate_teacher.skip` must satisfy"),
    (lambda r: r["finetune"].update(policy="sometimes"), "`finetune.policy` must be one of 'auto', 'always' or"),
    (lambda r: r.update(teacher_weights="imagenet"), "`teacher_weights` must be one of"),
    (lambda r: r["teacher"].update(preprocess="sobel"), "`teacher.preprocess` must be one of"),
    (lambda r: r["teacher"].update(arch="TinyLaDeDa"), "`teacher.arch` must be one of"),
    (lambda r: r["student"].update(schedule="three_stage"), "`student.schedule`"),
    (lambda r: r["distill"].update(target="logits"),
     "`distill.target` must be one of 'standardized', 'raw' or 'probability', got 'logits'"),
    (lambda r: r["distill"].update(scale=1.0), "unknown key `distill.scale`"),
    (lambda r: r.update(data=[1, 2]), "`data` must be a mapping"),
    (lambda r: r["data"].update(jpeg_quality=[90]), "`data.jpeg_quality` must have 2 items"),
    (lambda r: r["data"].update(jpeg_quality=[90, 30]), "`data.jpeg_quality` must be \\[low, high\\]"),
    (lambda r: r["data"].update(load_size=32, crop_size=64), "`data.load_size` must be null or >= data.crop_size"),
    (lambda r: r["prepare_data"].update(image_size=33), "`prepare_data.image_size` must be a multiple of 2"),
    (lambda r: r["finetune"].update(unfreeze_blocks=7), "`finetune.unfreeze_blocks` must be <= 4"),
    (lambda r: r["teachers"]["wildrf"].update(path=""), "`teachers.wildrf.path` must not be empty"),
])
def test_bad_params_name_the_key(mutate, match):
    raw = project_params()
    mutate(raw)
    with pytest.raises(LadedaError, match=match) as err:
        params_from_dict(raw, source="params.yaml")
    assert str(err.value).startswith("params.yaml: ") and "\n" not in str(err.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(LadedaError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(LadedaError, match="not valid YAML"):
        load_params(bad)


def test_stage_flags_override_params_keys(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    flags = {"--epochs": ("finetune.epochs", int), "--lr": ("finetune.lr", float),
             "--checkpoint": ("teacher.pretrained", str)}
    p = stage_params("x", flags, ["--params", str(path), "--epochs", "3", "--checkpoint", "w.pth"])
    assert p.finetune.epochs == 3 and p.teacher.pretrained == "w.pth"
    assert p.finetune.lr == load_params(path).finetune.lr  # flags not given leave params alone
    with pytest.raises(LadedaError, match="`finetune.epochs` must be >= 1"):
        stage_params("x", flags, ["--params", str(path), "--epochs", "-2"])



def test_robustness_strengths_must_be_distinct_and_in_range():
    for over, key in (({"jpeg_quality": [90, 90]}, "`robustness.jpeg_quality` lists a value twice"),
                      ({"resize_scale": [1.5]}, "`robustness.resize_scale.0` must be < 1"),
                      ({"social_media": {"jpeg_quality": 0}}, "`robustness.social_media.jpeg_quality` must be >= 1")):
        with pytest.raises(LadedaError, match=re.escape(key)):
            params_from_dict(project_params({"robustness": over}))
