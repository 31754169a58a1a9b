"""DVCLive wiring shared by the training stages (kept out of the library, which takes plain callbacks)."""

from __future__ import annotations

from contextlib import contextmanager

from dvclive import Live


@contextmanager
def epoch_logger(directory, enabled: bool = True):
    """Yield `log(row)`: one DVCLive step per epoch under `directory` (<directory>/plots/metrics/*.tsv).

    The step is the row's `epoch` (1-based), or counts on from the previous row when it has none.
    `enabled=False` (training processes other than rank 0) yields a `log` that writes nothing.
    """
    if not enabled:
        yield lambda row: None
        return
    with Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        def log(row: dict) -> None:
            if "epoch" in row:
                live.step = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()
        yield log
