"""Loading portraits: any format Pillow reads, RGBA/grayscale/palette/16-bit, EXIF rotation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ImageError

MAX_PIXELS = 8192 * 8192


def to_rgb8(arr: np.ndarray) -> np.ndarray:
    """Any numpy image -> uint8 RGB [H, W, 3].

    Accepts [H, W], [H, W, 1], [H, W, 3] and [H, W, 4] (alpha composited on white); uint8, uint16
    (scaled by 1/257), bool and floats in [0, 1]. Raises ImageError for anything else.
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"unsupported image shape {a.shape}; give an RGB or grayscale picture")
    if a.dtype == np.uint16:
        a = (a.astype(np.float32) / 257.0)
    elif a.dtype == bool:
        a = a.astype(np.float32) * 255
    elif np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        a = f * (255.0 if f.size and f.max() <= 1.0 else 1.0)  # max after NaN removal (NaN > 1 is False)
    a = a.astype(np.float32)
    c = a.shape[2]
    if c in (2, 4):
        alpha = a[..., -1:] / 255.0
        a = a[..., :-1] * alpha + 255.0 * (1 - alpha)
        c -= 1
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a portrait file as uint8 RGB [H, W, 3], applying its EXIF orientation.

    Raises ImageError when the file is missing, not an image, truncated, or too large (> 64 MP).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image file not found: {p}; give the path of a PNG/JPEG/WebP portrait")
    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{p.name} is {im.width}x{im.height}; images up to 8192x8192 are supported, "
                                 "downscale it first")
            im = ImageOps.exif_transpose(im)
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32)
                arr = (arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0) * 255.0)
                return to_rgb8(arr.astype(np.uint8) if arr.max() <= 255 else arr)
            if im.mode == "P" or im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode not in ("RGB", "RGBA", "L", "LA"):
                im = im.convert("RGB")
            return to_rgb8(np.asarray(im))
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bad files
        raise ImageError(f"cannot read image {p.name} ({type(exc).__name__}); give a valid PNG/JPEG/WebP file") from exc
