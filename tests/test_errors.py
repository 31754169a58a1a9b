"""The command-line entry point `run_cli`: what it does to the process around the stage's main()."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs after run_cli's handler
from ladeda.core.errors import run_cli
for _ in range(2):
    run_cli(lambda: print("frozen while running:", gc.get_freeze_count() > 0))
"""


def test_run_cli_freezes_the_heap_out_of_the_garbage_collector_only_at_exit():
    """gc.freeze runs once, at exit (so the interpreter's final collections skip torch's objects), never before."""
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["frozen while running: False"] * 2 + ["frozen at exit: True"]
