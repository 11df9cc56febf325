"""Lite renderer: motion parameters -> frames by mesh warping of the portrait (CPU, no weights)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ...face.crop import Prepared
from .face_model import FaceModel
from .mouth import MouthInterior
from .warp import MeshWarper


class LiteRenderer:
    """Renders frames of one prepared portrait.

    ``render_frame(m)`` takes one MotionTrack frame (dict) and returns (frame uint8 [H, W, 3] of the
    working image, destination landmarks float32 [478, 2] in its pixels).
    """

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        img = prepared.image
        h, w = img.shape[:2]
        self.model = FaceModel.build(prepared.face.points, (w, h))
        self.warper = MeshWarper(self.model.triangles, (w, h))
        self.mouth = MouthInterior(img, prepared.face.points, self.model.mouth_width)
        v = self.model.vertices[:, :2]
        moving = v[: len(prepared.face.points)]
        ring = v[self.model.ring_inner]
        pts = np.concatenate([moving, ring])
        # triangles touching the inner ring reach the fixed outer ring: bound the region by it
        tri = self.model.triangles
        touch = np.isin(tri, np.concatenate([np.arange(len(moving)), self.model.ring_inner])).any(axis=1)
        allpts = v[tri[touch].reshape(-1)]
        pts = np.concatenate([pts, allpts])
        x0, y0 = np.floor(pts.min(0)).astype(int) - 2
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 3
        self.region = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
        self._src_xy = v.astype(np.float32)

    def render_frame(self, m: dict[str, float], out: np.ndarray | None = None):
        dst = self.model.deform(m)
        frame, _ = self.warper.warp(self.prepared.image, self._src_xy, dst, self.region, out=out)
        pts = dst[: len(self.prepared.face.points)]
        self.mouth.paint(frame, pts)
        return frame, pts

    def render(self, motion, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Frames ``start``..``stop-1`` of ``motion`` as (frame, landmarks) pairs, working-image size."""
        for i in range(start, stop):
            frame, pts = self.render_frame(motion.frame(i))
            yield frame, pts
