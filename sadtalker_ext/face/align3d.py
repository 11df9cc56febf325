"""SadTalker's portrait preprocessing without its extra detectors: crop boxes and 3DMM alignment.

The official pipeline finds faces with RetinaFace and 98 landmarks (about 300 MB more weights).
Here the project's mediapipe mesh (478 points, :mod:`.landmarks`) is mapped to the iBUG 68-point
convention (:data:`.topology.MESH_TO_68`) and then the official geometry is followed exactly:

* :func:`sadtalker_crop` - ``Preprocesser.align_face`` (``src/utils/croper.py``): an FFHQ-style
  oriented square from the eye and mouth positions, its bounding box plus a 10% border (the
  "extended" crop of ``extcrop``/``extfull``) and the square itself (``crop``/``full``).
* :func:`align_for_recon` - ``align_img`` / ``POS`` / ``resize_n_crop_img``
  (``src/face3d/util/preprocess.py``): five points (the eye centres as means of each eye's corner
  pair, the nose tip, the mouth corners), a least-squares fit to the standard 3D landmarks
  (:func:`standard_five_points`, from ``similarity_Lm3D_all.json``) giving a scale and a
  translation, and the 224 x 224 input of the 3DMM regressor with rescale factor 102. Its three
  numbers ``(s, tx, ty)`` are the crop parameters that complete SadTalker's 73 coefficients.

numpy, OpenCV and Pillow only (no torch): the regressor itself is in :mod:`.recon_net`.

Coordinates: pixels, x to the right, y down (image convention) unless a docstring says otherwise;
the official alignment works with y flipped (``y' = H - 1 - y``), which :func:`align_for_recon` does
internally.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import InputError
from .topology import MESH_TO_68

#: The standard 3D landmarks (68 x 3), a copy of SadTalker's ``src/config/similarity_Lm3D_all.mat``.
STANDARD_LANDMARKS_FILE = Path(__file__).with_name("similarity_Lm3D_all.json")

RECON_SIZE = 224         #: side of the 3DMM regressor's input, pixels
RESCALE_FACTOR = 102.0   #: ``align_img``'s rescale factor (pixels per unit of the standard face)

#: 0-based 68-point indices used for the five points: nose tip, the corners of each eye, the
#: mouth corners (1-based 31, 37/40, 43/46, 49, 55 in the official code).
NOSE_TIP, EYE_A, EYE_B, MOUTH_A, MOUTH_B = 30, (36, 39), (42, 45), 48, 54

Box = Tuple[int, int, int, int]


# ------------------------------------------------------------------------------------------------
# landmarks
# ------------------------------------------------------------------------------------------------

def landmarks68(points: np.ndarray) -> np.ndarray:
    """mediapipe mesh points ``[478, 2+]`` -> ``[68, 2]`` float64 x, y in the 68-point order.

    Uses :data:`~sadtalker_ext.face.topology.MESH_TO_68` (one mesh index per 68-point landmark,
    an approximation of the iBUG 300-W convention). Raises InputError for another shape.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < max(MESH_TO_68) + 1 or pts.shape[1] < 2:
        raise InputError(f"expected mediapipe landmarks [478, 2 or 3], got {pts.shape}")
    return pts[MESH_TO_68, :2].copy()


def five_points(lm68: np.ndarray) -> np.ndarray:
    """``[68, 2+]`` -> ``[5, 2+]``: eye centre A, eye centre B, nose tip, mouth corner A, B.

    Eye centres are means of the two corners of each eye; the order is the official
    ``extract_5p`` order (image-left eye first).
    """
    lm = np.asarray(lm68, dtype=np.float64)
    return np.stack([lm[list(EYE_A)].mean(axis=0), lm[list(EYE_B)].mean(axis=0), lm[NOSE_TIP],
                     lm[MOUTH_A], lm[MOUTH_B]], axis=0)


@lru_cache(maxsize=1)
def standard_landmarks() -> np.ndarray:
    """The standard 3D face landmarks ``[68, 3]`` float64 (read-only)."""
    with open(STANDARD_LANDMARKS_FILE, encoding="utf-8") as fh:
        lm = np.asarray(json.load(fh)["lm"], dtype=np.float64)
    lm.setflags(write=False)
    return lm


