"""Carrying a keyframe's refinement to nearby frames with dense optical flow (OpenCV).

The refinement of keyframe ``k`` is its **residual** ``r_k = refined_k - frame_k`` (float32, zero
outside its paste-back mask). For a frame ``t`` between keyframes ``p`` and ``n``:

1. dense flow ``F`` from frame ``t`` to keyframe ``k`` on the unrefined frames (grey levels), over
   the union of the residual's box and ``t``'s region plus a motion margin
   (``cv2.DISOpticalFlow`` MEDIUM preset, or ``cv2.calcOpticalFlowFarneback``; computed at most
   256 px wide and scaled up), so that ``frame_t(x) ~ frame_k(x + F(x))``;
2. ``r_k`` and ``frame_k`` are warped to ``t`` by ``F`` (bilinear ``cv2.remap``; outside = 0);
3. a per-pixel confidence ``c_k = exp(-(e / tau)^2)`` from the photometric error
   ``e = |frame_t - warp(frame_k)|`` (mean over RGB, Gaussian-smoothed, ``tau`` = 16 levels) fades
   the carried refinement where the flow is wrong (occlusion, the mouth opening);
4. ``residual_t = w_p c_p warp(r_p) + w_n c_n warp(r_n)`` with the temporal weights of
   :func:`blend_weight`; the stage then pastes ``frame_t + residual_t`` with ``t``'s own
   feathered mask (pixels outside it stay bit-exact).

Carrying the residual rather than the refined pixels keeps each frame's own motion (the mouth
shape comes from frame ``t``; only the texture detail is transported). numpy + OpenCV only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["KeyResidual", "FlowCarrier", "blend_weight", "union_box"]

Box = Tuple[int, int, int, int]
TAU = 16.0  #: photometric error (grey levels) at which the confidence is exp(-1)


@dataclass
class KeyResidual:
    """A refined keyframe: ``index``, the unrefined ``frame`` (uint8 ``[H, W, 3]``), and the residual
    ``residual`` (float32 ``[y1-y0, x1-x0, 3]``) over ``box`` (inside the frame), or None when the
    keyframe had no face (nothing to carry)."""

    index: int
    frame: np.ndarray
    residual: Optional[np.ndarray]
    box: Optional[Box]


def union_box(a: Optional[Box], b: Optional[Box]) -> Optional[Box]:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def blend_weight(t: int, prev: Optional[int], nxt: Optional[int], limit: int) -> float:
    """Weight of the next keyframe ``nxt`` for frame ``t`` (the previous one gets ``1 - w``).

    limit: the most frames the stage may buffer while waiting for ``nxt`` (>= 1).

    * no next keyframe (after the last one): 0.
    * between ``prev < t < nxt``: with ``span = min(nxt - prev, limit)``,
      ``w = clip(1 - (nxt - t) / span, 0, 1)`` - plain linear blending when the keyframes are at
      most ``limit`` frames apart; otherwise the hand-over happens over the last ``span`` frames
      before ``nxt`` (earlier frames use ``prev`` alone).
    * before the first keyframe (``prev`` None): 1 when ``nxt <= limit``; else
      ``clip((limit - (nxt - t)) / max(1, limit // 2), 0, 1)`` (a fade-in over half the buffer;
      the missing side counts as "no refinement").

    ``w > 0`` exactly for the frames that must wait for ``nxt``; there are at most ``limit - 1``.
    """
    if nxt is None:
        return 0.0
    limit = max(1, int(limit))
    if prev is None:
        if nxt <= limit:
            return 1.0
        return float(min(1.0, max(0.0, (limit - (nxt - t)) / max(1, limit // 2))))
    span = min(nxt - prev, limit)
    return float(min(1.0, max(0.0, 1.0 - (nxt - t) / span)))


class FlowCarrier:
    """Warps keyframe residuals to other frames (see the module doc).

    method: "dis" (default, fast) or "farneback". margin: extra context around the regions for
    the flow, as a fraction of the region's larger side (plus 8 px). max_side: regions larger than
    this (pixels) are analysed downscaled to it.
    """

    def __init__(self, method: str = "dis", margin: float = 0.15, max_side: int = 256):
        self.method = method
        self.margin = float(margin)
        self.max_side = int(max_side)
        self._dis = None

    def _raw_flow(self, gray_t: np.ndarray, gray_k: np.ndarray) -> np.ndarray:
        if self.method == "farneback":
            return cv2.calcOpticalFlowFarneback(gray_t, gray_k, None, pyr_scale=0.5, levels=4, winsize=21,
                                                iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return self._dis.calc(gray_t, gray_k, None)

    def flow(self, gray_t: np.ndarray, gray_k: np.ndarray) -> np.ndarray:
        """Dense flow ``[h, w, 2]`` float32 with ``gray_t(x) ~ gray_k(x + flow(x))``. Regions larger
        than ``max_side`` are analysed downscaled (area averaging) and the flow is scaled back up
        (bilinear), which keeps the cost per frame flat for large faces."""
        h, w = gray_t.shape[:2]
        scale = self.max_side / max(h, w)
        if scale >= 1.0:
            return self._raw_flow(gray_t, gray_k)
        sw, sh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
        small = self._raw_flow(cv2.resize(gray_t, (sw, sh), interpolation=cv2.INTER_AREA),
                               cv2.resize(gray_k, (sw, sh), interpolation=cv2.INTER_AREA))
        big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        big[..., 0] *= w / sw
        big[..., 1] *= h / sh
        return big

    def carry(self, frame_t: np.ndarray, key: KeyResidual, region: Box) -> Tuple[np.ndarray, np.ndarray]:
        """The residual of ``key`` warped onto ``frame_t`` over ``region`` (inside the frame), and
        the confidence: (float32 ``[h, w, 3]``, float32 ``[h, w]`` in [0, 1])."""
        rx0, ry0, rx1, ry1 = region
        out_shape = (ry1 - ry0, rx1 - rx0)
        if key.residual is None or key.box is None:
            return np.zeros(out_shape + (3,), np.float32), np.zeros(out_shape, np.float32)
        h, w = frame_t.shape[:2]
        ux0, uy0, ux1, uy1 = union_box(region, key.box)
        m = int(math.ceil(self.margin * max(ux1 - ux0, uy1 - uy0))) + 8
        ux0, uy0, ux1, uy1 = max(0, ux0 - m), max(0, uy0 - m), min(w, ux1 + m), min(h, uy1 + m)
        crop_t = frame_t[uy0:uy1, ux0:ux1]
        crop_k = key.frame[uy0:uy1, ux0:ux1]
        g_t = cv2.cvtColor(crop_t, cv2.COLOR_RGB2GRAY)
        g_k = cv2.cvtColor(crop_k, cv2.COLOR_RGB2GRAY)
        flow = self.flow(g_t, g_k)
        # only the target region's pixels are needed
        sy0, sy1, sx0, sx1 = ry0 - uy0, ry1 - uy0, rx0 - ux0, rx1 - ux0
        f = flow[sy0:sy1, sx0:sx1]
        gx, gy = np.meshgrid(np.arange(sx0, sx1, dtype=np.float32), np.arange(sy0, sy1, dtype=np.float32))
        map_x = gx + f[..., 0]
        map_y = gy + f[..., 1]
        res = np.zeros((uy1 - uy0, ux1 - ux0, 3), np.float32)
        kx0, ky0, kx1, ky1 = key.box
        res[ky0 - uy0:ky1 - uy0, kx0 - ux0:kx1 - ux0] = key.residual
        warped = cv2.remap(res, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        warped_k = cv2.remap(crop_k.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        err = np.abs(crop_t[sy0:sy1, sx0:sx1].astype(np.float32) - warped_k).mean(axis=2)
        err = cv2.GaussianBlur(err, (5, 5), 1.0)
        conf = np.exp(-(err / TAU) ** 2).astype(np.float32)
        return warped, conf
