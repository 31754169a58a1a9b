"""User-facing errors: one clear line naming the file or key and what to do, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class LadedaError(Exception):
    """A problem with the user's input (params, data, checkpoints) that the user can fix."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line entry point, turning LadedaError into `error: ...` and exit status 2."""
    try:
        main()
    except LadedaError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