def standard_five_points() -> np.ndarray:
    """The five points of :func:`standard_landmarks`, ``[5, 3]`` (``load_lm3d``)."""
    return five_points(standard_landmarks())


# ------------------------------------------------------------------------------------------------
# SadTalker's crop (src/utils/croper.py align_face)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropBoxes:
    """The two crops of SadTalker's preprocessing, in pixels of the image they were computed on.

    square: (x0, y0, x1, y1) of the oriented face square (``crop`` / ``full`` modes; the official
        ``clx + lx, cly + ly, clx + rx, cly + ry``).
    extended: (x0, y0, x1, y1) of the square's bounding box plus a border of 10% of its side
        (at least 3 px), clipped to the image (``extcrop`` / ``extfull``; the official ``crop``).
    quad: ``[4, 2]`` float64 corners of the (possibly rotated) square, before clipping.
    """

    square: Box
    extended: Box
    quad: np.ndarray

    def box(self, mode: str) -> Box:
        """The box used by preprocess ``mode`` (``ext*`` -> extended, else square)."""
        return self.extended if mode.startswith("ext") else self.square


def sadtalker_crop(lm68: np.ndarray, image_size: Tuple[int, int]) -> CropBoxes:
    """SadTalker's face crop from 68 landmarks (``Preprocesser.align_face``).

    Args:
        lm68: ``[68, 2]`` landmarks in pixels (x, y down).
        image_size: (width, height) of the image.

    Returns:
        :class:`CropBoxes`. The square's side is ``2 * max(2 * |eye_to_eye|, 1.8 *
        |eye_to_mouth|)``, centred 10% of the way from the eyes' midpoint towards the mouth.

    Differences from the official code (none changes a result on normal portraits): no
    down-scaling of very large images first (the boxes are the same region, in full-resolution
    pixels), and the square's bottom edge is clipped to the image height (the official code clips
    it to the width).

    Raises:
        InputError: degenerate landmarks (eyes and mouth at one point) or an empty box.
    """
    lm = np.asarray(lm68, dtype=np.float64)
    w, h = int(image_size[0]), int(image_size[1])
    eye_l = lm[36:42].mean(axis=0)
    eye_r = lm[42:48].mean(axis=0)
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = float(np.hypot(*x))
    if not np.isfinite(norm) or norm < 1e-6:
        raise InputError("the face landmarks are degenerate; use a photo with a clearly visible face")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(*x)) * 2
    border = max(int(np.rint(qsize * 0.1)), 3)
    ex0 = max(int(np.floor(quad[:, 0].min())) - border, 0)
    ey0 = max(int(np.floor(quad[:, 1].min())) - border, 0)
    ex1 = min(int(np.ceil(quad[:, 0].max())) + border, w)
    ey1 = min(int(np.ceil(quad[:, 1].max())) + border, h)
    q = quad - np.array([ex0, ey0], dtype=np.float64) + 0.5
    cw, ch = ex1 - ex0, ey1 - ey0
    lx = int(max(min(q[0, 0], q[1, 0]), 0))
    ly = int(max(min(q[0, 1], q[3, 1]), 0))
    rx = int(min(max(q[2, 0], q[3, 0]), cw))
    ry = int(min(max(q[1, 1], q[2, 1]), ch))
    square = (ex0 + lx, ey0 + ly, ex0 + rx, ey0 + ry)
    extended = (ex0, ey0, ex1, ey1)
    for b in (square, extended):
        if b[2] - b[0] < 8 or b[3] - b[1] < 8:
            raise InputError("the face is too small or outside the image; use a photo with a face "
                             "at least 64 px wide")
    return CropBoxes(square=square, extended=extended, quad=quad)


# ------------------------------------------------------------------------------------------------
# 3DMM alignment (src/face3d/util/preprocess.py)
# ------------------------------------------------------------------------------------------------

