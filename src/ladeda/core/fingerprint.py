"""Content fingerprints of a stage's upstream inputs, so an interrupted run resumes only against the same inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (checkpoints: a retrained teacher gives another digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(root: str | os.PathLike) -> str:
    """SHA-256 of a data folder's listing: every file's relative path, size and modification time.

    Cheap on large datasets (no image is read); replacing, adding or removing a file changes it. A file
    that was only touched changes it too, which makes a resume start fresh: the safe direction.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            st = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def inputs_digest(*paths: str | os.PathLike) -> dict[str, str]:
    """{path: digest} of the given files and folders (a missing one is recorded as such)."""
    out = {}
    for p in paths:
        path = Path(p)
        out[str(p)] = (folder_digest(path) if path.is_dir() else file_digest(path) if path.is_file() else "missing")
    return out
