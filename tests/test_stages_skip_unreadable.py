"""End to end without DVC: a training file that cannot be decoded (within `data.max_unreadable_fraction`)
is reported by check_data, skipped by every stage that reads `data.root`, counted in their metrics, and
never crashes a run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_params
from test_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STAGES = ["check_data", "pretrain_teacher", "diagnose", "finetune_teacher", "evaluate_teacher", "train_student",
          "evaluate_student"]


def stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_an_unreadable_training_file_is_skipped_by_every_stage(tmp_path):
    write_params(tmp_path / "params.yaml", {**TINY, "data": {**TINY["data"], "max_unreadable_fraction": 0.05}})
    assert stage("prepare_data", tmp_path).returncode == 0
    (tmp_path / "data/default/target/train/1_fake/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    for name in STAGES:
        proc = stage(name, tmp_path)
        assert proc.returncode == 0, f"{name}:\n{proc.stderr[-2000:]}"
    metrics = {n: json.loads((tmp_path / f"metrics/{n}.json").read_text()) for n in STAGES}
    assert metrics["check_data"]["totals"]["unreadable"] == 1 and metrics["check_data"]["ok"]
    assert metrics["finetune_teacher"]["skipped_unreadable"] == 1  # train split
    assert metrics["train_student"]["skipped_unreadable"] == 1
    assert metrics["diagnose"]["skipped_unreadable"] == 0 and metrics["evaluate_student"]["skipped_unreadable"] == 0
    assert (tmp_path / "weights/student/student_best.pt").is_file()
