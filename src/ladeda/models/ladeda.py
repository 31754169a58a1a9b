"""LaDeDa: a BagNet (ResNet-50 bottlenecks without padding) that scores every 9x9 patch with one logit.

Module names and shapes follow the official checkpoints, so `load_state_dict(official, strict=True)` works.
"""

from __future__ import annotations

import torch
from torch import nn

from ladeda.models.filters import InputFilter

# Which residual stages use a 3x3 `conv2` in their first block (the rest are 1x1): sets the patch size.
KERNEL3 = {5: (1, 0, 0, 0), 9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}
BLOCKS = (3, 4, 6, 3)
STRIDES = (2, 2, 2, 1)
EXPANSION = 4


class Bottleneck(nn.Module):
    """ResNet bottleneck without padding; a larger residual is cropped at the bottom-right."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kernel_size: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        h, w = out.shape[-2:]
        out = out + residual[..., :h, :w]
        return self.relu(out)


class LaDeDa(nn.Module):
    """Patch-level detector: input filter, BagNet-`patch` trunk, per-location linear head (one logit)."""

    def __init__(self, patch: int = 9, preprocess: str = "NPR", npr_scale: float = 1.0, width: int = 64):
        super().__init__()
        if patch not in KERNEL3:
            raise ValueError(f"unknown LaDeDa patch size {patch}; choose one of {sorted(KERNEL3)}")
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.patch, self.width = patch, width
        self.preprocess = preprocess
        self.npr_scale = float(npr_scale)
        self.input_filter = InputFilter(preprocess, npr_scale)
        self.conv1 = nn.Conv2d(3, width, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, (blocks, stride, k3) in enumerate(zip(BLOCKS, STRIDES, KERNEL3[patch]), start=1):
            planes = width * 2 ** (i - 1)
            layer, inplanes = _make_layer(inplanes, planes, blocks, stride, k3)
            setattr(self, f"layer{i}", layer)
        self.fc = nn.Linear(inplanes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Module]:
        """The four residual stages, in order (fine-tuning unfreezes them from the end)."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits of an already filtered batch (`input_filter` output): what tiling runs."""
        x = self.relu(self.bn1(self.conv2(self.conv1(z))))
        for stage in self.stages:
            x = stage(x)
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def patch_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits: the linear head applied at every location."""
        return self.trunk(self.input_filter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) image logits: the mean of the patch logits."""
        return self.patch_map(x).mean(dim=(1, 2, 3))


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, kernel3: int) -> tuple[nn.Sequential, int]:
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * EXPANSION, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * EXPANSION, momentum=0.001),
        )
    layers = [Bottleneck(inplanes, planes, stride, 3 if kernel3 else 1, downsample)]
    for _ in range(1, blocks):
        layers.append(Bottleneck(planes * EXPANSION, planes, 1, 1))
    return nn.Sequential(*layers), planes * EXPANSION


class LaDeDa5(LaDeDa):
    """5x5 patches (3x3 conv2 only in layer1)."""

    def __init__(self, preprocess: str = "NPR", npr_scale: float = 1.0, width: int = 64):
        super().__init__(5, preprocess, npr_scale, width)


class LaDeDa9(LaDeDa):
    """9x9 patches, stride 8: the paper's LaDeDa."""

    def __init__(self, preprocess: str = "NPR", npr_scale: float = 1.0, width: int = 64):
        super().__init__(9, preprocess, npr_scale, width)


class LaDeDa17(LaDeDa):
    """17x17 patches (3x3 conv2 in layer1-3)."""

    def __init__(self, preprocess: str = "NPR", npr_scale: float = 1.0, width: int = 64):
        super().__init__(17, preprocess, npr_scale, width)


class LaDeDa33(LaDeDa):
    """33x33 patches (3x3 conv2 in every stage)."""

    def __init__(self, preprocess: str = "NPR", npr_scale: float = 1.0, width: int = 64):
        super().__init__(33, preprocess, npr_scale, width)
