"""Measurements on rendered frames: mouth opening and upper-face similarity.

Used by the tests and benches to judge lip-sync and identity on the *output* frames, with the
landmark detector run on them (not the engine's own idea of where the lips are).
"""
from __future__ import annotations

import numpy as np

from . import topology as T

# upper face for identity checks: eyes, brows and the forehead above them
UPPER_FACE = sorted(set(T.RIGHT_EYE_RING + T.LEFT_EYE_RING + T.RIGHT_BROW + T.LEFT_BROW +
                        [10, 109, 67, 103, 338, 297, 332, 151, 9, 8, 168]))


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width (unitless, ~0 closed, ~0.3 wide open).

    points: [478, >=2] landmarks. Gap = mean distance of the three central inner-lip pairs.
    """
    P = np.asarray(points, np.float64)[:, :2]
    pairs = [(82, 87), (13, 14), (312, 317)]
    gap = np.mean([np.linalg.norm(P[a] - P[b]) for a, b in pairs])
    width = np.linalg.norm(P[T.MOUTH_CORNERS_OUTER[0]] - P[T.MOUTH_CORNERS_OUTER[1]])
    return float(gap / max(width, 1e-6))


def best_lag_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 3) -> tuple[float, int]:
    """Max Pearson r of x[t] vs y[t + lag] over lags -max_lag..max_lag; returns (r, lag)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    best = (-2.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = x[: len(x) - lag], y[lag:]
        else:
            a, b = x[-lag:], y[: len(y) + lag]
        if len(a) < 3 or a.std() == 0 or b.std() == 0:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[0]:
            best = (r, lag)
    return best


def upper_face_ssim(src: np.ndarray, src_pts: np.ndarray, frame: np.ndarray, frame_pts: np.ndarray) -> float:
    """SSIM of the upper face (eyes, brows, forehead) after aligning ``frame`` onto ``src``.

    Alignment: similarity transform fitted on the upper-face landmarks (cv2.estimateAffinePartial2D).
    Both images uint8 RGB; SSIM on grayscale over the landmarks' bounding box.
    """
    import cv2
    from skimage.metrics import structural_similarity

    a = np.asarray(src_pts, np.float32)[UPPER_FACE, :2]
    b = np.asarray(frame_pts, np.float32)[UPPER_FACE, :2]
    M, _ = cv2.estimateAffinePartial2D(b, a, method=cv2.LMEDS)
    if M is None:
        return 0.0
    h, w = src.shape[:2]
    aligned = cv2.warpAffine(frame, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x0, y0 = np.floor(a.min(0)).astype(int)
    x1, y1 = np.ceil(a.max(0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    g1 = cv2.cvtColor(src[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    g2 = cv2.cvtColor(aligned[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    return float(structural_similarity(g1, g2, data_range=255))
