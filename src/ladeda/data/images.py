"""Reading image files as 8-bit RGB, whatever their mode, with one clear error for unreadable files.

Conversions (documented behaviour, relied on by the tests):
- greyscale (L, 1) -> the grey value copied to R, G and B;
- palette (P) -> its colours (transparency is dropped, as for RGBA);
- RGBA / LA / PA -> alpha is dropped, the stored colour values are kept unchanged (not composited on
  black): detectors look at pixel-level traces, which compositing would alter; this is also what
  `Image.convert("RGB")` and the official LaDeDa loader do;
- 16-bit greyscale (I;16*, and 32-bit `I` images holding 16-bit values) -> scaled to 8 bit by
  dividing by 257 (0 -> 0, 65535 -> 255), never clipped; 32-bit values outside 0..65535 are
  rescaled from their own min..max; float (F) images are taken as 0..1 when their maximum is <= 1,
  else as 0..255 (clipped);
- CMYK, YCbCr -> Pillow's RGB conversion;
- multi-frame files (TIFF, WebP) -> the first frame. EXIF orientation is not applied (pixels as stored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ladeda.core.errors import LadedaError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


def is_image(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive); content is not checked."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file as an 8-bit RGB PIL image (see the module doc for conversions)."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here rather than later
            return to_rgb(img)
    except LadedaError:
        raise
    except FileNotFoundError:
        raise LadedaError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = _reason(err).replace(f" {str(path)!r}", "").replace(str(path), "file")
        raise LadedaError(f"{path}: cannot read image ({reason}); remove or replace the file") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any supported mode to 8-bit RGB (a new image; the input is untouched)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_wide_to_uint8(np.asarray(img), mode), mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when converting transparent palettes straight to RGB
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise LadedaError(f"image mode {mode!r} cannot be converted to RGB ({err})") from None


def _wide_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float greyscale array to uint8 without clipping real 16-bit data."""
    if mode == "F":
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo >= 0 and hi <= 65535:
        return ((arr * 255 + 32767) // 65535).astype(np.uint8)  # == round(v / 257)
    span = max(hi - lo, 1)
    return ((arr - lo) * 255 // span).astype(np.uint8)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
