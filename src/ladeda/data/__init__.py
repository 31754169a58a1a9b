"""Data: folder datasets, transforms, the embedded default generator, the data check, sample grids.

Names are imported lazily (`from ladeda.data import discover` works) so that reading images or checking
data never pays for importing torchvision or matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "images": ("IMAGE_EXTENSIONS", "is_image", "load_rgb", "to_rgb"),
    "folders": ("SPLITS", "Sample", "SplitScan", "LabeledImages", "SizeBucketBatchSampler", "discover",
                "scan_split", "subsets", "make_loader", "image_size"),
    "transforms": ("IMAGENET_MEAN", "IMAGENET_STD", "ImageTransform", "build_transform", "denormalize"),
    "default": ("generate_default", "PHOTOS", "DOMAIN_PHOTOS", "RECIPES"),
    "check": ("analyze_dataset", "raise_on_blocking", "unreadable_files"),
    "grid": ("grid_rows", "save_sample_grid"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"ladeda.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ladeda.data' has no attribute {name!r}")
