"""Where each stage's results go: `metrics/<stage>.json` (quality, deterministic), `metrics/timings/<stage>.json`
(wall-clock measurements, not declared as DVC metrics) and `plots/<stage>/`.

dvc.yaml declares the same files (tests/test_dvc_yaml.py checks every stage against `metrics_path` and
`plots_dir`); checkpoint paths come from the `paths` section of params.yaml, which dvc.yaml reads too.
"""

from __future__ import annotations

import json
from pathlib import Path

from ladeda.core.errors import LadedaError
from ladeda.core.files import write_json

METRICS_DIR = "metrics"
TIMINGS_DIR = Path(METRICS_DIR, "timings")  # `dvc metrics show metrics/timings/*.json` shows them
PLOTS_DIR = "plots"
REPORT = Path(METRICS_DIR, "report.md")  # teacher vs student in words and pictures, written by the report stage


def metrics_path(stage: str) -> Path:
    """The metrics file of `stage`."""
    return Path(METRICS_DIR, f"{stage}.json")


def timings_path(stage: str) -> Path:
    """The wall-clock measurements of `stage`: kept out of the quality metrics so `dvc metrics diff` of two
    runs of the same params is empty."""
    return TIMINGS_DIR / f"{stage}.json"


def write_timings(stage: str, timings: dict) -> None:
    """Write `stage`'s timings file atomically."""
    write_json(timings_path(stage), timings)


def plots_dir(stage: str) -> Path:
    """The folder of `stage`'s plot data (DVCLive logs, ROC points)."""
    return Path(PLOTS_DIR, stage)


def write_metrics(stage: str, metrics: dict) -> None:
    """Write `stage`'s metrics file atomically."""
    write_json(metrics_path(stage), metrics)


def read_metrics(stage: str) -> dict:
    """The metrics an earlier stage wrote; missing means that stage has not run."""
    path = metrics_path(stage)
    if not path.is_file():
        raise LadedaError(f"{path} not found: run `dvc repro {stage}` first")
    return json.loads(path.read_text())
