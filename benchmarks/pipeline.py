"""Pipeline benchmark: wall time of every stage of `dvc repro` from a fresh clone, and of an experiment.

Not a test: run it on an otherwise idle machine and paste the printed Markdown into the README.

    .venv/bin/python benchmarks/pipeline.py                    # clone HEAD to a temp dir, time it there
    .venv/bin/python benchmarks/pipeline.py --json timings.json

It clones the committed HEAD of this repository (nothing of the working tree), runs `dvc repro` there
and takes each stage's time from when DVC announces it, then times `dvc exp run --temp -S
alpha_distill=0.1` on top. Goals (2 cores): whole pipeline <= 300 s, teacher half (pretrain_teacher,
diagnose, finetune_teacher, evaluate_teacher) <= 180 s, the experiment <= 35% of the whole pipeline.
The load averages are printed before and after: other processes on the same cores slow every
stage down. `--busy` keeps one core busy with another CPU-bound process the whole time (what a second
job, a test run or `dvc queue start -j 2` does to the pipeline).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ladeda.evaluation.efficiency import load_average, machine_description
from ladeda.core.files import write_json

ROOT = Path(__file__).resolve().parents[1]
TEACHER_HALF = ("pretrain_teacher", "diagnose", "finetune_teacher", "evaluate_teacher")
GOALS = {"pipeline_s": 300.0, "teacher_half_s": 180.0, "experiment_share": 0.35}
STAGE_LINE = re.compile(r"(?:Running stage|Stage) '([^']+)'")


def timed_run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Run `cmd`, return its wall time and the seconds from each stage's announcement to the next one."""
    t0 = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            m = STAGE_LINE.search(line)
            if m:
                marks.append((m.group(1), time.perf_counter()))
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: `{' '.join(cmd)}` failed (exit {proc.returncode}) in {cwd}")
    ends = [t for _, t in marks[1:]] + [t0 + total]
    return total, {name: end - start for (name, start), end in zip(marks, ends)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the timings as JSON here")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with a CPU-bound process meanwhile")
    args = ap.parse_args()
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "bench"), ("EMAIL", "bench@localhost"))}  # exp run commits
    print(f"machine: {machine_description()}; load before: {load_average()}", flush=True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    with tempfile.TemporaryDirectory(prefix="ladeda-bench-") as tmp, _stopped_at_exit(busy):
        clone = Path(tmp) / "ladeda"
        env = {**identity, **os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(clone / "src"),  # the clone's code
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        pipeline_s, stages = timed_run(["dvc", "repro"], clone, env)
        experiment_s, exp_stages = timed_run(["dvc", "exp", "run", "--temp", "-S", "alpha_distill=0.1"], clone, env)
    teacher_half_s = sum(stages.get(s, 0.0) for s in TEACHER_HALF)
    result = {"machine": machine_description(), "other_core_busy": args.busy, "pipeline_s": pipeline_s,
              "teacher_half_s": teacher_half_s,
              "experiment_s": experiment_s, "experiment_share": experiment_s / pipeline_s,
              "stages_s": stages, "experiment_stages_s": exp_stages, "load_after": load_average()}
    print("\n| stage | seconds |\n|---|---|")
    for name, sec in stages.items():
        print(f"| {name} | {sec:.0f} |")
    print(f"| **dvc repro** (goal <= {GOALS['pipeline_s']:.0f}) | **{pipeline_s:.0f}** |")
    print(f"| **teacher half** (goal <= {GOALS['teacher_half_s']:.0f}) | **{teacher_half_s:.0f}** |")
    print(f"| **dvc exp run --temp -S alpha_distill=0.1** (goal <= 35%) | **{experiment_s:.0f} "
          f"({result['experiment_share']:.0%})** |")
    print(f"\nload after: {result['load_after']}")
    if args.json:
        write_json(args.json, result)


@contextlib.contextmanager
def _stopped_at_exit(process: subprocess.Popen | None):
    """Kill `process` (the --busy load) when the block ends, however it ends."""
    try:
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
