"""Paste-back of a lip-synced face patch into a video frame ("UHQ" compositing), numpy + OpenCV only.

Conventions used by every function here:

* **frame / images**: ``uint8`` ``[H, W, 3]`` **RGB** (the Wav2Lip network works in BGR; flip the
  channels before calling in here).
* **landmarks**: the MediaPipe Face Mesh layout, ``float32`` ``[N, 2]`` or ``[N, 3]`` with
  ``N >= 468`` (468, or 478 with the refined irises), in **pixels**: ``x = normalised_x * W``,
  ``y = normalised_y * H`` (0 = the outer edge of the first pixel, so pixel ``j`` has its centre at
  ``j + 0.5``). Only x and y are used.
* **box**: ``(x0, y0, x1, y1)`` integer pixels, half-open (``frame[y0:y1, x0:x1]``), clipped to the frame.
* **masks**: ``float32`` ``[H, W]`` in [0, 1]. "Hard" masks hold only 0 and 1; feathered masks are
  their Gaussian blur.
* distances (``dilate_px``, ``erode_px``, ``blur_px``) are in pixels of the frame and may be fractional.

Pipeline for one frame (each step is one function, so a streaming caller can cache or skip steps)::

    box = face_box(landmarks, frame.shape, pads)                  # or smoothed: BoxSmoother / smooth_boxes
    crop = crop_box(frame, box, 96)                               # network input (flip to BGR)
    generated = paste_patch(frame, patch, box)                    # network output back at the box
    mask = lipsync_mask(landmarks, frame.shape, box, MaskConfig())   # hard region + feathering
    generated = match_color(generated, frame, mask)               # optional
    out = composite(frame, generated, mask)

Masking follows the common "Wav2Lip UHQ" practice (mouth or lower-face region from landmarks,
dilated / eroded, then feathered); the exact geometry rules are this module's own and documented
on each function. No torch import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import InputError, NoFaceError, OptionError, OutputError
from ..face import topology as T

__all__ = [
    "LIPS_OUTER", "LIPS_INNER", "FACE_OVAL",
    "Box", "MaskConfig",
    "polygon_mask", "grow_mask", "mouth_mask", "face_mask", "feather", "lipsync_mask",
    "match_color", "composite",
    "face_box", "smooth_boxes", "BoxSmoother",
    "crop_box", "paste_patch", "write_debug_images",
]

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


@dataclass
class MaskConfig:
    """How :func:`lipsync_mask` builds the paste-back mask (pixel units of the frame).

    only_mouth: paste only the (dilated) lips; otherwise the lower face inside the eroded face oval
        plus the dilated lips.
    dilate_px: growth of the outer lip polygon. erode_px: shrinkage of the face oval.
    blur_px: feather width (see :func:`feather`). lower_from: where, as a fraction of the box
        height from its top, the lower-face region starts (Wav2Lip regenerates the lower half).
    """

    only_mouth: bool = False
    dilate_px: float = 8.0
    erode_px: float = 4.0
    blur_px: float = 8.0
    lower_from: float = 0.5

    def validate(self) -> "MaskConfig":
        for name in ("dilate_px", "erode_px", "blur_px"):
            _non_negative(getattr(self, name), name)
        if not 0.0 <= float(self.lower_from) < 1.0:
            raise OptionError(f"lower_from must be in [0, 1), got {self.lower_from!r}.")
        return self


def lipsync_mask(landmarks: np.ndarray, shape: Sequence[int], box: Optional[Sequence[int]] = None,
                 config: Optional[MaskConfig] = None) -> np.ndarray:
    """Feathered paste-back mask for one frame, ``float32`` ``[H, W]`` in [0, 1].

    Hard region: ``mouth_mask(dilate_px)`` if ``only_mouth``, else
    ``face_mask(erode_px) ∩ {rows >= y0 + lower_from*(y1-y0)}  ∪  mouth_mask(dilate_px)``.
    With a ``box`` (where the generated patch was pasted), the hard region is also cut to the box
    shrunk by ``ceil(blur_px)`` on the left, right and bottom and starting no higher than that below
    its top, so the feathered mask is exactly 0 outside the box. Then :func:`feather` with ``blur_px``.
    """
    cfg = (config or MaskConfig()).validate()
    h, w = _hw(shape)
    hard = mouth_mask(landmarks, shape, cfg.dilate_px)
    if not cfg.only_mouth:
        lower = face_mask(landmarks, shape, cfg.erode_px)
        if box is not None:
            bx0, by0, bx1, by1 = _clip_box(box, (h, w))
            lower[: by0 + int(math.ceil(cfg.lower_from * (by1 - by0)))] = 0.0
        hard = np.maximum(hard, lower)
    if box is not None:
        bx0, by0, bx1, by1 = _clip_box(box, (h, w))
        r = int(math.ceil(cfg.blur_px))
        hard[: by0 + r] = 0.0
        hard[max(by0 + r, by1 - r):] = 0.0
        hard[:, : bx0 + r] = 0.0
        hard[:, max(bx0 + r, bx1 - r):] = 0.0
    return feather(hard, cfg.blur_px)


# -- colour and blending ----------------------------------------------------------------------------
def _lab(img_u8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img_u8.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def match_color(generated: np.ndarray, reference: np.ndarray, mask: np.ndarray, strength: float = 1.0,
                match_std: bool = True, std_ratio_limits: Tuple[float, float] = (0.5, 2.0)) -> np.ndarray:
    """Match the colour statistics of ``generated`` to ``reference`` inside ``mask`` (Reinhard transfer).

    Both images are uint8 RGB ``[H, W, 3]`` (the generated one = the frame with the patch pasted).
    In CIE L*a*b* (OpenCV float conversion: L in [0,100], a/b about [-128,127]) the mask-weighted
    mean and standard deviation of each channel are computed for both images over the mask's
    non-zero pixels; ``generated`` is mapped per channel to ``(x - mean_g) * s + mean_r`` with
    ``s = std_r / std_g`` clamped to ``std_ratio_limits`` (``s = 1`` when ``match_std`` is False),
    blended with the original by ``strength`` in [0, 1], converted back, and rounded to uint8.
    Only pixels where ``mask > 0`` are changed; returns a new uint8 array (an unchanged copy when the
    mask is empty). Raises InputError / OptionError for bad shapes or options.
    """
    gen = _image(generated, "generated image")
    ref = _image(reference, "reference frame")
    if gen.shape != ref.shape:
        raise InputError(f"generated image {list(gen.shape)} and frame {list(ref.shape)} differ in size.")
    m = _mask(mask, gen.shape[:2])
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise OptionError(f"colour-match strength must be in [0, 1], got {strength!r}.")
    lo, hi = (float(v) for v in std_ratio_limits)
    if not 0 < lo <= 1 <= hi:
        raise OptionError(f"std_ratio_limits must satisfy 0 < low <= 1 <= high, got {std_ratio_limits!r}.")
    out = gen.copy()
    bounds = _bbox(m > 0)
    if bounds is None or s == 0.0:
        return out
    y0, y1, x0, x1 = bounds
    wgt = m[y0:y1, x0:x1, None].astype(np.float64)
    total = wgt.sum()
    g_lab = _lab(gen[y0:y1, x0:x1]).astype(np.float64)
    r_lab = _lab(ref[y0:y1, x0:x1]).astype(np.float64)
    mu_g = (g_lab * wgt).sum((0, 1)) / total
    mu_r = (r_lab * wgt).sum((0, 1)) / total
    if match_std:
        sd_g = np.sqrt(((g_lab - mu_g) ** 2 * wgt).sum((0, 1)) / total)
        sd_r = np.sqrt(((r_lab - mu_r) ** 2 * wgt).sum((0, 1)) / total)
        scale = np.clip(sd_r / np.maximum(sd_g, 1e-6), lo, hi)
    else:
        scale = np.ones(3)
    moved = (g_lab - mu_g) * scale + mu_r
    lab = g_lab + s * (moved - g_lab)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    region = m[y0:y1, x0:x1] > 0
    out[y0:y1, x0:x1][region] = rgb[region]
    return out


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


# -- boxes ------------------------------------------------------------------------------------------
def face_box(landmarks: np.ndarray, shape: Sequence[int], pads: Sequence[int] = (0, 10, 0, 0)) -> Box:
    """Face box from the landmarks' extent plus ``pads = (top, bottom, left, right)`` pixels.

    The tight box is ``floor(min)`` .. ``ceil(max)`` of all landmark x/y, then padded (the pad order
    and the default ``(0, 10, 0, 0)`` follow Wav2Lip's ``--pads``) and clipped to the frame.
    Returns ``(x0, y0, x1, y1)`` ints, half-open. Raises NoFaceError when it has no pixel in the frame.
    """
    h, w = _hw(shape)
    xy = _points(landmarks)
    if len(pads) != 4:
        raise OptionError(f"pads must be 4 integers (top, bottom, left, right), got {pads!r}.")
    top, bottom, left, right = (int(p) for p in pads)
    x0 = int(math.floor(xy[:, 0].min())) - left
    y0 = int(math.floor(xy[:, 1].min())) - top
    x1 = int(math.ceil(xy[:, 0].max())) + right
    y1 = int(math.ceil(xy[:, 1].max())) + bottom
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise NoFaceError("the face lies outside the frame; check the landmarks or reduce the pads.")
    return x0, y0, x1, y1


def smooth_boxes(boxes: Union[np.ndarray, Sequence[Sequence[int]]], window: int = 5) -> np.ndarray:
    """Centred moving average of boxes over time (offline), rounded to ints.

    ``boxes`` ``[N, 4]`` (x0, y0, x1, y1) per frame; ``window`` odd or even >= 1 frames (the average
    covers ``window`` frames centred on each frame, shrinking at both ends). Official Wav2Lip uses a
    forward-looking window of 5 instead; a centred one does not lag. Returns ``int32`` ``[N, 4]``.
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [N, 4], got {list(b.shape)}.")
    if int(window) < 1:
        raise OptionError(f"box smoothing window must be >= 1 frames, got {window!r}.")
    n, half = b.shape[0], (int(window) - 1) / 2.0
    csum = np.vstack([np.zeros((1, 4)), np.cumsum(b, axis=0)])
    out = np.empty_like(b)
    for i in range(n):
        lo, hi = max(0, i - int(math.floor(half))), min(n, i + int(math.ceil(half)) + 1)
        out[i] = (csum[hi] - csum[lo]) / (hi - lo)
    return np.round(out).astype(np.int32)


class BoxSmoother:
    """Causal (streaming) moving average of the last ``window`` boxes.

    ``update(box) -> (x0, y0, x1, y1)`` ints; ``reset()`` forgets the history (call it at a cut).
    """

    def __init__(self, window: int = 5):
        if int(window) < 1:
            raise OptionError(f"box smoothing window must be >= 1 frames, got {window!r}.")
        self.window = int(window)
        self._hist: List[np.ndarray] = []

    def reset(self) -> None:
        self._hist.clear()

    def update(self, box: Sequence[int]) -> Box:
        self._hist.append(np.asarray(box, dtype=np.float64).reshape(4))
        del self._hist[:-self.window]
        mean = np.mean(self._hist, axis=0)
        x0, y0, x1, y1 = (int(v) for v in np.round(mean))
        return x0, y0, x1, y1


# -- crops and paste-back --------------------------------------------------------------------------
def crop_box(frame: np.ndarray, box: Sequence[int], size: Optional[int] = 96,
             interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The box's pixels, resized to ``size x size`` (None: unresized). Returns a new uint8 array."""
    fr = _image(frame, "frame")
    x0, y0, x1, y1 = _clip_box(box, fr.shape[:2])
    crop = fr[y0:y1, x0:x1]
    if size is None:
        return crop.copy()
    return cv2.resize(crop, (int(size), int(size)), interpolation=interpolation)


def paste_patch(frame: np.ndarray, patch: np.ndarray, box: Sequence[int],
                interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Copy of ``frame`` with ``patch`` resized to the box and written into it.

    ``patch`` ``[h, w, 3]`` RGB, uint8 or float in [0, 1] (rounded to uint8). Pixels outside the
    box are bit-exact copies of ``frame``. Returns uint8 ``[H, W, 3]``.
    """
    fr = _image(frame, "frame")
    p = np.asarray(patch)
    if p.ndim != 3 or p.shape[2] != 3:
        raise InputError(f"patch must be an RGB image [h, w, 3], got {list(p.shape)}.")
    if p.dtype != np.uint8:
        p = np.clip(np.round(p.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = _clip_box(box, fr.shape[:2])
    out = fr.copy()
    out[y0:y1, x0:x1] = cv2.resize(p, (x1 - x0, y1 - y0), interpolation=interpolation)
    return out


# -- debugging --------------------------------------------------------------------------------------
def write_debug_images(folder: Union[str, Path], frame: np.ndarray, generated: np.ndarray,
                       mask: np.ndarray, box: Optional[Sequence[int]] = None,
                       landmarks: Optional[np.ndarray] = None, prefix: str = "frame") -> List[Path]:
    """Write PNGs of one frame's compositing to ``folder`` (created) and return their paths.

    Files ``{prefix}_frame.png``, ``_generated.png``, ``_mask.png`` (mask * 255, grey),
    ``_composite.png``, ``_overlay.png`` (frame with the mask tinted red, the box in green and the
    lip/oval landmarks in blue) and, with a ``box``, ``_crop_frame.png`` / ``_crop_generated.png``.
    Raises OutputError when a file cannot be written.
    """
    fr = _image(frame, "frame")
    gen = _image(generated, "generated image")
    m = np.clip(_mask(mask, fr.shape[:2]), 0.0, 1.0)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create debug folder {folder} ({exc.strerror}); choose a writable folder.")
    overlay = fr.astype(np.float32)
    overlay[..., 0] = overlay[..., 0] * (1 - 0.5 * m) + 255 * 0.5 * m
    overlay = np.clip(np.round(overlay), 0, 255).astype(np.uint8)
    if landmarks is not None:
        xy = _points(landmarks)
        for idx in (LIPS_OUTER, FACE_OVAL):
            ring = np.round(xy[list(idx)] - 0.5).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(overlay, [ring], True, (0, 0, 255), 1, cv2.LINE_AA)
    images = {"frame": fr, "generated": gen, "mask": np.round(m * 255).astype(np.uint8),
              "composite": composite(fr, gen, m), "overlay": overlay}
    if box is not None:
        x0, y0, x1, y1 = _clip_box(box, fr.shape[:2])
        cv2.rectangle(overlay, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
        images["crop_frame"] = fr[y0:y1, x0:x1]
        images["crop_generated"] = gen[y0:y1, x0:x1]
    paths = []
    for name, img in images.items():
        path = folder / f"{prefix}_{name}.png"
        bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr):
            raise OutputError(f"cannot write debug image {path}; check the folder's permissions and free space.")
        paths.append(path)
    return paths
