"""Decoded images kept in memory between passes, so only the first epoch pays for decoding the files.

Training and validation read every file once per epoch; at 64 px decoding a PNG costs about as much as
the student's training step on it. The cache holds each file's decoded 8-bit RGB pixels as a (3, H, W)
uint8 tensor (what the transforms start from, so results are the same bits as decoding anew) up to a
byte budget; beyond it, files are decoded every time. Each DataLoader worker holds its own cache.
"""

from __future__ import annotations

import os

import torch

from ladeda.data.images import load_rgb

DECODED_BYTES = 1 << 30  # decoded pixels kept per loader at most (the default's largest split: 15 MB)


class DecodedImages:
    """`get(path)` -> the file's pixels as a (3, H, W) uint8 tensor (read-only by contract), decoded once."""

    def __init__(self, max_bytes: int = DECODED_BYTES):
        self.max_bytes = max_bytes
        self.kept: dict[str, torch.Tensor] = {}
        self.kept_bytes = 0

    def get(self, path: str | os.PathLike) -> torch.Tensor:
        key = os.fspath(path)
        pixels = self.kept.get(key)
        if pixels is None:
            # imported here: torchvision takes ~1 s to import, and scanning or checking folders never decodes
            from torchvision.transforms.v2.functional import pil_to_tensor
            pixels = pil_to_tensor(load_rgb(path))
            if self.kept_bytes + pixels.numel() <= self.max_bytes:
                self.kept[key] = pixels
                self.kept_bytes += pixels.numel()
        return pixels
