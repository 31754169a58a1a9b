"""The user's data as the stages load it: `data.root`'s splits without the files `check_data` found unreadable."""

from __future__ import annotations

from torch.utils.data import DataLoader

from ladeda.core.outputs import read_metrics
from ladeda.core.params import Params
from ladeda.core.runtime import CPU, Runtime
from ladeda.data.check import unreadable_files
from ladeda.data.loaders import split_loader


def checked_loader(p: Params, split: str, batch_size: int, runtime: Runtime = CPU) -> DataLoader:
    """Loader of `{data.root}/{split}`; files the data check reported unreadable (within its tolerance) are
    skipped and counted in the split summary, so one bad file cannot crash a long run."""
    skip = unreadable_files(read_metrics("check_data"))
    return split_loader(p.data, p.data.root, split, batch_size, p.seed, exclude=skip, **runtime.loader_options())


def skipped_unreadable(*loaders: DataLoader) -> int:
    """How many files the given `checked_loader`s left out as unreadable (the stages report it in their metrics)."""
    return sum(len(loader.dataset.scan.excluded) for loader in loaders)
