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
# the general mask code lives below both post stages (the refinement uses it too); re-exported here
from ..face.masks import (FACE_OVAL, LIPS_INNER, LIPS_OUTER, Box, _bbox, _clip_box, _hw, _image, _mask,  # noqa: F401
                          _non_negative, _points, composite, face_mask, feather, grow_mask, mouth_mask,
                          polygon_mask)

__all__ = [
    "LIPS_OUTER", "LIPS_INNER", "FACE_OVAL",
    "Box", "MaskConfig",
    "polygon_mask", "grow_mask", "mouth_mask", "face_mask", "feather", "lipsync_mask",
    "match_color", "composite",
    "face_box", "smooth_boxes", "BoxSmoother",
    "crop_box", "paste_patch", "write_debug_images",
]


# -- the lip-sync mask -------------------------------------------------------------------------------
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
