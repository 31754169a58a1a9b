"""Thread policy: wall time of the pretrain_teacher stage with 1 thread, 2 threads and `auto`, on an idle machine
and with another CPU-bound job on a second core.

Not a test: run it on the machine you care about and paste the printed Markdown into the README.

    .venv/bin/python benchmarks/threads.py [--epochs 1]     # after `dvc repro` has built data/default

The stage runs as DVC would (`python stages/pretrain_teacher.py`) in a temporary folder
that links the repository's data/, with `runtime.threads` set per row and `pretrain.epochs` cut to
`--epochs`; everything it writes stays in that folder. The busy rows start one pure-Python spin
loop per extra core, which is what a second experiment or a test run on the other core looks like
to OpenMP.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ladeda.evaluation.efficiency import load_average, machine_description

ROOT = Path(__file__).resolve().parents[1]


def spin(stop) -> None:
    """Keep one core busy until `stop` is set."""
    while not stop.is_set():
        sum(range(10_000))


def run_stage(params: dict, threads, folder: Path, timeout: float) -> float | None:
    """Seconds one run of pretrain_teacher takes in `folder` with `runtime.threads = threads` (None: over `timeout`)."""
    params = {**params, "runtime": {**params["runtime"], "threads": threads}}
    (folder / "data").symlink_to(ROOT / "data")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, str(ROOT / "stages/pretrain_teacher.py")], cwd=folder, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound jobs started for the busy rows")
    ap.add_argument("--timeout", type=float, default=120.0, help="a run slower than this is cut and shown as > it")
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["pretrain"] = {**params["pretrain"], "epochs": args.epochs}
    if not (ROOT / params["data"]["source_root"]).is_dir():
        sys.exit(f"error: {params['data']['source_root']} not found: run `dvc repro prepare_data` first")
    print(f"machine: {machine_description()}; load before: {load_average()}; pretrain_teacher, {args.epochs} epoch(s)")
    print("| other cores | threads | seconds |\n| --- | --- | --- |")
    for busy in (0, args.busy):
        stop = mp.Event()
        jobs = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
        for job in jobs:
            job.start()
        time.sleep(1.0)  # let the spinners show up in /proc/stat before `auto` samples it
        for threads in (1, 2, "auto"):
            with tempfile.TemporaryDirectory(prefix="ladeda-threads-") as tmp:
                seconds = run_stage(params, threads, Path(tmp), args.timeout)
            shown = f"{seconds:.1f}" if seconds is not None else f"> {args.timeout:.0f} (cut)"
            print(f"| {'idle' if not busy else f'{busy} busy'} | {threads} | {shown} |", flush=True)
        stop.set()
        for job in jobs:
            job.join()


if __name__ == "__main__":
    main()
