"""Deterministic DataLoaders of a data split: seeded shuffling, and full-size test images batched by size."""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from ladeda.core.params import DataParams
from ladeda.data.folders import LabeledImages
from ladeda.data.transforms import build_transform


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images have the same output size, so full-size images of mixed sizes batch.

    With `shuffle`, indices within each size and the order of batches are shuffled by `generator`
    (a new order every epoch, the same sequence for the same seed); without, batches follow index order.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size, self.shuffle, self.generator, self.drop_last = batch_size, shuffle, generator, drop_last
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            buckets.setdefault(tuple(size), []).append(i)
        self.buckets = list(buckets.values())  # in order of first appearance

    def _batches(self, indices: list[int]) -> list[list[int]]:
        out = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = []
        for bucket in self.buckets:
            if self.shuffle:
                bucket = [bucket[i] for i in torch.randperm(len(bucket), generator=self.generator).tolist()]
            batches += self._batches(bucket)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return iter(batches)

    def __len__(self) -> int:
        if self.drop_last:
            return sum(len(b) // self.batch_size for b in self.buckets)
        return sum(math.ceil(len(b) / self.batch_size) for b in self.buckets)


def make_loader(dataset: LabeledImages, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A deterministic DataLoader (seeded generator); mixed output sizes are batched by size, never mixed.

    Items are (tensor, label, index) so callers can map scores back to `dataset.samples` whatever the order.
    """
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, generator=generator, persistent_workers=False)
    sizes = dataset.output_sizes() if hasattr(dataset, "output_sizes") else None
    if sizes is None or len(set(sizes)) <= 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)
    sampler = SizeBucketBatchSampler(sizes, batch_size, shuffle, generator, drop_last)
    return DataLoader(dataset, batch_sampler=sampler, **common)


def reseed_loader(loader: Any, seed: int) -> None:
    """Reseed the shuffling generators a DataLoader or its (batch) sampler holds, so its next pass is reproducible."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)


def split_loader(data: DataParams, root: str, split: str, batch_size: int, seed: int,
                 exclude: Iterable[str] = ()) -> DataLoader:
    """Loader of `{root}/{split}` with the split's transform (train: crop+flip, shuffled; val/test: fixed).

    `exclude`: paths relative to `root` to leave out (the files the data check found unreadable);
    the printed split summary counts them.
    """
    mode = "train" if split == "train" else ("val" if split == "val" else "test")
    transform = build_transform(mode, data.crop_size, data.load_size, even=True, blur_prob=data.blur_prob,
                                blur_sigma=data.blur_sigma, jpeg_prob=data.jpeg_prob,
                                jpeg_quality=data.jpeg_quality)
    dataset = LabeledImages.from_split(root, split, transform, exclude)
    print(f"{root}: {dataset.scan.summary()}")
    return make_loader(dataset, batch_size, shuffle=mode == "train", seed=seed, num_workers=data.num_workers)
