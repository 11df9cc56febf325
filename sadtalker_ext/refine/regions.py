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
from ..face.masks import LIPS_OUTER, composite, face_mask, feather, polygon_mask

__all__ = ["Regions", "MOUTH_GROW", "frame_regions", "target_size", "crop_resize", "paste_back", "bbox"]

Box = Tuple[int, int, int, int]
#: growth of the lip polygon for the "mouth" mask, as a fraction of the mouth width
MOUTH_GROW = 0.15


@dataclass
class Regions:
    """Masks and crop box of one frame (see the module doc), stored compactly.

    shape: the frame's ``(H, W)``. box: the crop box (may exceed the frame). window: ``box`` cut to
    the frame - every mask is zero outside it, so only the window is stored: ``hard_crop`` uint8
    0/1, ``soft_crop`` float32 in [0, 1], ``sd_crop`` uint8 0/255 (all None for ``full``, the whole
    frame at 1). The properties :attr:`hard`, :attr:`soft`, :attr:`sd` give full-frame arrays
    (float32, float32, uint8).
    """

    shape: Tuple[int, int]
    box: Box
    window: Box
    hard_crop: Optional[np.ndarray] = None
    soft_crop: Optional[np.ndarray] = None
    sd_crop: Optional[np.ndarray] = None
    full: bool = False

    def _full(self, crop: Optional[np.ndarray], dtype, one) -> np.ndarray:
        h, w = self.shape
        if self.full:
            return np.full((h, w), one, dtype)
        out = np.zeros((h, w), dtype)
        x0, y0, x1, y1 = self.window
        out[y0:y1, x0:x1] = crop
        return out

    @property
    def hard(self) -> np.ndarray:
        return self._full(self.hard_crop, np.float32, 1.0)

    @property
    def soft(self) -> np.ndarray:
        return self._full(self.soft_crop, np.float32, 1.0)

    @property
    def sd(self) -> np.ndarray:
        return self._full(self.sd_crop, np.uint8, 255)

    def soft_bbox(self) -> Optional[Box]:
        """Frame bounds of ``soft > 0`` (None when empty)."""
        if self.full:
            return 0, 0, self.shape[1], self.shape[0]
        b = bbox(self.soft_crop > 0)
        if b is None:
            return None
        x0, y0 = self.window[:2]
        return b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0

    def soft_in(self, region: Box) -> np.ndarray:
        """``soft`` over ``region`` (a box inside the frame), float32."""
        rx0, ry0, rx1, ry1 = region
        if self.full:
            return np.ones((ry1 - ry0, rx1 - rx0), np.float32)
        out = np.zeros((ry1 - ry0, rx1 - rx0), np.float32)
        wx0, wy0, wx1, wy1 = self.window
        ix0, iy0, ix1, iy1 = max(rx0, wx0), max(ry0, wy0), min(rx1, wx1), min(ry1, wy1)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - ry0:iy1 - ry0, ix0 - rx0:ix1 - rx0] = self.soft_crop[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0]
        return out

    def sd_crop_resized(self, size: Tuple[int, int]) -> np.ndarray:
        """The img2img mask: ``sd`` over ``box`` resized to ``size = (w, h)``, uint8 0/255."""
        x0, y0 = self.window[:2]
        bx0, by0, bx1, by1 = self.box
        m = crop_resize(self.sd_crop, (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0), size)
        return np.where(m >= 128, 255, 0).astype(np.uint8)


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
        return Regions(shape=(h, w), box=(0, 0, w, h), window=(0, 0, w, h), full=True)
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
    box = (bx0, by0, bx0 + side, by0 + side)
    wx0, wy0, wx1, wy1 = max(0, bx0), max(0, by0), min(w, bx0 + side), min(h, by0 + side)
    win = (slice(wy0, wy1), slice(wx0, wx1))
    return Regions(shape=(h, w), box=box, window=(wx0, wy0, wx1, wy1),
                   hard_crop=(hard[win] > 0.5).astype(np.uint8), soft_crop=np.ascontiguousarray(soft[win]),
                   sd_crop=(sd_hard[win] * 255).astype(np.uint8))


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
    x0, y0, x1, y1 = regions.box
    bw, bh = x1 - x0, y1 - y0
    shrink = patch.shape[1] > bw
    big = cv2.resize(patch, (bw, bh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    wx0, wy0, wx1, wy1 = regions.window
    part = big[wy0 - y0:wy1 - y0, wx0 - x0:wx1 - x0]
    out = frame.copy()
    if regions.full:
        out[wy0:wy1, wx0:wx1] = part
        return out
    out[wy0:wy1, wx0:wx1] = composite(np.ascontiguousarray(frame[wy0:wy1, wx0:wx1]), np.ascontiguousarray(part),
                                      regions.soft_crop)
    return out
