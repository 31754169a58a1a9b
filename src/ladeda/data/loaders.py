"""Deterministic DataLoaders of a data split: seeded shuffling, and full-size test images batched by size."""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from ladeda.core.params import DataParams
from ladeda.data.decoded import DECODED_BYTES, DecodedImages
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


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """Batches of (index, augmentation seed): each item's random transform draws from its own seed.

    The seeds come from `generator` (one draw per pass, then a fixed function of the index), so the
    augmentation of every image is the same whichever worker process decodes it: `num_workers` is a
    performance knob that does not change results. Reseeding `generator` replays a pass exactly.
    """

    def __init__(self, batches: Sampler[list[int]], generator: torch.Generator):
        self.batches, self.generator = batches, generator

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        base = int(torch.randint(0, 2**62, (), generator=self.generator))  # drawn before the shuffle
        for batch in self.batches:
            yield [(i, (base + 1_000_003 * i) % 2**63) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


class ShardedBatches(Sampler[list]):
    """This rank's part of every batch of `batches`, for data-parallel processes (`runtime.nproc` > 1).

    `split` (training): each batch is dealt item by item over the ranks (`batch[rank::world]`), so together the
    ranks see exactly the batches, images and augmentation seeds one process would: `batch_size` stays the
    global batch, and the per-epoch reseed of the shared generator plays DistributedSampler.set_epoch's part.
    A batch with fewer items than ranks (a short last batch) would leave a rank without data, which DDP cannot
    step: it is left out, and rank 0 prints how many images that was. `deal` (evaluation): whole batches go
    round the ranks (batch i to rank i % world); scores are gathered afterwards (`evaluation.scoring`).
    """

    def __init__(self, batches: Sampler[list], rank: int, world: int, mode: str):
        if mode not in ("split", "deal") or not 0 <= rank < world:
            raise ValueError(f"bad shard: mode {mode!r}, rank {rank} of {world}")
        self.batches, self.rank, self.world, self.mode = batches, rank, world, mode

    @property
    def generator(self) -> torch.Generator | None:
        """The wrapped sampler's generator (what `reseed_loader` reseeds)."""
        return getattr(self.batches, "generator", None)

    def __iter__(self) -> Iterator[list]:
        left_out = 0
        for i, batch in enumerate(self.batches):
            if self.mode == "deal":
                if i % self.world == self.rank:
                    yield batch
            elif len(batch) < self.world:
                left_out += len(batch)
            else:
                yield batch[self.rank::self.world]
        if left_out and self.rank == 0:
            print(f"left out {left_out} image(s) this pass: the last batch had fewer images than the "
                  f"{self.world} training processes (choose a batch size so that the split's last batch is larger)")

    def __len__(self) -> int:
        if self.mode == "deal":
            return len(range(self.rank, len(self.batches), self.world))
        return len(self.batches)


def make_loader(dataset: LabeledImages, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, pin_memory: bool = False,
                shard: tuple[int, int] | None = None) -> DataLoader:
    """A deterministic DataLoader (seeded generator); mixed output sizes are batched by size, never mixed.

    Items are (tensor, label, index) so callers can map scores back to `dataset.samples` whatever the order.
    Shuffled (training) loaders give each item its own augmentation seed (`SeededBatches`), so results do not
    depend on `num_workers`; workers are kept alive across epochs. `shard` (rank, world size): this process's
    part of every pass (`ShardedBatches`: training batches split over the ranks, evaluation batches dealt).
    """
    generator = torch.Generator().manual_seed(seed)  # order and augmentation seeds
    # The loader's own generator only seeds worker processes; kept apart, since persistent workers draw from
    # it once while a new iterator every epoch (num_workers 0) draws each time.
    common = dict(num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                  persistent_workers=num_workers > 0, pin_memory=pin_memory)
    sizes = dataset.output_sizes() if hasattr(dataset, "output_sizes") else None
    if sizes is None or len(set(sizes)) <= 1:
        if not shuffle and shard is None:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last, **common)
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batches = BatchSampler(order, batch_size, drop_last)
    else:
        batches = SizeBucketBatchSampler(sizes, batch_size, shuffle, generator, drop_last)
    if shuffle:
        batches = SeededBatches(batches, generator)
    if shard is not None:
        batches = ShardedBatches(batches, *shard, mode="split" if shuffle else "deal")
    return DataLoader(dataset, batch_sampler=batches, **common)


def reseed_loader(loader: Any, seed: int) -> None:
    """Reseed the shuffling generators a DataLoader or its (batch) sampler holds, so its next pass is reproducible."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)


def split_loader(data: DataParams, root: str, split: str, batch_size: int, seed: int,
                 exclude: Iterable[str] = (), num_workers: int = 0, pin_memory: bool = False,
                 shard: tuple[int, int] | None = None) -> DataLoader:
    """Loader of `{root}/{split}` with the split's transform (train: crop+flip, shuffled; val/test: fixed).

    `exclude`: paths relative to `root` to leave out (the files the data check found unreadable);
    the printed split summary counts them. Decoded pixels are kept between epochs (`data.decoded`).
    `num_workers`, `pin_memory`, `shard`: see `Runtime.loader_options`.
    """
    mode = "train" if split == "train" else ("val" if split == "val" else "test")
    transform = build_transform(mode, data.crop_size, data.load_size, even=True, blur_prob=data.blur_prob,
                                blur_sigma=data.blur_sigma, jpeg_prob=data.jpeg_prob,
                                jpeg_quality=data.jpeg_quality)
    decoded = DecodedImages(DECODED_BYTES // max(1, num_workers))  # each worker process keeps its own
    dataset = LabeledImages.from_split(root, split, transform, exclude, decoded)
    print(f"{root}: {dataset.scan.summary()}")
    return make_loader(dataset, batch_size, shuffle=mode == "train", seed=seed, num_workers=num_workers,
                       pin_memory=pin_memory, shard=shard)
