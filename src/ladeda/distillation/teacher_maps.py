"""The frozen teacher's patch maps for distillation, remembered by input content when the inputs repeat.

A distillation run asks the teacher for the map of every training image once per epoch (and once more for
the teacher scale), and on data whose training transform leaves only the horizontal flip to chance (the
default: 64-px images, 64-px crops) those are the same two tensors per image every time. Computing each
distinct input once and reusing its map takes the teacher's share of the default's distillation epochs
from 11 passes over the images to about 2 (README, Decisions).

A cached map must equal the map the teacher would give now, or a run's numbers would depend on what
happened to be cached (an interrupted run resumes with an empty cache). The batched fast path is not
batch-invariant (a map differs in its last bits with the batch it was computed in), so with the cache
on every map is computed from its image alone, whether or not it is then kept. That is the same speed
as batching at 224 px and about 1.7x slower per image at 64 px, which the reuse repays about threefold.
Without the cache (inputs that do not repeat, or a GPU) maps are computed batched.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ladeda.models.fastpath import optimize_for_inference

CACHE_BYTES = 512 << 20  # maps kept at most (a 64-px map is 196 bytes, a 224-px one 2.9 kB); beyond: computed
ENTRY_OVERHEAD = 256  # bytes per kept map beyond its values (key, tensor object, dict slot), for the budget


class TeacherMaps:
    """Callable (B, 3, H, W) batch -> the teacher's (B, 1, h, w) patch maps, from its inference copy (no grad),
    on the device the teacher is on.

    `cache=True` (CPU only; ignored on a GPU, where the teacher is cheap and hashing would cost a copy)
    computes each image alone and keeps its map under a hash of the image's bytes, up to `max_bytes`.
    `computed` / `reused` count the maps made and those taken from the cache.
    """

    def __init__(self, teacher: nn.Module, *, cache: bool = False, max_bytes: int = CACHE_BYTES):
        freeze_teacher(teacher)
        self.fast = optimize_for_inference(teacher)  # an eval-only copy on the teacher's device; weights untouched
        self.cache = cache and next(self.fast.parameters()).device.type == "cpu"
        self.max_bytes = max_bytes
        self.kept: dict[bytes, torch.Tensor] = {}
        self.kept_bytes = 0
        self.computed = self.reused = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cache:
            self.computed += len(x)
            return self.fast.patch_map(x)
        maps = []
        for image in x:
            image = image.contiguous()  # default layout: what the key hashes, and a copy of a channels-last batch's
            key = _content_key(image)   # slice, so the teacher never reads an image at an offset inside a batch
            m = self.kept.get(key)
            if m is None:
                m = self.fast.patch_map(image[None])[0]
                self.computed += 1
                self._keep(key, m)
            else:
                self.reused += 1
            maps.append(m)
        return torch.stack(maps)

    def _keep(self, key: bytes, m: torch.Tensor) -> None:
        size = m.numel() * m.element_size() + ENTRY_OVERHEAD
        if self.kept_bytes + size <= self.max_bytes:
            self.kept[key] = m.clone()
            self.kept_bytes += size

    def counts(self) -> dict[str, int]:
        """{"computed", "reused", "kept"}: maps made by the teacher, taken from the cache, held now."""
        return {"computed": self.computed, "reused": self.reused, "kept": len(self.kept)}


def as_teacher_maps(teacher: nn.Module | TeacherMaps) -> TeacherMaps:
    """`teacher` itself when it already is a TeacherMaps, else uncached maps of that teacher where it is."""
    return teacher if isinstance(teacher, TeacherMaps) else TeacherMaps(teacher)


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the teacher only provides patch maps."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _content_key(image: torch.Tensor) -> bytes:
    """A 16-byte digest of one CPU image tensor's shape, dtype and values."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(image.shape), str(image.dtype))).encode())
    h.update(image.contiguous().view(torch.uint8).numpy().data)  # any dtype, bf16 too
    return h.digest()
