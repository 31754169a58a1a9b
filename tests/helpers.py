"""Test helpers: the project's params.yaml with overrides (it is the only source of defaults)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into `base` (in place) and return it."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def project_params(overrides: dict | None = None) -> dict:
    """The project's params.yaml as a dict, with `overrides` deep-merged in."""
    return merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides or {})


def write_params(path: Path, overrides: dict | None = None) -> Path:
    """Write the project's params with `overrides` to `path` (a params.yaml for a stage run elsewhere)."""
    path.write_text(yaml.safe_dump(project_params(overrides), sort_keys=False))
    return path
