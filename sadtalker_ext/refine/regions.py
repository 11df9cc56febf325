"""Where a frame is refined: masks, the SD crop at the model's native size, and the paste-back.

Conventions are those of :mod:`sadtalker_ext.lipsync.compositing` (whose polygon masks, feathering
and compositing are reused): frames uint8 RGB ``[H, W, 3]``; landmarks MediaPipe ``[478, 2]`` in
pixels; boxes ``(x0, y0, x1, y1)`` half-open integer pixels - here they may reach outside the frame
(the outside is filled by reflection when cropping).

For one frame with parameters ``p`` (:class:`~.keyframes.RefineParams`):

* ``hard``: the region to refine - ``face`` the face oval (:func:`~...compositing.face_mask`),
  ``mouth`` the outer lips grown by 15 % of the mouth width, ``full`` every pixel;
* ``soft`` = :func:`~...compositing.feather` (``hard``, ``p.mask_blur``): the paste-back alpha,
  exactly 0 farther than ``ceil(mask_blur)`` pixels from ``hard``;
* ``sd``: ``hard`` dilated by ``ceil(mask_blur) + 1`` px (square kernel), the mask sent to
  img2img (it covers every pixel where ``soft > 0``, so everything pasted was repainted);
* ``box``: the square around ``sd`` plus ``p.padding`` px of context on each side (the whole
  frame for ``full``), resized to the model's native resolution for img2img
  (A1111's "inpaint only masked" with ``inpaint_full_res_padding``).

Pixels where ``soft == 0`` are bit-exact copies of the input frame after :func:`paste_back`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from ..errors import InputError
from ..lipsync.compositing import LIPS_OUTER, composite, face_mask, feather, polygon_mask

__all__ = ["Regions", "MOUTH_GROW", "frame_regions", "target_size", "crop_resize", "paste_back", "bbox"]

Box = Tuple[int, int, int, int]
#: growth of the lip polygon for the "mouth" mask, as a fraction of the mouth width
MOUTH_GROW = 0.15


@dataclass
class Regions:
    """Masks and crop box of one frame (see the module doc).

    hard: float32 ``[H, W]`` 0/1. soft: float32 ``[H, W]`` in [0, 1]. sd: uint8 ``[H, W]`` 0/255.
    box: crop box (may exceed the frame). full: True for the whole-frame mask.
    """

    hard: np.ndarray
    soft: np.ndarray
    sd: np.ndarray
    box: Box
    full: bool = False


def bbox(mask: np.ndarray) -> Optional[Box]:
    """``(x0, y0, x1, y1)`` half-open bounds of the non-zero pixels of a 2-D array, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _valid_landmarks(landmarks) -> Optional[np.ndarray]:
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2 or not np.all(np.isfinite(lm[:, :2])):
        return None
    return lm[:, :2]


def frame_regions(shape, landmarks, mask: str, mask_blur: float, padding: float) -> Optional[Regions]:
    """The :class:`Regions` of one frame, or None when the frame has no usable face (landmarks
    None / non-finite, or a region with no pixel in the frame) and ``mask`` is not "full".

    shape: ``(H, W[, C])``. landmarks: ``[478, 2]`` pixels or None. mask: "face" | "mouth" | "full".
    mask_blur, padding: pixels >= 0.
    """
    h, w = int(shape[0]), int(shape[1])
    blur = max(0.0, float(mask_blur))
    r = int(math.ceil(blur))
    if mask == "full":
        hard = np.ones((h, w), np.float32)
        return Regions(hard=hard, soft=hard.copy(), sd=np.full((h, w), 255, np.uint8), box=(0, 0, w, h), full=True)
    lm = _valid_landmarks(landmarks)
    if lm is None:
        return None
    if mask == "face":
        hard = face_mask(lm, (h, w), 0.0)
    elif mask == "mouth":
        pts = lm[list(LIPS_OUTER)]
        width = float(np.ptp(pts[:, 0]))
        hard = polygon_mask(pts, (h, w), MOUTH_GROW * width)
    else:
        raise InputError(f"mask {mask!r} is not valid; use face, mouth or full")
    if bbox(hard) is None:
        return None
    soft = feather(hard, blur)
    k = 2 * (r + 1) + 1  # square kernel: the feather's support is a Chebyshev neighbourhood
    sd_hard = cv2.dilate((hard > 0.5).astype(np.uint8), np.ones((k, k), np.uint8))
    x0, y0, x1, y1 = bbox(sd_hard)
    side = max(x1 - x0, y1 - y0) + 2 * int(math.ceil(max(0.0, float(padding))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    bx0, by0 = int(math.floor(cx - side / 2.0)), int(math.floor(cy - side / 2.0))
    return Regions(hard=hard, soft=soft, sd=(sd_hard * 255).astype(np.uint8), box=(bx0, by0, bx0 + side, by0 + side))


def target_size(regions: Regions, native: int, frame_shape) -> Tuple[int, int]:
    """(width, height) of the img2img input: ``native x native`` for the square face/mouth crop;
    for ``full`` the frame's aspect with the long side ``native``, both rounded to multiples of 8."""
    native = int(native)
    if not regions.full:
        return native, native
    h, w = int(frame_shape[0]), int(frame_shape[1])
    scale = native / max(h, w)
    return max(8, int(round(w * scale / 8)) * 8), max(8, int(round(h * scale / 8)) * 8)


def _extract(image: np.ndarray, box: Box) -> np.ndarray:
    """Pixels of ``box`` (may exceed the image; the outside is reflected)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputError(f"crop box {box} has no pixel inside the {w}x{h} frame")
    part = image[cy0:cy1, cx0:cx1]
    top, left, bottom, right = cy0 - y0, cx0 - x0, y1 - cy1, x1 - cx1
    if top or left or bottom or right:
        # reflection needs the pad smaller than the part; larger pads fall back to replication
        mode = cv2.BORDER_REFLECT_101 if max(top, bottom) < part.shape[0] and max(left, right) < part.shape[1] \
            else cv2.BORDER_REPLICATE
        part = cv2.copyMakeBorder(np.ascontiguousarray(part), top, bottom, left, right, mode)
    return part


def crop_resize(image: np.ndarray, box: Box, size: Tuple[int, int]) -> np.ndarray:
    """``box`` of ``image`` (uint8 ``[H, W]`` or ``[H, W, 3]``) resized to ``size = (w, h)``:
    area averaging when shrinking, bicubic when enlarging."""
    part = _extract(image, box)
    tw, th = int(size[0]), int(size[1])
    if part.shape[1] == tw and part.shape[0] == th:
        return np.ascontiguousarray(part)
    shrink = part.shape[1] > tw
    return cv2.resize(part, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def paste_back(frame: np.ndarray, patch: np.ndarray, regions: Regions) -> np.ndarray:
    """``frame`` with the img2img output ``patch`` (uint8 ``[h, w, 3]`` at the target size)
    resized onto ``regions.box`` and alpha-blended with ``regions.soft``. Pixels where
    ``soft == 0`` are bit-exact copies of ``frame``. Returns a new uint8 ``[H, W, 3]``."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = regions.box
    bw, bh = x1 - x0, y1 - y0
    shrink = patch.shape[1] > bw
    big = cv2.resize(patch, (bw, bh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    generated = frame.copy()
    generated[cy0:cy1, cx0:cx1] = big[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return composite(frame, generated, regions.soft)
