"""Masks from face landmarks and alpha compositing, numpy + OpenCV only: shared by the lip-sync stage
(:mod:`sadtalker_ext.lipsync.compositing`) and the img2img refinement (:mod:`sadtalker_ext.refine.regions`).

Conventions used by every function here:

* **frame / images**: ``uint8`` ``[H, W, 3]`` **RGB**.
* **landmarks**: the MediaPipe Face Mesh layout, ``float32`` ``[N, 2]`` or ``[N, 3]`` with
  ``N >= 468`` (468, or 478 with the refined irises), in **pixels**: ``x = normalised_x * W``,
  ``y = normalised_y * H`` (0 = the outer edge of the first pixel, so pixel ``j`` has its centre at
  ``j + 0.5``). Only x and y are used.
* **box**: ``(x0, y0, x1, y1)`` integer pixels, half-open (``frame[y0:y1, x0:x1]``), clipped to the frame.
* **masks**: ``float32`` ``[H, W]`` in [0, 1]. "Hard" masks hold only 0 and 1; feathered masks are
  their Gaussian blur.
* distances (``dilate_px``, ``erode_px``, ``blur_px``) are in pixels of the frame and may be fractional.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import InputError, OptionError
from . import topology as T

__all__ = ["LIPS_OUTER", "LIPS_INNER", "FACE_OVAL", "Box",
           "polygon_mask", "grow_mask", "mouth_mask", "face_mask", "feather", "composite"]

Box = Tuple[int, int, int, int]

#: Outer lip contour, inner lip contour (mouth opening) and face oval of the MediaPipe face mesh,
#: in ring order: the project's one definition in :mod:`sadtalker_ext.face.topology`.
LIPS_OUTER = tuple(T.MOUTH_OUTER_RING)
LIPS_INNER = tuple(T.MOUTH_INNER_RING)
FACE_OVAL = tuple(T.FACE_OVAL)

_MIN_LANDMARKS = 468
_SUBPIXEL_BITS = 4  # fillPoly fixed-point precision (1/16 px)


# -- validation helpers -------------------------------------------------------------------------
def _hw(shape: Sequence[int]) -> Tuple[int, int]:
    if len(shape) < 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise InputError(f"frame shape must be (H, W) or (H, W, C) with positive sizes, got {tuple(shape)}.")
    return int(shape[0]), int(shape[1])


def _points(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] < _MIN_LANDMARKS or lm.shape[1] not in (2, 3):
        raise InputError(f"landmarks must be MediaPipe face-mesh points [478, 2|3] in pixels, "
                         f"got shape {list(lm.shape)}.")
    xy = lm[:, :2].astype(np.float64)
    if not np.all(np.isfinite(xy)):
        raise InputError("landmarks contain NaN or infinite values; run face landmarking again.")
    return xy


def _non_negative(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise OptionError(f"{name} must be a number >= 0 pixels, got {value!r}.")
    return v


def _image(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"{name} must be a uint8 RGB image [H, W, 3], got {a.dtype} {list(a.shape)}.")
    return a


def _mask(mask: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != hw:
        raise InputError(f"mask must be float [H, W] = {list(hw)} like the frame, got {list(m.shape)}.")
    return m


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` half-open bounds of the non-zero pixels of a 2-D array, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _clip_box(box: Sequence[float], hw: Tuple[int, int]) -> Box:
    h, w = hw
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(0, min(w, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h, y0)), max(0, min(h, y1))
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {tuple(box)} has no pixels inside the {w}x{h} frame.")
    return x0, y0, x1, y1


# -- masks -----------------------------------------------------------------------------------------
def _signed_distance_threshold(canvas: np.ndarray, grow_px: float) -> np.ndarray:
    """Grow (> 0) or shrink (< 0) a uint8 {0,1} canvas by an exact Euclidean distance."""
    if grow_px > 0:
        # distance of every pixel to the nearest mask pixel (mask pixels are the zeros of src)
        dist = cv2.distanceTransform((canvas == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return (dist <= grow_px).astype(np.uint8)
    if grow_px < 0:
        # distance of every mask pixel to the nearest pixel outside the mask
        dist = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return (dist > -grow_px).astype(np.uint8)
    return canvas


def polygon_mask(points: np.ndarray, shape: Sequence[int], grow_px: float = 0.0) -> np.ndarray:
    """Hard mask of a closed polygon, grown (``grow_px > 0``) or shrunk (``< 0``) by a distance.

    ``points`` ``[K, 2]`` pixel coordinates (landmark convention above; may lie outside the frame).
    The polygon is rasterised by ``cv2.fillPoly`` (1/16-pixel vertex precision; pixels the edges
    cross are included, so the area exceeds the polygon's by about half its perimeter) on a canvas that contains the whole
    polygon plus the growth, so that parts outside the frame still grow into it and the frame border
    does not erode it; then cut to the frame. Growing keeps pixels whose centre lies within
    ``grow_px`` (exact Euclidean distance transform) of the polygon raster; shrinking keeps pixels
    farther than ``-grow_px`` from any outside pixel. Areas are therefore monotonic in ``grow_px``.
    Returns ``float32`` ``[H, W]`` of 0/1.
    """
    h, w = _hw(shape)
    pts = np.asarray(points, dtype=np.float64)[:, :2] - 0.5  # -> OpenCV pixel-centre coordinates
    margin = int(math.ceil(max(grow_px, 0.0))) + 2
    ox = int(math.floor(pts[:, 0].min())) - margin
    oy = int(math.floor(pts[:, 1].min())) - margin
    cw = int(math.ceil(pts[:, 0].max())) + margin - ox + 1
    ch = int(math.ceil(pts[:, 1].max())) + margin - oy + 1
    out = np.zeros((h, w), np.float32)
    # part of the canvas that overlaps the frame
    fx0, fy0, fx1, fy1 = max(ox, 0), max(oy, 0), min(ox + cw, w), min(oy + ch, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    canvas = np.zeros((ch, cw), np.uint8)
    local = np.round((pts - (ox, oy)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [local.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    canvas = _signed_distance_threshold(canvas, float(grow_px))
    out[fy0:fy1, fx0:fx1] = canvas[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox]
    return out


def grow_mask(mask: np.ndarray, grow_px: float) -> np.ndarray:
    """Dilate (``grow_px > 0``) or erode (``< 0``) a hard ``[H, W]`` mask by an exact Euclidean distance.

    Works within the frame only (the frame border counts as outside for erosion); prefer the
    ``grow_px`` argument of :func:`polygon_mask` for landmark polygons. Returns ``float32`` 0/1.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask must be [H, W], got {list(m.shape)}.")
    canvas = (m > 0.5).astype(np.uint8)
    if grow_px < 0:
        canvas = np.pad(canvas, 1)  # a zero ring so the frame border erodes like any edge
        return _signed_distance_threshold(canvas, float(grow_px))[1:-1, 1:-1].astype(np.float32)
    return _signed_distance_threshold(canvas, float(grow_px)).astype(np.float32)


def mouth_mask(landmarks: np.ndarray, shape: Sequence[int], dilate_px: float = 0.0) -> np.ndarray:
    """Hard mask of the outer lip polygon (:data:`LIPS_OUTER`) dilated by ``dilate_px`` pixels.

    ``landmarks`` MediaPipe ``[N>=468, 2|3]`` pixels; ``shape`` the frame's ``(H, W[, C])``.
    Returns ``float32`` ``[H, W]`` 0/1. Raises InputError (bad landmarks), OptionError (negative).
    """
    xy = _points(landmarks)
    return polygon_mask(xy[list(LIPS_OUTER)], shape, _non_negative(dilate_px, "mouth dilation"))


def face_mask(landmarks: np.ndarray, shape: Sequence[int], erode_px: float = 0.0) -> np.ndarray:
    """Hard mask of the face oval (:data:`FACE_OVAL`) eroded by ``erode_px`` pixels.

    Same argument conventions as :func:`mouth_mask`; erosion ignores the frame border (a face that
    leaves the frame is not eaten away at the edge). Returns ``float32`` ``[H, W]`` 0/1.
    """
    xy = _points(landmarks)
    return polygon_mask(xy[list(FACE_OVAL)], shape, -_non_negative(erode_px, "face erosion"))


def feather(mask: np.ndarray, blur_px: float) -> np.ndarray:
    """Gaussian feathering of a mask: kernel ``2*ceil(blur_px)+1`` wide, sigma ``blur_px / 3``.

    The kernel is cut at 3 sigma, so the result is exactly 0 farther than ``ceil(blur_px)`` pixels
    (Chebyshev distance) from every non-zero input pixel, and pixels deep inside stay 1. Borders are
    replicated (a mask touching the frame edge is not faded there). Only the bounding box of the
    non-zero pixels plus the kernel radius is filtered. Returns ``float32`` ``[H, W]`` in [0, 1].
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2:
        raise InputError(f"mask must be [H, W], got {list(m.shape)}.")
    r = int(math.ceil(_non_negative(blur_px, "mask blur")))
    if r == 0:
        return m.copy()
    out = np.zeros_like(m)
    bounds = _bbox(m)
    if bounds is None:
        return out
    h, w = m.shape
    y0, y1 = max(0, bounds[0] - r), min(h, bounds[1] + r)
    x0, x1 = max(0, bounds[2] - r), min(w, bounds[3] + r)
    k = 2 * r + 1
    blurred = cv2.GaussianBlur(m[y0:y1, x0:x1], (k, k), sigmaX=r / 3.0, sigmaY=r / 3.0,
                               borderType=cv2.BORDER_REPLICATE)
    out[y0:y1, x0:x1] = np.clip(blurred, 0.0, 1.0)
    return out



# -- blending -----------------------------------------------------------------------------------------
def composite(frame: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-blend ``generated`` over ``frame``: ``round(frame + mask * (generated - frame))``.

    ``frame`` and ``generated`` uint8 RGB ``[H, W, 3]`` of equal shape; ``mask`` float ``[H, W]`` in
    [0, 1] (values outside are clipped). Pixels where ``mask == 0`` are copied bit-exactly from
    ``frame``, pixels where ``mask == 1`` from ``generated``. Returns a new uint8 array.
    """
    fr = _image(frame, "frame")
    gen = _image(generated, "generated image")
    if gen.shape != fr.shape:
        raise InputError(f"generated image {list(gen.shape)} and frame {list(fr.shape)} differ in size.")
    m = _mask(mask, fr.shape[:2])
    out = fr.copy()
    bounds = _bbox(m > 0)
    if bounds is None:
        return out
    y0, y1, x0, x1 = bounds
    a = np.clip(m[y0:y1, x0:x1], 0.0, 1.0)
    sel = a > 0
    f = fr[y0:y1, x0:x1][sel].astype(np.float32)
    g = gen[y0:y1, x0:x1][sel].astype(np.float32)
    out[y0:y1, x0:x1][sel] = np.clip(np.round(f + a[sel][:, None] * (g - f)), 0, 255).astype(np.uint8)
    return out
