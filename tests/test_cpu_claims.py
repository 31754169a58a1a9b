"""CPU claims: ladeda runs computing at the same time each take their share of the cores (core.cpu_claims)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ladeda.core.runtime as runtime
from ladeda.core import cpu_claims

SRC = Path(__file__).resolve().parents[1] / "src"
HOLD = "from ladeda.core import cpu_claims; import time; print(cpu_claims.claim(), flush=True); time.sleep(120)"


def start_other_run() -> subprocess.Popen:
    """Another process holding a claim (as a second `dvc queue` run's stage would) until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(SRC)})
    assert child.stdout.readline().strip() == "True"
    return child


@pytest.fixture
def other_run():
    child = start_other_run()
    yield child
    child.kill()
    child.wait()


def claim_files() -> list[str]:
    return sorted(p.name for p in cpu_claims.claims_dir().glob("*.claim"))


def test_a_claim_lasts_as_long_as_its_process(other_run):
    assert cpu_claims.active_claims() == 1  # the other run's; this process has not claimed
    assert cpu_claims.claim() and cpu_claims.claim()  # a second call keeps the one claim
    assert cpu_claims.active_claims() == 2 and len(claim_files()) == 2
    other_run.send_signal(signal.SIGKILL)  # no exit handler runs: the kernel drops its lock
    other_run.wait()
    assert cpu_claims.active_claims() == 1
    files = claim_files()
    assert len(files) == 1 and files[0].startswith(f"{os.getpid()}-")  # the stale one was removed
    cpu_claims.release()
    assert cpu_claims.active_claims() == 0 and claim_files() == []


def test_runs_computing_together_take_a_core_each(monkeypatch, other_run):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(runtime, "idle_cpus", lambda: 2)  # both started at once: both cores still look idle
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads() == 1 == torch.get_num_threads()
        other_run.kill()
        other_run.wait()
        assert runtime.configure_threads() == 2 == torch.get_num_threads()  # alone again: both cores
        assert runtime.auto_threads(processes=2) == 1  # two ranks of one run share them
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        cpu_claims.release()
        assert runtime.configure_threads() == 2 and cpu_claims.active_claims() == 0  # a fixed count claims nothing
    finally:
        torch.set_num_threads(before)


def test_an_unusable_claims_folder_leaves_the_load_alone_to_decide(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LADEDA_CPU_CLAIMS_DIR", str(tmp_path / "file" / "claims"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(runtime, "idle_cpus", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert not cpu_claims.claim() and cpu_claims.active_claims() == 0
        assert runtime.configure_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_run_gives_up_cores_as_soon_as_another_starts(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: [0, 1])
    rt = runtime.Runtime(torch.device("cpu"), "fp32", 0, 2, auto_threads=True)
    fixed = runtime.Runtime(torch.device("cpu"), "fp32", 0, 2)
    before = torch.get_num_threads()
    try:
        assert cpu_claims.claim()
        torch.set_num_threads(2)
        rt.share_threads()
        assert torch.get_num_threads() == 2  # alone: keeps both cores
        child = start_other_run()
        fixed.share_threads()
        assert torch.get_num_threads() == 2  # a fixed thread count is left alone
        rt.share_threads()
        assert torch.get_num_threads() == 1  # the next step already runs on one core
        child.kill()
        child.wait()
        rt.share_threads()
        assert torch.get_num_threads() == 1  # taking cores back waits for retune_threads (load sampled)
    finally:
        torch.set_num_threads(before)
