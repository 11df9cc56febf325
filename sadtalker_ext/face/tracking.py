"""Following one face through a video: which of the faces MediaPipe finds on each frame is "the" face.

Used by the video source engine (:mod:`sadtalker_ext.engines.video`) and the lip-sync stage.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np

__all__ = ["FaceTracker"]


class FaceTracker:
    """Picks one face per frame and follows it: the ``face_index``-th largest on the first frame with
    faces, then the face whose landmark-box centre is nearest the previous one (within 1.5x its size;
    farther means the face was lost and the choice starts again).

    ``__call__(frame)`` takes uint8 RGB ``[H, W, 3]`` and returns float32 ``[478, 2]`` pixel
    landmarks, or None when no face is found. ``detect`` (default
    :func:`~sadtalker_ext.face.landmarks.detect_faces`) can be replaced for tests.
    """

    def __init__(self, face_index: int = 0, detect: Optional[Callable[[np.ndarray], list]] = None):
        self.face_index = int(face_index)
        self._detect = detect
        self._prev: Optional[Tuple[float, float, float]] = None  # centre x, y, size

    def reset(self) -> None:
        self._prev = None

    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        detect = self._detect
        if detect is None:
            from .landmarks import detect_faces
            detect = detect_faces
        faces = detect(frame)
        if not faces:
            self._prev = None
            return None
        if self._prev is None:
            face = faces[min(self.face_index, len(faces) - 1)]
        else:
            px, py, ps = self._prev
            dist = [math.hypot((f.box[0] + f.box[2]) / 2 - px, (f.box[1] + f.box[3]) / 2 - py) for f in faces]
            k = int(np.argmin(dist))
            face = faces[k] if dist[k] <= 1.5 * ps else faces[min(self.face_index, len(faces) - 1)]
        x0, y0, x1, y1 = face.box
        self._prev = ((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0))
        return np.ascontiguousarray(face.points[:, :2], dtype=np.float32)
