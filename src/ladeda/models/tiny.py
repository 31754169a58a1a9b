"""Tiny-LaDeDa: the 1,297-parameter, four-conv student that scores 7x7 patches on a stride-2 grid."""

from __future__ import annotations

import torch
from torch import nn

from ladeda.models.filters import InputFilter


class TinyBlock(nn.Module):
    """1x1 conv + BN + ReLU, then a stride-2 3x3 conv + BN + ReLU (no conv3, no residual)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class TinyLaDeDa(nn.Module):
    """Input filter, `conv1` 1x1 3->8, `conv2` 3x3 8->8, `bn1`, ReLU, `layer1.0`, linear head `fc` 8->1."""

    width = 8

    def __init__(self, preprocess: str = "right_diag", npr_scale: float = 1.0):
        super().__init__()
        self.preprocess = preprocess
        self.npr_scale = float(npr_scale)
        self.input_filter = InputFilter(preprocess, npr_scale)
        self.conv1 = nn.Conv2d(3, 8, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, kernel_size=3, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(8, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TinyBlock(8))
        self.fc = nn.Linear(8, 1)

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits of an already filtered batch (`input_filter` output): what tiling runs."""
        f = self.layer1(self.relu(self.bn1(self.conv2(self.conv1(z)))))
        return self.fc(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def patch_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits."""
        return self.trunk(self.input_filter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) image logits: the mean of the patch logits."""
        return self.patch_map(x).mean(dim=(1, 2, 3))
