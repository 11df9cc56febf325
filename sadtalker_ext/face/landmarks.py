"""Face detection and 478-point landmarks with the models that ship inside the mediapipe wheel.

mediapipe 0.10.x's legacy solutions carry their TFLite models in the package
(``modules/face_detection/*.tflite``, ``modules/face_landmark/face_landmark_with_attention.tflite``),
so nothing is downloaded. Faces are found with the full-range BlazeFace detector on a downscaled
copy (long side <= 1024 px), then each face crop is cut from the full-resolution image and passed
to FaceMesh for precise landmarks.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import NoFaceError, OptionError

DETECT_MAX_SIDE = 1024
MESH_CROP_SIDE = 384
_lock = threading.Lock()  # mediapipe graphs are not re-entrant


@dataclass(frozen=True)
class Face:
    """One detected face.

    points: float32 [478, 3]; x, y in pixels of the image given, z in the same pixel scale
        (mediapipe's relative depth; smaller = nearer the camera).
    box: (x0, y0, x1, y1) float pixels, the extent of the landmarks.
    score: detector confidence in [0, 1].
    """

    points: np.ndarray
    box: tuple[float, float, float, float]
    score: float

    @property
    def size(self) -> float:
        """Larger side of the landmark box, pixels."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float((x1 - x0) * (y1 - y0))

    def scaled(self, s: float, dx: float = 0.0, dy: float = 0.0) -> "Face":
        """The same face in an image scaled by ``s`` then shifted by (dx, dy) pixels."""
        p = self.points * s
        p[:, 0] += dx
        p[:, 1] += dy
        x0, y0, x1, y1 = self.box
        return Face(points=p.astype(np.float32), box=(x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy),
                    score=self.score)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the C++ start-up chatter of mediapipe/TFLite (written straight to fd 2)."""
    if os.environ.get("SADTALKER_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: the CLI's Ctrl-C handler (cli/sigint.py) waits until these return: an interrupt inside them would leave
#: mediapipe's graph threads printing their start-up chatter after the CLI's last line
_DEFER_SIGINT = ("_detectors",)


@lru_cache(maxsize=1)
def _detectors():
    from mediapipe.python.solutions import face_detection, face_mesh
    with _quiet_native_stderr():
        full = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        short = face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
        mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                  min_detection_confidence=0.3)
        mesh_multi = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=8, refine_landmarks=True,
                                        min_detection_confidence=0.5)
        warm = np.zeros((64, 64, 3), np.uint8)  # first inference prints the rest of the chatter
        for g in (full, short, mesh, mesh_multi):
            g.process(warm)
    return full, short, mesh, mesh_multi


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    import cv2
    h, w = img.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _mesh_points(result, w: int, h: int) -> list[np.ndarray]:
    out = []
    for lms in result.multi_face_landmarks or []:
        pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lms.landmark], dtype=np.float32)
        if pts.shape[0] == 478:
            out.append(pts)
    return out


def _face_from_points(pts: np.ndarray, score: float) -> Face:
    x0, y0 = pts[:468, :2].min(axis=0)
    x1, y1 = pts[:468, :2].max(axis=0)
    return Face(points=pts, box=(float(x0), float(y0), float(x1), float(y1)), score=float(score))


def detect_faces(image: np.ndarray) -> list[Face]:
    """All faces in ``image`` (uint8 RGB [H, W, 3]), largest first.

    Returns an empty list when there is none. Faces narrower than about 20 px are not found.
    """
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = _resize(image, scale) if scale < 1.0 else image
    sh, sw = small.shape[:2]
    full, short, mesh, mesh_multi = _detectors()
    # (score, cx, cy, side) in full-resolution pixels, from the whole image and from 2x2 overlapping
    # tiles (the detector sees 192x192, so small faces in wide pictures need the tiles)
    boxes = []
    views = [(0, 0, sw, sh)]
    if min(sw, sh) >= 256:
        tw, th = int(sw * 0.6), int(sh * 0.6)
        views += [(x, y, tw, th) for y in (0, sh - th) for x in (0, sw - tw)]
    with _lock:
        for vx, vy, vw, vh in views:
            view = np.ascontiguousarray(small[vy:vy + vh, vx:vx + vw])
            dets = list(full.process(view).detections or [])
            if not dets and (vw, vh) == (sw, sh):
                dets = list(short.process(view).detections or [])
            for d in dets:
                bb = d.location_data.relative_bounding_box
                cx = (vx + (bb.xmin + bb.width / 2) * vw) / scale
                cy = (vy + (bb.ymin + bb.height / 2) * vh) / scale
                side = max(bb.width * vw, bb.height * vh) / scale
                boxes.append((float(d.score[0]) if d.score else 1.0, cx, cy, side))
    boxes.sort(key=lambda b: -b[3])
    detections = []
    for b in boxes:  # drop the same face seen in several views
        if all(np.hypot(b[1] - k[1], b[2] - k[2]) > 0.4 * max(b[3], k[3]) for k in detections):
            detections.append(b)
    faces: list[Face] = []
    for score, cx, cy, side in detections:
        side = side * 1.9  # square crop around the detector box for the mesh model
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x1, y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 - cx0 < 8 or cy1 - cy0 < 8:
            continue
        crop = image[cy0:cy1, cx0:cx1]
        s = MESH_CROP_SIDE / max(crop.shape[:2])
        crop_s = _resize(crop, s)
        with _lock:
            pts_list = _mesh_points(mesh.process(np.ascontiguousarray(crop_s)), crop_s.shape[1], crop_s.shape[0])
        if not pts_list:
            continue
        pts = pts_list[0]
        pts[:, :2] /= s
        pts[:, 2] /= s
        pts[:, 0] += cx0
        pts[:, 1] += cy0
        faces.append(_face_from_points(pts, score))
    if not faces:
        # the detector missed (e.g. very large faces): let FaceMesh search the whole image
        with _lock:
            res = mesh_multi.process(np.ascontiguousarray(small))
        for pts in _mesh_points(res, sw, sh):
            pts[:, :3] /= scale
            faces.append(_face_from_points(pts, 1.0))
    faces = _dedupe(faces)
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


def _dedupe(faces: list[Face]) -> list[Face]:
    kept: list[Face] = []
    for f in faces:
        c = np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])
        if all(np.linalg.norm(c - np.array([(k.box[0] + k.box[2]) / 2, (k.box[1] + k.box[3]) / 2]))
               > 0.3 * max(k.size, f.size) for k in kept):
            kept.append(f)
    return kept


def find_face(image: np.ndarray, face_index: int = 0) -> Face:
    """The ``face_index``-th largest face of ``image`` (0 = largest).

    Raises :class:`NoFaceError` when no face is found, :class:`OptionError` when ``face_index`` is
    beyond the faces found.
    """
    faces = detect_faces(image)
    if not faces:
        raise NoFaceError("no face found in the image; use a photo with one clearly visible, "
                          "roughly frontal face at least 64 px wide")
    if not 0 <= face_index < len(faces):
        raise OptionError(f"--face-index {face_index} is out of range: the image has {len(faces)} "
                          f"face(s); use 0..{len(faces) - 1} (0 = largest)")
    return faces[face_index]


def landmarks_on_frame(frame: np.ndarray) -> np.ndarray | None:
    """478 landmarks [478, 3] of the largest face on a video frame, or None. For measurements/tracking."""
    faces = detect_faces(frame)
    return faces[0].points if faces else None
