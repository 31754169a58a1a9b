"""Atomic file writes (a temporary file beside the target, then a rename) and up-front output-path checks."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ladeda.core.errors import LadedaError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to `path`, else delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise LadedaError(f"cannot write {path}: {err.strerror or err}; choose another location") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        if Path(tmp).exists():
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` atomically, through an open file so the bytes do not depend on the temporary file's name
    (torch names the archive after the file): identical objects give identical files."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Delete temporary files a killed `atomic_path(path)` left beside `path`; return how many."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def check_output(path: str | os.PathLike, option: str, *, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work is done; returns it absolute.

    `path` is a file to write, or with `folder` a folder to write files under (made if missing). A file
    must not be an existing folder and a folder not an existing file; the nearest existing folder above
    (or the folder itself) must be a folder, not a file, and writable. Each problem is one LadedaError
    line naming `option` (e.g. `--out`) and the path.
    """
    path = Path(os.path.abspath(path))
    if folder and path.exists() and not path.is_dir():
        raise LadedaError(f"{option} {path} is a file, not a folder; give a folder to write into")
    if not folder and path.is_dir():
        raise LadedaError(f"{option} {path} is a folder; give the path of a file to write, e.g. {path / '<name>'}")
    existing = path if folder else path.parent
    while not existing.exists():  # stops at the root at the latest
        existing = existing.parent
    if not existing.is_dir():
        raise LadedaError(f"{option} {path}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LadedaError(f"{option} {path}: folder {existing} is not writable; choose a writable location")
    return path


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write indented JSON atomically (NaN/inf become null, so the file is strict JSON)."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
