"""Reproducibility matrix: the default pipeline on several data seeds under emulated CPU variants.

Not a test: float rounding differs between CPUs (vector width, oneDNN kernels) and thread counts, and
on data this small that moves the AUCs. This runs `dvc repro -f` in a fresh clone of HEAD for every
(data seed, variant) pair and prints a Markdown table of the three gate decisions and the AUCs, plus
the spread of each AUC across the variants of a seed. Paste it into the README.

    .venv/bin/python benchmarks/variants.py                       # seeds 0 1 2, every variant, 2 at a time
    .venv/bin/python benchmarks/variants.py --seeds 0 --jobs 1 --json variants.json
    .venv/bin/python benchmarks/variants.py --until evaluate_teacher --set finetune.ema=0.99   # try a change
    .venv/bin/python benchmarks/variants.py --seeds 0 --until evaluate_teacher \
        --try finetune.lr=1.5e-4 finetune.unfreeze_blocks=4,finetune.epochs=8    # several, one matrix each

Variants: the native kernels with 1 and 2 threads, ATen's AVX2 and scalar (`default`) kernels, and
oneDNN limited to AVX2 (each with 1 thread). Two single-thread runs at a time keep both cores busy,
which is also the "other core busy" check; 2-thread runs then share their cores (with passive OpenMP
waiting, so they do not spin), which changes the timing but not the numbers.

`--try` compares recipes: after the committed params, each candidate (comma-separated KEY=VALUE changes)
runs `dvc repro` in the same clone, so only the stages it changes rerun; one matrix per candidate.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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
VARIANTS = {
    "native, 1 thread": {"OMP_NUM_THREADS": "1"},
    "native, 2 threads": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},  # no spinning beside another run
    "ATen AVX2, 1 thread": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    "ATen scalar, 1 thread": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"},
    "oneDNN AVX2, 1 thread": {"OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
AUCS = ("diagnose_val", "finetuned_val", "teacher_test", "student_test")
DECISIONS = ("finetuned", "recommendation")  # what the gates do; the diagnose band label is reported beside them


def set_params(params_file: Path, base: dict, changes: dict[str, object]) -> None:
    """Write `base` with the dotted-key `changes` applied to params.yaml."""
    params = copy.deepcopy(base)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        section = params
        for name in parents:
            section = section[name]
        section[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def collect(clone: Path, seed: int, variant: str, candidate: str, seconds: float) -> dict:
    """The gate decisions and AUCs one run wrote to metrics/."""
    m = {name: json.loads(path.read_text()) if (path := clone / f"metrics/{name}.json").is_file() else {}
         for name in ("diagnose", "finetune_teacher", "evaluate_teacher", "evaluate_student", "evaluate_robustness")}
    return {"seed": seed, "variant": variant, "candidate": candidate, "seconds": round(seconds),
            "diagnose_val": m["diagnose"].get("val_auc", math.nan), "band": m["diagnose"].get("band"),
            "finetuned": m["finetune_teacher"].get("finetuned"),
            "finetuned_val": m["evaluate_teacher"].get("val_auc", math.nan),
            "teacher_test": m["evaluate_teacher"].get("test_auc", math.nan),
            "recommendation": m["evaluate_teacher"].get("recommendation"),
            "student_test": m["evaluate_student"].get("student_test_auc", math.nan),
            "robustness": {name: {model: c[model]["auc"] for model in ("teacher", "student")}
                           for name, c in m["evaluate_robustness"].get("conditions", {}).items()},
            "robustness_drop_significant": {name: {model: c[model].get("drop_significant") for model in
                                                   ("teacher", "student")}
                                            for name, c in m["evaluate_robustness"].get("conditions", {}).items()}}


def run_one(seed: int, variant: str, workdir: Path, overrides: dict[str, object], until: str,
            candidates: dict[str, dict[str, object]]) -> list[dict]:
    """Clone HEAD, set the data seed and overrides, `dvc repro -f` under the variant's environment, collect
    the metrics; then, in the same clone, `dvc repro` each candidate's changes (only its stages rerun)."""
    clone = workdir / f"seed{seed}-{variant.split(',')[0].replace(' ', '_')}-{VARIANTS[variant]['OMP_NUM_THREADS']}t"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    params_file = clone / "params.yaml"
    base = yaml.safe_load(params_file.read_text())
    for stale in (clone / "metrics").glob("*.json"):  # the committed results: a stage not run must not report
        stale.unlink()
    env = {**os.environ, **VARIANTS[variant], "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(clone / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    rows = []
    for n, (name, changes) in enumerate({"committed": {}, **candidates}.items()):
        set_params(params_file, base, {"prepare_data.seed": seed, **overrides, **changes})
        t0 = time.perf_counter()
        proc = subprocess.run(["dvc", "repro", *(["-f"] if n == 0 else []), until], cwd=clone, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append({"seed": seed, "variant": variant, "candidate": name,
                         "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(row := collect(clone, seed, variant, name, seconds))
        print(f"seed {seed}, {variant}, {name}: "
              f"{json.dumps({k: v for k, v in row.items() if not k.startswith('robustness')})}", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The matrix and, per seed, whether every variant decided alike and how far each AUC spread; one of each
    per candidate recipe."""
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    if len(names) > 1:
        return "\n\n".join(f"**{name}**\n\n" + markdown([r for r in rows if r["candidate"] == name])
                           for name in names)
    lines = ["| seed | variant | diagnose val AUC (band) | fine-tuned val AUC | teacher test AUC | "
             "recommendation | student test AUC |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seed']} | {r['variant']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['seed']} | {r['variant']} | {r['diagnose_val']:.3f} ({r['band']}) | "
                     f"{r['finetuned_val']:.3f} | {r['teacher_test']:.3f} | {r['recommendation']} | "
                     f"{r['student_test']:.3f} |")
    lines += ["", "| seed | gate decisions (fine-tune? / recommendation) identical | diagnose bands | spread (max - min): "
              + " / ".join(AUCS) + " |", "|---|---|---|---|"]
    for seed in sorted({r["seed"] for r in rows}):
        ok = [r for r in rows if r["seed"] == seed and "error" not in r]
        same = len({tuple(r[k] for k in DECISIONS) for r in ok}) == 1
        bands = ", ".join(f"{b} x{sum(r['band'] == b for r in ok)}" for b in sorted({r["band"] for r in ok}))
        spread = " / ".join(f"{max(r[k] for r in ok) - min(r[k] for r in ok):.3f}" for k in AUCS)
        lines.append(f"| {seed} | {'yes' if same else 'NO'} | {bands} | {spread} |")
    return "\n".join(lines)


def robustness_markdown(rows: list[dict]) -> str:
    """Per degradation: teacher and student test AUC, min-max over the runs (and the median), when the runs reached
    `evaluate_robustness`."""
    ok = [r for r in rows if r.get("robustness") and r["candidate"] == "committed"]
    if not ok:
        return ""
    lines = [f"Robustness over {len(ok)} runs (min - max, median in brackets):", "",
             "| condition | teacher test AUC | student test AUC |", "|---|---|---|"]
    for name in ok[0]["robustness"]:
        cells = []
        for model in ("teacher", "student"):
            v = sorted(r["robustness"][name][model] for r in ok if name in r["robustness"])
            cells.append(f"{v[0]:.3f} - {v[-1]:.3f} ({v[len(v) // 2]:.3f})")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="prepare_data.seed values")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="params to change in every run (dotted keys, YAML values), e.g. finetune.ema=0.99")
    ap.add_argument("--try", dest="candidates", nargs="+", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="candidate recipes, each run after the committed params in the same clone")
    ap.add_argument("--until", default="report", help="the last stage to run (default: the whole pipeline)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())

    def parse(items: list[str], flag: str) -> dict[str, object]:
        """Dotted KEY=VALUE items -> {key: YAML value}; a key params.yaml lacks is an argparse error."""
        changes = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                ap.error(f"{flag} {item}: use KEY=VALUE, e.g. finetune.ema=0.99")
            changes[key] = yaml.safe_load(value)
            section = committed
            for name in key.split("."):
                if not isinstance(section, dict) or name not in section:
                    ap.error(f"{flag} {item}: params.yaml has no key `{key}`")
                section = section[name]
        return changes

    overrides = parse(args.set, "--set")
    candidates = {c: parse(c.split(","), "--try") for c in args.candidates}
    print(f"machine: {machine_description()}; changed params: {overrides or 'none'}", flush=True)
    pairs = [(s, v) for s in args.seeds for v in args.variants]
    with tempfile.TemporaryDirectory(prefix="ladeda-variants-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = [r for runs in pool.map(lambda sv: run_one(sv[0], sv[1], Path(tmp), overrides, args.until, candidates),
                                       pairs) for r in runs]
    print("\n" + markdown(rows) + "\n\n" + robustness_markdown(rows))
    if args.json:
        write_json(args.json, {"machine": machine_description(), "changed_params": overrides,
                               "candidates": candidates, "rows": rows})


if __name__ == "__main__":
    main()
