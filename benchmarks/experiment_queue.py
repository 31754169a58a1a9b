"""Two experiments at once on 2 cores: `dvc queue start -j 2` against the same two `dvc exp run`s one after another.

Not a test: run it in a repository where `dvc repro` is up to date, on an otherwise idle machine.

    .venv/bin/python benchmarks/experiment_queue.py [--values 0.2 0.3]

Each experiment changes `alpha_distill`, so it reruns train_student, evaluate_student, evaluate_robustness
and report. The sequential pair runs with `dvc exp run --temp`; the parallel pair is queued with
`dvc exp run --queue` and started with `dvc queue start -j 2`; the time is until the queue is empty.
The experiments are removed afterwards. With `runtime.threads: auto` each stage takes the cores the
other one leaves idle, so the pair should take no longer in parallel than in sequence.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from ladeda.evaluation.efficiency import load_average, machine_description

ROOT = Path(__file__).resolve().parents[1]


def dvc(*args: str, env: dict) -> str:
    out = subprocess.run(["dvc", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=float, nargs=2, default=[0.2, 0.3], help="the two alpha_distill values")
    args = ap.parse_args()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    print(f"machine: {machine_description()}; load before: {load_average()}", flush=True)
    t0 = time.perf_counter()
    for value in args.values:
        dvc("exp", "run", "--temp", "-S", f"alpha_distill={value}", env=env)
    sequential = time.perf_counter() - t0
    print(f"one after another: {sequential:.0f} s", flush=True)
    for value in args.values:
        dvc("exp", "run", "--queue", "-S", f"alpha_distill={value}", env=env)
    t0 = time.perf_counter()
    dvc("queue", "start", "-j", "2", env=env)
    while any(state in dvc("queue", "status", env=env) for state in ("Running", "Queued")):
        time.sleep(2)
    parallel = time.perf_counter() - t0
    status = dvc("queue", "status", env=env)
    print(f"dvc queue start -j 2: {parallel:.0f} s ({parallel / sequential:.0%} of one after another)")
    print(status)
    dvc("exp", "remove", "--all-commits", env=env)
    dvc("queue", "remove", "--all", env=env)
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
