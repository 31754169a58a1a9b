"""Stand-in image generators for the embedded default: fixed-seed, randomly initialised x2 decoders.

A fake is a real crop re-synthesised from its half-resolution version, the way a generator's decoder
upsamples: `fake = keep * x + (1 - keep) * U(z) + texture`, with `z = avgpool2(x)`, `U` the family's
image-path upsampler (a random transposed conv, or nearest / bilinear followed by a random 3x3 conv) and
`texture` the high-pass output of a small non-linear branch (conv, LeakyReLU, x2 upsampling, conv), scaled
to the local amount of real detail so its strength follows the image content. `keep` is the share of the
real high-frequency detail kept; `1 - keep` sets how strong the image-path traces are. Finally the fake's
high-pass is scaled to its real's energy (`match_sharpness`), so sharpness alone does not tell them apart:
the local structure of the detail (the traces a patch detector should find) does.
No learned weights and no downloads: everything follows from the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("tconv", "nearest", "bilinear")
_FAMILY_ID = {name: i for i, name in enumerate(FAMILIES)}


def family_seed(seed: int, family: str, instance: int) -> int:
    """The weight seed of one generator instance (independent of counts and of the other families)."""
    return (seed * 1_000_003 + _FAMILY_ID[family] * 1_009 + instance * 7 + 12_345) % (2**63)


def _phase_normalise(kernel: torch.Tensor) -> torch.Tensor:
    """Scale each of the 4 stride-2 phases of a 4x4 transposed-conv kernel to sum 1 (flat stays flat)."""
    k = kernel.clone()
    for p in range(2):
        for q in range(2):
            k[p::2, q::2] /= k[p::2, q::2].sum()
    return k


class TextureBranch(nn.Module):
    """conv 3x3, LeakyReLU, x2 upsampling (`up`: tconv / nearest / bilinear), conv 3x3, LeakyReLU, conv 1x1."""

    def __init__(self, up: str, width: int = 8):
        super().__init__()
        self.up = up
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.tconv = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1) if up == "tconv" else None
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1, 2h, 2w) zero-mean, unit-variance high-pass texture of a (B, 3, h, w) image in [0, 1]."""
        f = F.leaky_relu(self.conv_in(z * 2 - 1), 0.2)
        f = self.tconv(f) if self.tconv is not None else _upsample2(f, self.up)
        t = high_pass(self.conv_out(F.leaky_relu(self.conv_mid(f), 0.2)))
        return t / t.flatten(1).std(dim=1).clamp(min=1e-6).view(-1, 1, 1, 1)


class Decoder(nn.Module):
    """One generator instance of a family: image-path x2 upsampler plus a small non-linear texture branch."""

    def __init__(self, family: str, seed: int, width: int = 8, jitter: float = 0.35, signed: bool = False):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown generator family {family!r}; choose one of {FAMILIES}")
        self.family = family
        g = torch.Generator().manual_seed(seed)
        randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
        if family == "tconv":
            bil = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4
            kernel = torch.outer(bil, bil) * (1 + jitter * randn(4, 4)).clamp(min=0.05)
            self.register_buffer("up_kernel", _phase_normalise(kernel).view(1, 1, 4, 4))
        elif signed:  # a learned-looking conv: identity plus signed noise (sharpens or shifts, sums to 1)
            kernel = torch.zeros(3, 3)
            kernel[1, 1] = 1.0
            kernel = kernel + jitter * randn(3, 3)
            self.register_buffer("up_kernel", (kernel / kernel.sum()).view(1, 1, 3, 3))
        else:  # a positive, centre-heavy smoothing conv
            logits = 2.5 * torch.eye(3)[1].outer(torch.eye(3)[1]) + jitter * 2 * randn(3, 3)
            self.register_buffer("up_kernel", torch.softmax(logits.flatten(), 0).view(1, 1, 3, 3))
        self.branch = TextureBranch(family, width)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * 4
                m.weight.data = randn(*m.weight.shape) * (2.0 / fan_in) ** 0.5
                m.bias.data = 0.1 * randn(*m.bias.shape)
        self.requires_grad_(False)

    def upsample_image(self, z: torch.Tensor) -> torch.Tensor:
        """The family's x2 upsampling of a (B, C, h, w) image (same kernel on every channel)."""
        c = z.shape[1]
        if self.family == "tconv":
            return F.conv_transpose2d(z, self.up_kernel.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)
        up = _upsample2(z, self.family)
        return F.conv2d(F.pad(up, (1, 1, 1, 1), mode="replicate"), self.up_kernel.expand(c, 1, 3, 3), groups=c)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, keep: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        """Re-synthesise (B, 3, H, W) images in [0, 1] (H, W even); `keep`, `texture`: (B,) per-image amounts."""
        z = F.avg_pool2d(x, 2)
        up = self.upsample_image(z)
        keep = keep.view(-1, 1, 1, 1).to(x.dtype)
        detail = x - up  # the real detail the decoder does not reproduce
        local = _box9(detail.pow(2).mean(1, keepdim=True)).sqrt()  # local RMS of the real detail
        texture = texture.view(-1, 1, 1, 1).to(x.dtype)
        fake = keep * x + (1 - keep) * up + texture * local * self.branch(z)
        return match_sharpness(fake, x).clamp(0, 1)


def _upsample2(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x2 nearest or bilinear (half-pixel centres) upsampling."""
    return F.interpolate(x, scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 local mean (replicated borders): the detail a sharpness measure sees."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def match_sharpness(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Scale each fake's high-pass so its energy matches its real's (to ~10%): sharpness then separates nothing.

    One gain per image: where the detail sits and what it looks like (the local traces) stay as made.
    """
    hf = high_pass(fake)
    energy = lambda t: t.pow(2).mean(dim=(1, 2, 3), keepdim=True)  # noqa: E731
    gain = (energy(high_pass(real)) / energy(hf).clamp(min=1e-12)).sqrt()
    return fake + (gain - 1) * hf


def _box9(x: torch.Tensor) -> torch.Tensor:
    """9x9 mean with replicated borders, as two separable 1-D means (9x cheaper than a 2-D window)."""
    x = F.avg_pool2d(F.pad(x, (4, 4, 0, 0), mode="replicate"), (1, 9), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, 4, 4), mode="replicate"), (9, 1), stride=1)