def fit_scale_translation(points2d: np.ndarray, points3d: np.ndarray) -> Tuple[np.ndarray, float]:
    """Least-squares projection of 3D points onto 2D points -> (translation ``[2]``, scale).

    Solves ``p2d ~ [R1; R2] p3d + t`` for a general 2x3 linear map and a translation (the official
    ``POS``) and returns ``t`` and ``s = (|R1| + |R2|) / 2``. Inputs ``[N, 2]`` and ``[N, 3]``,
    N >= 4 (5 here); 2D points with y pointing up.
    """
    xp = np.asarray(points2d, dtype=np.float64)
    x = np.asarray(points3d, dtype=np.float64)
    n = xp.shape[0]
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = x
    a[0::2, 3] = 1
    a[1::2, 4:7] = x
    a[1::2, 7] = 1
    b = xp.reshape(2 * n)
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(s)


@dataclass(frozen=True)
class ReconInput:
    """The 3DMM regressor's input for one image.

    image: uint8 RGB ``[224, 224, 3]`` (zero where the crop leaves the image).
    crop_params: float32 ``[3]`` = (s, tx, ty): the image was scaled by ``s`` and the standard face
        centre sits at (tx, ty) in y-up pixels of the input image; SadTalker's coefficients 70:73.
    trans_params: float64 ``[5]`` = (W, H, s, tx, ty), the official ``trans_params``.
    """

    image: np.ndarray
    crop_params: np.ndarray
    trans_params: np.ndarray

    def as_float(self) -> np.ndarray:
        """float32 ``[3, 224, 224]`` in [0, 1], the regressor's input layout."""
        return np.ascontiguousarray(self.image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def align_for_recon(image: np.ndarray, lm68: np.ndarray, *, target_size: int = RECON_SIZE,
                    rescale_factor: float = RESCALE_FACTOR) -> ReconInput:
    """Cut the 3DMM regressor's input out of ``image`` (official ``align_img``).

    Args:
        image: uint8 RGB ``[H, W, 3]`` (SadTalker passes the face crop resized to 256 or 512).
        lm68: ``[68, 2]`` landmarks on ``image``, pixels, y down.
        target_size: output side (224). rescale_factor: 102.

    The image is resized (Pillow bicubic) by ``s = rescale_factor / s_fit`` and cropped to
    ``target_size`` around the fitted face centre, exactly as ``resize_n_crop_img``.

    Raises:
        InputError: the fit is degenerate (landmarks collapsed to a point).
    """
    from PIL import Image

    img = np.ascontiguousarray(image)
    h0, w0 = img.shape[:2]
    lm = np.asarray(lm68, dtype=np.float64).copy()
    lm[:, 1] = h0 - 1 - lm[:, 1]
    t, s_fit = fit_scale_translation(five_points(lm), standard_five_points())
    if not np.isfinite(s_fit) or s_fit <= 1e-6:
        raise InputError("the face landmarks are degenerate; use a photo with a clearly visible face")
    s = rescale_factor / s_fit
    w, h = int(w0 * s), int(h0 * s)
    if w < 1 or h < 1 or w > 16384 or h > 16384:
        raise InputError(f"the face is too small or too large in the image (scale {s:.3g}); crop "
                         f"the portrait closer to the face")
    left = int(w / 2 - target_size / 2 + float((t[0] - w0 / 2) * s))
    up = int(h / 2 - target_size / 2 + float((h0 / 2 - t[1]) * s))
    pil = Image.fromarray(img).resize((w, h), resample=Image.BICUBIC)
    out = np.asarray(pil.crop((left, up, left + target_size, up + target_size)), dtype=np.uint8)
    crop_params = np.array([s, t[0], t[1]], dtype=np.float32)
    return ReconInput(image=np.ascontiguousarray(out), crop_params=crop_params,
                      trans_params=np.array([w0, h0, s, t[0], t[1]], dtype=np.float64))


__all__ = ["CropBoxes", "RECON_SIZE", "RESCALE_FACTOR", "ReconInput", "STANDARD_LANDMARKS_FILE",
           "align_for_recon", "fit_scale_translation", "five_points", "landmarks68",
           "sadtalker_crop", "standard_five_points", "standard_landmarks"]
