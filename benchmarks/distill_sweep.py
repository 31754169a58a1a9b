"""Distillation sweep: the alpha progression and target spaces as DVC experiments, on several data seeds.

Not a test. For every data seed (`prepare_data.seed`) this clones HEAD, runs `dvc repro evaluate_student`
(the committed default, the baseline), then one `dvc exp run evaluate_student -S ...` per setting, and
prints a Markdown table: student test AUC with its 95% interval, student / teacher test AUC, test patch
agreement (Pearson, aligned student vs teacher patch logits) and the distillation share of the loss in
the last epoch. Seeds run side by side (`--jobs`), each with `--threads` torch threads.

    .venv/bin/python benchmarks/distill_sweep.py                    # seeds 0 1 2, 2 at a time, 1 thread each
    .venv/bin/python benchmarks/distill_sweep.py --seeds 1 --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ladeda.core.files import write_json
from ladeda.evaluation.efficiency import machine_description

ROOT = Path(__file__).resolve().parents[1]
# name -> (distill.target, alpha_distill, student.schedule), set with `dvc exp run -S` (every key each time: an
# experiment run in the workspace leaves its params there). The baseline is the committed params.yaml.
SETTINGS = {
    "standardized, alpha 0 (BCE only)": ("standardized", 0, "single_stage"),
    "standardized, alpha 0.05": ("standardized", 0.05, "single_stage"),
    "standardized, alpha 0.1": ("standardized", 0.1, "single_stage"),
    "standardized, alpha 0.5": ("standardized", 0.5, "single_stage"),
    "raw, alpha 0.05, two_stage": ("raw", 0.05, "two_stage"),
    "standardized, alpha 0.1, two_stage": ("standardized", 0.1, "two_stage"),
}


def sh(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {cwd}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def row(clone: Path, seed: int, name: str, seconds: float) -> dict:
    ev = json.loads((clone / "metrics/evaluate_student.json").read_text())
    tr = json.loads((clone / "metrics/train_student.json").read_text())
    overall = ev["student"]["test"]["overall"]
    return {"seed": seed, "setting": name, "seconds": round(seconds), "student_test_auc": ev["student_test_auc"],
            "ci_low": overall["auc_ci_low"], "ci_high": overall["auc_ci_high"], "auc_ratio": ev["auc_ratio"],
            "patch_agreement": ev["patch_agreement"], "patch_agreement_spearman": ev["patch_agreement_spearman"],
            "share_distill": tr.get("share_distill", 0.0), "p_vs_teacher": ev["auc_difference_p_value"]}


def run_seed(seed: int, workdir: Path, threads: int, settings: list[str]) -> list[dict]:
    """Baseline repro and one experiment per setting in a fresh clone with `prepare_data.seed = seed`."""
    clone = workdir / f"seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(clone / "src"),
           "GIT_AUTHOR_NAME": "sweep", "GIT_AUTHOR_EMAIL": "sweep@example.com", "GIT_COMMITTER_NAME": "sweep",
           "GIT_COMMITTER_EMAIL": "sweep@example.com",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    sh(["git", "clone", "-q", str(ROOT), str(clone)], workdir, env)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["prepare_data"]["seed"] = seed
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.perf_counter()
    sh(["dvc", "repro", "evaluate_student"], clone, env)
    base = f"{params['distill']['target']}, alpha {params['alpha_distill']:g} (committed default)"
    rows = [row(clone, seed, base, time.perf_counter() - t0)]
    sh(["git", "add", "-A"], clone, env)
    sh(["git", "commit", "-qm", f"seed {seed} baseline"], clone, env)
    for name in settings:
        t0 = time.perf_counter()
        target, alpha, schedule = SETTINGS[name]
        sets = ["-S", f"distill.target={target}", "-S", f"alpha_distill={alpha}", "-S", f"student.schedule={schedule}"]
        sh(["dvc", "exp", "run", "evaluate_student", *sets], clone, env)
        rows.append(row(clone, seed, name, time.perf_counter() - t0))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| seed | setting | student test AUC (95% CI) | student / teacher | patch agreement (Pearson / Spearman) "
             "| distillation share |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['setting']} | {r['student_test_auc']:.3f} ({r['ci_low']:.3f}-"
                     f"{r['ci_high']:.3f}) | {r['auc_ratio']:.2f} | {r['patch_agreement']:.3f} / "
                     f"{r['patch_agreement_spearman']:.3f} | {r['share_distill']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--jobs", type=int, default=2, help="seeds at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    print(f"machine: {machine_description()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ladeda-sweep-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        per_seed = list(pool.map(lambda s: run_seed(s, Path(tmp), args.threads, args.settings), args.seeds))
    rows = [r for seed_rows in per_seed for r in seed_rows]
    print("\n" + markdown(rows))
    if args.json:
        write_json(args.json, {"machine": machine_description(), "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
