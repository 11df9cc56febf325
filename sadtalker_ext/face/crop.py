"""Preprocessing of the portrait: crop / resize / full (animate a crop, paste it back feathered).

Names follow SadTalker's ``--preprocess`` modes. All images are uint8 RGB; sizes in pixels; video
frames need even width and height (H.264 yuv420p), so every working image is made even.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import OptionError
from ..options import LITE_PREPROCESS
from .landmarks import Face

PREPROCESS_MODES = LITE_PREPROCESS  # sadtalker_ext.options: the lite engine's modes
CROP_SCALE = 1.9       # crop side = CROP_SCALE x face size (landmark extent, forehead to chin)
FULL_CROP_SCALE = 2.4  # the animated region of "full" mode (the face model fixes its outer ring inside it)


@dataclass
class PasteBack:
    """How to put an animated crop back into the full image.

    image: uint8 [H, W, 3] full-resolution background; box: (x0, y0, x1, y1) of the crop in it;
    mask: float32 [y1-y0, x1-x0, 1] feathered blend weight (1 = animated crop, 0 = original).
    """

    image: np.ndarray
    box: tuple[int, int, int, int]
    mask: np.ndarray

    def apply(self, crop_frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        if out is None:
            out = self.image.copy()
        else:
            out[...] = self.image
        patch = cv2.resize(crop_frame, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        bg = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(bg + (patch.astype(np.float32) - bg) * self.mask + 0.5, 0, 255).astype(np.uint8)
        return out


@dataclass
class Prepared:
    """The working image the engine animates, its face, and the paste-back for ``full`` mode."""

    image: np.ndarray
    face: Face
    mode: str
    paste: PasteBack | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the output video."""
        if self.paste is not None:
            return self.paste.image.shape[1], self.paste.image.shape[0]
        return self.image.shape[1], self.image.shape[0]


def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - (h % 2), : w - (w % 2)]


def _square_crop(image: np.ndarray, face: Face, scale: float):
    h, w = image.shape[:2]
    x0, y0, x1, y1 = face.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.04 * face.size
    side = int(round(face.size * scale))
    side = max(16, side)
    if side > min(h, w):  # the face fills the image: use the largest square that fits
        side = min(h, w)
    left = int(round(np.clip(cx - side / 2, 0, w - side)))
    top = int(round(np.clip(cy - side / 2, 0, h - side)))
    return (left, top, left + side, top + side)


def prepare(image: np.ndarray, face: Face, mode: str = "crop", size: int = 512, max_side: int = 2048) -> Prepared:
    """Working image for the renderer.

    crop: face-centred square, resized to ``size`` x ``size``.
    resize: the whole image, long side scaled to ``size`` (aspect kept).
    full: output at the image's resolution (long side capped at ``max_side``); a face-centred square
    is animated at ``size`` and pasted back with a feathered elliptical mask.
    Raises OptionError for an unknown mode or size.
    """
    if mode not in PREPROCESS_MODES:
        raise OptionError(f"unknown preprocess mode {mode!r}; use one of {', '.join(PREPROCESS_MODES)}")
    if size not in (256, 512):
        raise OptionError(f"--size must be 256 or 512, not {size}")
    if mode == "resize":
        h, w = image.shape[:2]
        s = size / max(h, w)
        out = _even(cv2.resize(image, (max(2, int(round(w * s))), max(2, int(round(h * s)))),
                               interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC))
        return Prepared(image=np.ascontiguousarray(out), face=face.scaled(s), mode=mode)
    if mode == "crop":
        x0, y0, x1, y1 = _square_crop(image, face, CROP_SCALE)
        s = size / (x1 - x0)
        crop = cv2.resize(image[y0:y1, x0:x1], (size, size),
                          interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        return Prepared(image=np.ascontiguousarray(crop), face=face.scaled(s, -x0 * s, -y0 * s), mode=mode)
    # full
    h, w = image.shape[:2]
    s_full = min(1.0, max_side / max(h, w))
    full = image if s_full >= 1.0 else cv2.resize(image, (int(round(w * s_full)), int(round(h * s_full))),
                                                   interpolation=cv2.INTER_AREA)
    full = np.ascontiguousarray(_even(full))
    face_full = face.scaled(s_full)
    x0, y0, x1, y1 = _square_crop(full, face_full, FULL_CROP_SCALE)
    side = x1 - x0
    s = size / side
    crop = cv2.resize(full[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    # feathered ellipse: 1 over the face and the inner ring, fading out before the crop's edge
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    fx0, fy0, fx1, fy1 = face_full.box
    fcx, fcy = (fx0 + fx1) / 2 - x0, (fy0 + fy1) / 2 - y0
    rx, ry = 0.5 * (fx1 - fx0) * 1.45, 0.5 * (fy1 - fy0) * 1.45
    r = np.sqrt(((xx - fcx) / max(rx, 1)) ** 2 + ((yy - fcy) / max(ry, 1)) ** 2)
    mask = np.clip((1.6 - r) / 0.5, 0.0, 1.0)
    edge = np.minimum.reduce([xx, yy, side - 1 - xx, side - 1 - yy]) / max(1.0, 0.06 * side)
    mask = (mask * np.clip(edge, 0, 1)).astype(np.float32)[..., None]
    paste = PasteBack(image=full, box=(x0, y0, x1, y1), mask=mask)
    return Prepared(image=np.ascontiguousarray(crop), face=face_full.scaled(s, -x0 * s, -y0 * s), mode=mode,
                    paste=paste)
