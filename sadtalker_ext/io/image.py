"""Loading portraits: any format Pillow reads, RGBA/grayscale/palette/16-bit, EXIF rotation."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageError

MAX_PIXELS = 8192 * 8192


#: Values (pixels x channels) converted at a time by :func:`to_rgb8`: its float32 working copies
#: stay a few MB, not ~15 bytes per pixel of the whole image (800 MB each for 8192 x 8192).
_BLOCK_VALUES = 1 << 20


def to_rgb8(arr: np.ndarray) -> np.ndarray:
    """Any numpy image -> uint8 RGB [H, W, 3].

    Accepts [H, W], [H, W, 1], [H, W, 3] and [H, W, 4] (alpha composited on white); uint8, uint16
    (scaled by 1/257), bool and floats in [0, 1]. Raises ImageError for anything else.
    The result is always a new, writable array; uint8 RGB is copied as is, other kinds are
    converted in blocks of rows, so the extra memory is the output plus a few MB.
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"unsupported image shape {a.shape}; give an RGB or grayscale picture")
    if a.dtype == np.uint8 and a.shape[2] == 3:
        return np.array(a, order="C", copy=True)
    if a.dtype == np.uint8 and a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if not (a.dtype in (np.uint8, np.uint16, bool) or np.issubdtype(a.dtype, np.floating)):
        a = a.astype(np.float32)  # other integer types: values taken as 0..255 (as before)
    rows = max(1, _BLOCK_VALUES // (a.shape[1] * a.shape[2]))
    scale = None
    if np.issubdtype(a.dtype, np.floating):  # floats in [0, 1] are scaled to 0..255 (max after NaN removal)
        m = max(float(np.nan_to_num(a[r:r + rows].astype(np.float32), nan=0.0, posinf=0.0,
                                     neginf=0.0).max()) for r in range(0, a.shape[0], rows))
        scale = 255.0 if m <= 1.0 else 1.0
    out = np.empty(a.shape[:2] + (3,), np.uint8)
    for r in range(0, a.shape[0], rows):
        out[r:r + rows] = _block_to_rgb8(a[r:r + rows], scale)
    return out


def _block_to_rgb8(a: np.ndarray, scale) -> np.ndarray:
    if a.dtype == np.uint16:
        a = (a.astype(np.float32) / 257.0)
    elif a.dtype == bool:
        a = a.astype(np.float32) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0) * scale
    a = a.astype(np.float32)
    c = a.shape[2]
    if c in (2, 4):
        alpha = a[..., -1:] / 255.0
        a = a[..., :-1] * alpha + 255.0 * (1 - alpha)
        c -= 1
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def _pixels(im) -> np.ndarray:
    """uint8 [H, W, bands] of an 8-bit Pillow image, copied in strips of rows: no whole-image
    temporaries (``np.asarray(im)`` builds the picture as bytes twice over), so decoding peaks at
    Pillow's buffer (4 bytes per pixel) plus this array."""
    bands = len(im.getbands())
    out = np.empty((im.height, im.width, bands), np.uint8)
    rows = max(1, _BLOCK_VALUES * 4 // (im.width * bands))
    for y in range(0, im.height, rows):
        strip = np.asarray(im.crop((0, y, im.width, min(im.height, y + rows))))
        out[y:y + strip.shape[0]] = strip.reshape(strip.shape[0], im.width, bands)
    return out


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a portrait file as uint8 RGB [H, W, 3], applying its EXIF orientation.

    Raises ImageError when the file is missing, not an image, truncated, or too large (> 64 MP).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image file not found: {p}; give the path of a PNG/JPEG/WebP portrait")
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{p.name} is {im.width}x{im.height}; images up to 8192x8192 are supported, "
                                 "downscale it first")
            if im.getexif().get(0x0112, 1) != 1:  # only then: exif_transpose copies the picture
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
            arr = _pixels(im)
        return arr if im.mode == "RGB" else to_rgb8(arr)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # a header claiming more pixels than Pillow's own cap
        raise ImageError(f"{p.name} claims more than {2 * Image.MAX_IMAGE_PIXELS} pixels; images up to "
                         "8192x8192 are supported, downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bad files
        raise ImageError(f"cannot read image {p.name} ({type(exc).__name__}); give a valid PNG/JPEG/WebP file") from exc
