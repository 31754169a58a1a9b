"""Fixed, parameter-free input filters applied inside each model's forward (NPR and 3x3 gradients).

They are modules without parameters or buffers, so the models keep the official state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# 3x3 kernels, applied as cross-correlation (F.conv2d) with zero "same" padding on each RGB channel.
KERNELS: dict[str, list[list[float]]] = {
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
}
PREPROCESS_NAMES = ("NPR", "raw", *KERNELS)


def npr(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Neighbouring Pixel Relationships: each pixel minus the top-left pixel of its 2x2 block.

    Odd heights/widths are cropped to even by dropping the last row/column (bottom-right),
    so the output is (B, C, H - H % 2, W - W % 2).
    """
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    down = x[..., ::2, ::2]  # nearest downsampling by 2 keeps the top-left pixel of each block
    up = F.interpolate(down, scale_factor=2.0, mode="nearest")
    return (x - up) * scale


class InputFilter(nn.Module):
    """One of `NPR`, `raw`, `x_grad`, `y_grad`, `left_diag`, `right_diag`."""

    def __init__(self, name: str = "NPR", npr_scale: float = 1.0):
        super().__init__()
        if name not in PREPROCESS_NAMES:
            raise ValueError(f"unknown input filter {name!r}; choose one of {', '.join(PREPROCESS_NAMES)}")
        self.name = name
        self.npr_scale = float(npr_scale)
        # Plain attribute, not a buffer: keeps state dicts identical to the official ones.
        self._kernel = torch.tensor(KERNELS[name]).view(1, 1, 3, 3) if name in KERNELS else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "raw":
            return x
        if self.name == "NPR":
            return npr(x, self.npr_scale)
        c = x.shape[1]
        weight = self._kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=c)

    def extra_repr(self) -> str:
        return f"{self.name}" + (f", scale={self.npr_scale:g}" if self.name == "NPR" else "")
