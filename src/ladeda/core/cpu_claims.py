"""Which ladeda processes are computing on this machine's CPUs right now, so that each takes its share of the cores.

Two runs started at the same moment (`dvc queue start -j 2`) both find the cores idle; sampling the load alone
lets both take every core, and then their OpenMP threads stall each other. So every process that picks its
thread count automatically holds a claim: a file in a machine-wide folder (`LADEDA_CPU_CLAIMS_DIR`, default
`<tmp>/ladeda-cpu-claims`) with an exclusive lock (flock) on it for as long as the process lives. The kernel
drops the lock when the process ends, however it ends, so a claim whose lock can be taken is stale and is
removed by whoever finds it. Where the folder or flock is unavailable, nothing is claimed or counted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no claims, thread counts come from the load alone
    fcntl = None

ENV_DIR = "LADEDA_CPU_CLAIMS_DIR"
_held: tuple[int, Path] | None = None  # this process's locked claim: (file descriptor, path)


def claims_dir() -> Path:
    """The folder of claims: `LADEDA_CPU_CLAIMS_DIR`, else `ladeda-cpu-claims` in the system temp folder."""
    return Path(os.environ.get(ENV_DIR) or Path(tempfile.gettempdir()) / "ladeda-cpu-claims")


def claim() -> bool:
    """Hold this process's claim until it exits or calls `release` (again: no-op); False where none can be held."""
    global _held
    if _held is not None:
        return True
    if fcntl is None:
        return False
    folder = claims_dir()
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = folder / f".{name}.tmp"
    try:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.chmod(0o1777)  # every user's processes claim here; each removes only its own
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = tmp.with_name(f"{name}.claim")
        os.rename(tmp, path)  # locked before it is visible, so no one takes it for stale
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    _held = (fd, path)
    atexit.register(release)
    return True


def release() -> None:
    """Give up this process's claim (at exit, or when a long-lived process stops computing)."""
    global _held
    if _held is None:
        return
    fd, path = _held
    _held = None
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def active_claims() -> int:
    """Claims of live processes, this one's included; the stale claims found are removed."""
    if fcntl is None:
        return 0
    try:
        paths = list(claims_dir().glob("*.claim"))
    except OSError:
        return 0
    live = 0
    for path in paths:
        if _held is not None and path == _held[1]:
            live += 1
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # released meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            live += 1  # its process holds the lock: alive
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # names are never reused, so this is the stale file itself
        finally:
            os.close(fd)
    return live
