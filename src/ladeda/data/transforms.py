"""Image -> normalised tensor transforms of the official recipe, built from torchvision transforms v2.

train: optional resize to `load_size` (square), optional CNNDetection-style blur / JPEG augmentation
       (each applied with its probability; off by default), RandomCrop(crop_size) + horizontal flip;
val:   optional resize, CenterCrop(crop_size);
test:  optional resize, then the full image, cut to even height and width at the bottom/right when
       `even` (NPR compares 2x2 blocks; keeping the top-left origin keeps the image's pixel grid).
All end with a float tensor normalised with the ImageNet mean/std, the input both models expect
(`normalize_arrays` does the same for a batch of uint8 arrays; IMAGENET_MEAN/STD live only here).

An image smaller than the crop is padded with zeros (black, before normalisation): at the bottom/right
by RandomCrop (`pad_if_needed`), on all sides by CenterCrop. Only patches touching the padding see it;
the data check warns about such images. Random choices use torch's global RNG, so
`torch.manual_seed` (and a seeded DataLoader for worker processes) makes them reproducible.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("train", "val", "test")


class EvenCrop(torch.nn.Module):
    """Drop the last row / column of an image tensor when its height / width is odd (origin kept)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        return img[..., : h - h % 2, : w - w % 2]


class ImageTransform:
    """A built transform: callable PIL image -> (3, H, W) tensor, and the output size it gives a W x H image."""

    def __init__(self, mode: str, pipeline: Callable, crop_size: int, load_size: int | None, even: bool,
                 augmented: bool = False):
        self.mode, self.pipeline = mode, pipeline
        self.crop_size, self.load_size, self.even = crop_size, load_size, even
        self.augmented = augmented  # random blur or JPEG (train only)

    def __call__(self, img) -> torch.Tensor:
        return self.pipeline(img).as_subclass(torch.Tensor)  # a plain tensor, not a tv_tensors.Image

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) every output has, or None when it depends on the input (test mode without resize)."""
        if self.mode != "test":
            return (self.crop_size, self.crop_size)
        if self.load_size is not None:
            return (self.load_size, self.load_size)
        return None

    def repeats(self, image_sizes: Iterable[tuple[int, int]]) -> bool:
        """Whether images of these (width, height) give the same tensor on every pass, or its mirror (train's
        flip): always for val and test; for train when no blur / JPEG is drawn and the crop takes the whole
        (resized) image. `image_sizes` is read lazily, up to the first misfit, and only when sizes matter."""
        if self.mode != "train":
            return True
        if self.augmented:
            return False
        if self.load_size is not None:
            return self.load_size == self.crop_size
        return all(tuple(size) == (self.crop_size, self.crop_size) for size in image_sizes)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(H, W) of the tensor this transform makes from a `width` x `height` image."""
        if self.fixed_size is not None:
            return self.fixed_size
        if self.even:
            return (height - height % 2, width - width % 2)
        return (height, width)

    def __repr__(self) -> str:
        return f"ImageTransform(mode={self.mode!r}, {self.pipeline!r})"


def build_transform(mode: str, crop_size: int, load_size: int | None = None, even: bool = True,
                    blur_prob: float = 0.0, blur_sigma: float = 3.0, jpeg_prob: float = 0.0,
                    jpeg_quality: Sequence[int] = (30, 100)) -> ImageTransform:
    """The transform for `mode` ('train' | 'val' | 'test'); augmentation arguments apply to train only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    steps: list = [v2.ToImage()]  # uint8 tensor: resize, blur, JPEG and crops all work on it
    if load_size is not None:
        steps.append(v2.Resize((load_size, load_size), antialias=True))
    if mode == "train":
        if blur_prob > 0:
            kernel = 2 * math.ceil(3 * blur_sigma) + 1
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(1e-3, blur_sigma))], p=blur_prob))
        if jpeg_prob > 0:
            steps.append(v2.RandomApply([v2.JPEG(quality=[int(q) for q in jpeg_quality])], p=jpeg_prob))
        steps += [v2.RandomCrop(crop_size, pad_if_needed=True, fill=0), v2.RandomHorizontalFlip()]
    elif mode == "val":
        steps.append(v2.CenterCrop(crop_size))
    elif even:
        steps.append(EvenCrop())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    augmented = mode == "train" and (blur_prob > 0 or jpeg_prob > 0)
    return ImageTransform(mode, v2.Compose(steps), crop_size, load_size, even, augmented)


def normalize_arrays(arrays: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """ImageNet-normalised float (B, 3, H, W) batch (channels-last memory) from equal-size uint8 HxWx3 arrays.

    The transforms' normalisation, (x / 255 - mean) / std, computed on `device` for the whole batch at once.
    """
    x = torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255.0
    return x.sub_(mean).div_(std)
