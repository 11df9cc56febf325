"""Mouth interior for the lite renderer: cavity shading, tongue, upper and lower teeth.

When the mouth opens wider than in the source, the hole inside the inner-lip contour is painted
here. If the source already shows teeth (an open smile), its own mouth interior is kept: the upper
half follows the upper lip (upper teeth sit on the skull), the lower half follows the lower lip
(lower teeth ride on the jaw); only what neither half covers is synthesised.
All colours are derived from the portrait (lip colour, the source's teeth) so the result matches.
"""
from __future__ import annotations

import cv2
import numpy as np

from ...face import topology as T

_SS = 4  # supersampling for anti-aliased polygon masks


def _aa_polygon_mask(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 [h, w] coverage in [0, 1] of ``poly`` (float [n, 2] local pixel coords)."""
    h, w = shape
    big = np.zeros((h * _SS, w * _SS), np.uint8)
    pts = np.round((poly + 0.5) * _SS - 0.5).astype(np.int32)
    cv2.fillPoly(big, [pts], 255, cv2.LINE_8)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _chain_y(chain: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(chain[:, 0])
    return np.interp(xs, chain[order, 0], chain[order, 1])


class MouthInterior:
    """Paints the inside of the mouth for a source portrait.

    src_img: uint8 RGB [H, W, 3]; points: float [478, >=2] landmarks in that image's pixels;
    mouth_width: pixels between the outer corners.
    """

    def __init__(self, src_img: np.ndarray, points: np.ndarray, mouth_width: float):
        self.W = float(mouth_width)
        P = np.asarray(points, np.float64)[:, :2]
        self.src_points = P
        inner = P[T.MOUTH_INNER_RING]
        outer = P[T.MOUTH_OUTER_RING]
        h, w = src_img.shape[:2]
        x0, y0 = np.floor(outer.min(0)).astype(int) - 2
        x1, y1 = np.ceil(outer.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        patch = src_img[y0:y1, x0:x1].astype(np.float32)
        m_in = _aa_polygon_mask(inner - [x0, y0], patch.shape[:2])
        m_out = _aa_polygon_mask(outer - [x0, y0], patch.shape[:2])
        lips = (m_out - m_in) > 0.9
        lip_rgb = patch[lips].mean(axis=0) if lips.any() else np.array([170.0, 90.0, 90.0])
        self.lip_rgb = lip_rgb
        self.cavity_rgb = lip_rgb * 0.18 + np.array([12.0, 3.0, 4.0])
        self.tongue_rgb = lip_rgb * 0.55 + np.array([70.0, 18.0, 22.0])
        gaps = np.linalg.norm(P[T.LIPS_INNER_UPPER[3:8]] - P[T.LIPS_INNER_LOWER[3:8]], axis=1)
        self.src_gap = float(gaps.mean())
        inside = m_in > 0.95
        self.teeth_rgb = np.array([238.0, 232.0, 218.0])
        self.keep_source = False
        if self.src_gap > 0.05 * self.W and inside.sum() > 20:
            px = patch[inside]
            lum = px.mean(axis=1)
            sat = px.max(axis=1) - px.min(axis=1)
            bright = (lum > np.percentile(lum, 60)) & (sat < 80)
            if bright.sum() > 10 and lum[bright].mean() > 120:
                self.teeth_rgb = px[bright].mean(axis=0)
                self.keep_source = True
        if self.keep_source:
            self.src_patch = patch
            self.src_origin = np.array([x0, y0], np.float64)
            self.src_inner_mask = m_in
            mid = 0.5 * (P[T.LIPS_INNER_UPPER] + P[T.LIPS_INNER_LOWER])
            xs = np.arange(x0, x1) + 0.5
            self.src_split = _chain_y(mid, xs) - y0  # per column: rows above go with the upper lip

    # ------------------------------------------------------------------
    def paint(self, frame: np.ndarray, dst_points: np.ndarray) -> None:
        """Paint the interior of the destination inner-lip polygon into ``frame`` (uint8, in place)."""
        Q = np.asarray(dst_points, np.float64)[:, :2]
        inner = Q[T.MOUTH_INNER_RING]
        h, w = frame.shape[:2]
        x0, y0 = np.floor(inner.min(0)).astype(int) - 1
        x1, y1 = np.ceil(inner.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 2 or y1 - y0 < 1:
            return
        gaps = np.linalg.norm(Q[T.LIPS_INNER_UPPER[3:8]] - Q[T.LIPS_INNER_LOWER[3:8]], axis=1)
        if gaps.max() < 0.6:
            return
        shape = (y1 - y0, x1 - x0)
        local = inner - [x0, y0]
        mask = _aa_polygon_mask(local, shape)
        if mask.max() <= 0.0:
            return
        img = self._synthesize(Q, (x0, y0), shape, mask)
        if self.keep_source:
            self._overlay_source_teeth(img, Q, (x0, y0), shape)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        a = mask[..., None]
        frame[y0:y1, x0:x1] = np.clip(roi * (1 - a) + img * a + 0.5, 0, 255).astype(np.uint8)

    def _synthesize(self, Q, origin, shape, mask):
        x0, y0 = origin
        h, w = shape
        W = self.W
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs_abs = xs[0] + x0 + 0.5
        up = _chain_y(Q[T.LIPS_INNER_UPPER], xs_abs) - y0
        lo = _chain_y(Q[T.LIPS_INNER_LOWER], xs_abs) - y0
        gap = np.maximum(lo - up, 0.0)
        cx = 0.5 * (Q[T.MOUTH_CORNERS_INNER[0], 0] + Q[T.MOUTH_CORNERS_INNER[1], 0]) - x0
        half = max(1.0, 0.5 * abs(Q[T.MOUTH_CORNERS_INNER[1], 0] - Q[T.MOUTH_CORNERS_INNER[0], 0]))
        u = (xs - cx) / half  # -1..1 across the mouth
        lateral = np.clip(1.0 - 0.5 * u ** 2, 0.3, 1.0)
        # cavity: dark at the back, a little lighter near the lips
        inside = (mask > 0).astype(np.uint8)
        dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3) if inside.any() else np.zeros(shape, np.float32)
        shade = 0.55 + 0.6 * np.exp(-dist / max(1.0, 0.05 * W))
        img = self.cavity_rgb[None, None, :] * shade[..., None]
        # tongue: an ellipse resting on the lower teeth, visible when the mouth is open
        t_cy = lo - 0.02 * W
        ty = (ys - t_cy[None, :]) / max(1.0, 0.16 * W)
        tongue = np.clip(1.0 - (u * 1.25) ** 2 - ty ** 2, 0.0, 1.0)
        tongue = np.clip(tongue * 4.0, 0, 1) * (ys > (up + 0.35 * gap)[None, :])
        t_shade = (0.55 + 0.45 * np.clip((ys - (lo - 0.3 * gap)[None, :]) / max(1.0, 0.1 * W) + 0.5, 0, 1))
        img = img * (1 - tongue[..., None]) + (self.tongue_rgb * lateral[..., None] * t_shade[..., None]) * tongue[..., None]
        # lower teeth: a band above the lower lip, shorter at the sides
        h_lo = np.minimum(0.055 * W * np.clip(1 - u[0] ** 2, 0, 1) ** 0.5, 0.35 * gap)
        lo_band = np.clip((ys - (lo - h_lo)[None, :]) + 0.5, 0, 1) * (ys < lo[None, :] + 0.5)
        img = self._teeth(img, lo_band, u, lateral, 0.82, xs, cx, W)
        # upper teeth: a band under the upper lip, taller at the centre
        h_up = np.minimum(0.11 * W * np.clip(1 - u[0] ** 2, 0, 1) ** 0.5, 0.62 * gap)
        up_band = np.clip(((up + h_up)[None, :] - ys) + 0.5, 0, 1) * (ys > up[None, :] - 0.5)
        img = self._teeth(img, up_band, u, lateral, 1.0, xs, cx, W)
        # the upper lip shadows the top of the teeth
        shadow = np.clip((ys - up[None, :]) / max(1.0, 0.03 * W), 0, 1)
        img *= (0.7 + 0.3 * shadow)[..., None]
        return img

    def _teeth(self, img, band, u, lateral, brightness, xs, cx, W):
        band = np.clip(band, 0, 1)
        if not band.any():
            return img
        # teeth recede into the dark at the mouth corners
        band = band * np.clip((1.0 - np.abs(u)) / 0.2, 0, 1)
        # separations between teeth: incisors ~0.09 W wide at the centre, narrower to the sides
        s = (xs - cx) / max(1.0, W)
        phase = np.sign(s) * (np.abs(s) / 0.09) ** 0.85
        edge = np.abs(phase - np.round(phase))  # 0 at a separation, 0.5 mid-tooth
        groove = 1.0 - 0.16 * np.clip(1.0 - edge / 0.06, 0, 1)
        # each tooth is a little brighter in its middle (rounded enamel)
        enamel = 0.94 + 0.06 * np.sin(np.pi * np.clip(edge * 2, 0, 1))
        col = self.teeth_rgb[None, None, :] * (brightness * lateral * groove * enamel)[..., None]
        return img * (1 - band[..., None]) + col * band[..., None]

    def _overlay_source_teeth(self, img, Q, origin, shape):
        """Keep the portrait's own teeth: split at the lip midline, move each half with its lip."""
        P = self.src_points
        x0, y0 = origin
        h, w = shape
        du = Q[T.UPPER_LIP_MID_INNER] - P[T.UPPER_LIP_MID_INNER]
        dl = Q[T.LOWER_LIP_MID_INNER] - P[T.LOWER_LIP_MID_INNER]
        sw = np.linalg.norm(Q[T.MOUTH_CORNERS_INNER[1]] - Q[T.MOUTH_CORNERS_INNER[0]]) / max(
            1.0, np.linalg.norm(P[T.MOUTH_CORNERS_INNER[1]] - P[T.MOUTH_CORNERS_INNER[0]]))
        c_src = 0.5 * (P[T.MOUTH_CORNERS_INNER[0]] + P[T.MOUTH_CORNERS_INNER[1]])
        ph, pw = self.src_patch.shape[:2]
        rows = np.arange(ph)[:, None]
        upper_part = (rows < self.src_split[None, :]).astype(np.float32)
        for part, d in ((upper_part, du), (1.0 - upper_part, dl)):
            m = self.src_inner_mask * part
            # affine: scale x about the mouth centre, then translate; source patch -> local canvas
            A = np.array([[sw, 0, (c_src[0] + d[0]) - sw * c_src[0] + self.src_origin[0] * sw - x0],
                          [0, 1, d[1] + self.src_origin[1] - y0]], np.float32)
            warped = cv2.warpAffine(self.src_patch, A, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
            wm = cv2.warpAffine(m, A, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
            img[...] = img * (1 - wm) + warped * wm
