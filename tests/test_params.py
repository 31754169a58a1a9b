"""params.yaml loads into typed objects; bad keys, types and ranges are one clear error naming the key."""

from pathlib import Path

import pytest
import yaml

from ladeda.errors import LadedaError
from ladeda.params import load_params, params_from_dict, stage_params

ROOT = Path(__file__).resolve().parents[1]


def project_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_with_types():
    p = load_params(ROOT / "params.yaml")
    assert p.teacher.arch == "LaDeDa9" and isinstance(p.teacher.width, int)
    assert isinstance(p.finetune.lr, float) and p.finetune.policy in ("auto", "always", "never")
    assert p.alpha_task is None and p.task_weight == pytest.approx(1 - p.alpha_distill)
    assert p.teacher_file().path.endswith(".pth")
    assert p.teachers["forensynth"].npr_scale == pytest.approx(2 / 3, rel=1e-6)


def test_alpha_task_explicit_value_is_used():
    raw = project_params()
    raw["alpha_task"] = 0.3
    assert params_from_dict(raw).task_weight == 0.3


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.update(alpha_distil=0.1), "unknown key `alpha_distil`"),
    (lambda r: r["student"].update(epoch=3), "unknown key `student.epoch`"),
    (lambda r: r.update(alpha_distill=1.5), "`alpha_distill` must be in \\[0, 1\\]"),
    (lambda r: r.update(alpha_task=-0.1), "`alpha_task` must be null or in \\[0, 1\\]"),
    (lambda r: r["finetune"].update(epochs=-1), "`finetune.epochs` must be >= 0"),
    (lambda r: r["finetune"].update(epochs="ten"), "`finetune.epochs` must be an integer"),
    (lambda r: r["student"].update(lr=0), "`student.lr` must be > 0"),
    (lambda r: r["diagnose"].update(good=0.5, bad=0.6), "`diagnose.bad` must satisfy"),
    (lambda r: r["evaluate_teacher"].update(ready=0.5, skip=0.6), "`evaluate_teacher.skip` must satisfy"),
    (lambda r: r["finetune"].update(policy="sometimes"), "`finetune.policy` must be auto, always or never"),
    (lambda r: r.update(teacher_weights="imagenet"), "`teacher_weights` must be one of"),
    (lambda r: r["teacher"].update(preprocess="sobel"), "`teacher.preprocess` must be one of"),
    (lambda r: r["student"].update(schedule="three_stage"), "`student.schedule`"),
    (lambda r: r.update(data=[1, 2]), "`data` must be a mapping"),
    (lambda r: r["finetune"].update(unfreeze_blocks=7), "`finetune.unfreeze_blocks`"),
])
def test_bad_params_name_the_key(mutate, match):
    raw = project_params()
    mutate(raw)
    with pytest.raises(LadedaError, match=match):
        params_from_dict(raw, source="params.yaml")


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
    with pytest.raises(LadedaError, match="`finetune.epochs` must be >= 0"):
        stage_params("x", flags, ["--params", str(path), "--epochs", "-2"])
