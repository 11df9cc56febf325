"""Deformable face model of the lite engine, built once per source portrait.

Vertices: the 478 mediapipe landmarks, plus two rings around the face (the inner one follows the
head half-way, the outer one is fixed) and points on the image border (fixed), so background,
hair and neck stay still while the face moves. Triangles: mediapipe's tesselation (back to front
by depth), fills for the eye openings, and a Delaunay triangulation of the region between the face
oval and the border. The mouth opening is left as a hole: the mouth-interior renderer paints it.

Expression: control points (lips, chin, eyelids, brows, fixed anchors) get closed-form targets
from the motion parameters; every other vertex follows by region-aware inverse-distance weighting
(upper-lip controls never move lower-lip vertices and vice versa), precomputed as one matrix.
Head pose: a rotation about a pivot behind the face plus a translation, applied with per-vertex
weights (1 on the face, 0.5 on the inner ring, 0 outside).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...face import topology as T

# chin/jaw controls: vertex -> fraction of the jaw drop it follows
_JAW = {152: 1.0, 175: 1.0, 199: 1.0, 200: 1.0, 18: 1.0, 148: 0.95, 377: 0.95, 176: 0.95, 400: 0.95,
        149: 0.85, 378: 0.85, 150: 0.7, 379: 0.7, 136: 0.5, 365: 0.5, 172: 0.3, 397: 0.3, 58: 0.12, 288: 0.12}
_ANCHORS = [1, 2, 4, 5, 6, 168, 195, 197, 98, 327, 129, 358, 64, 294, 50, 280, 101, 330, 205, 425, 36, 266,
            187, 411, 123, 352, 116, 345, 132, 361, 93, 323] + [i for i in T.FACE_OVAL if i not in _JAW]
_RIGHT_FOLD = [247, 30, 29, 27, 28, 56, 190]   # skin crease above the right upper lid, outer -> inner
_LEFT_FOLD = [467, 260, 259, 257, 258, 286, 414]


def _polygon_contains(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path
    return Path(poly).contains_points(pts)


def _ellipse_ring(center, axes, angle, n):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(angle), np.sin(angle)
    x = axes[0] * np.cos(t)
    y = axes[1] * np.sin(t)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


@dataclass
class FaceModel:
    """Mesh + precomputed deformation data for one portrait. Coordinates are pixels of ``size``."""

    size: tuple[int, int]
    vertices: np.ndarray      # float32 [N, 3] rest positions (x, y, z)
    triangles: np.ndarray     # int32 [K, 3], drawing order
    head_weight: np.ndarray   # float32 [N]
    controls: np.ndarray      # int [C] vertex ids with closed-form targets
    interp: np.ndarray        # float32 [N, C] displacement interpolation (rows of controls are one-hot)
    e_x: np.ndarray           # unit vector, image-left eye -> image-right eye
    e_y: np.ndarray           # unit vector, downwards in the face
    mouth_width: float        # pixels, outer corners
    eye_distance: float       # pixels
    face_size: float          # pixels
    pivot: np.ndarray         # [3]
    ring_inner: np.ndarray    # indices of the inner ring (head weight 0.5)

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(cls, points: np.ndarray, size: tuple[int, int]) -> "FaceModel":
        """points: float [478, 3] landmarks in pixels of an image of ``size`` = (width, height)."""
        from scipy.spatial import Delaunay

        w, h = size
        P = np.asarray(points, np.float64)
        face = P[:468, :2]
        eye_r = P[T.RIGHT_EYE_RING, :2].mean(axis=0)
        eye_l = P[T.LEFT_EYE_RING, :2].mean(axis=0)
        e_x = eye_l - eye_r
        eye_dist = float(np.linalg.norm(e_x))
        e_x = e_x / max(eye_dist, 1e-6)
        e_y = np.array([-e_x[1], e_x[0]])
        mouth_w = float(np.linalg.norm(P[T.MOUTH_CORNERS_OUTER[0], :2] - P[T.MOUTH_CORNERS_OUTER[1], :2]))
        oval = P[T.FACE_OVAL, :2]
        centre = oval.mean(axis=0)
        fsize = float(max(np.ptp(face[:, 0]), np.ptp(face[:, 1])))
        angle = float(np.arctan2(e_x[1], e_x[0]))
        # rings: inner follows the head half-way (hair, ears, neck top), outer is fixed
        rad = np.array([0.5 * np.ptp(oval @ e_x), 0.5 * np.ptp(oval @ e_y)])
        ring1 = _ellipse_ring(centre + e_y * 0.05 * fsize, rad * 1.35, angle, 28)
        ring2 = _ellipse_ring(centre + e_y * 0.1 * fsize, rad * 2.3, angle, 36)
        step = max(32, min(w, h) // 8)
        bx = np.unique(np.concatenate([np.arange(0, w, step), [w - 1]]))
        by = np.unique(np.concatenate([np.arange(0, h, step), [h - 1]]))
        border = np.concatenate([np.stack([bx, np.zeros_like(bx)], 1), np.stack([bx, np.full_like(bx, h - 1)], 1),
                                 np.stack([np.zeros_like(by), by], 1), np.stack([np.full_like(by, w - 1), by], 1)])
        border = np.unique(border.astype(np.float64), axis=0)
        # keep ring points inside the frame (clamped) and away from the border points
        ring2 = np.clip(ring2, 1, [w - 2, h - 2])
        ring1 = np.clip(ring1, 1, [w - 2, h - 2])
        n0 = len(P)
        extra = np.concatenate([ring1, ring2, border])
        verts = np.concatenate([P, np.concatenate([extra, np.full((len(extra), 1), np.median(P[:, 2]))], 1)])
        idx_ring1 = np.arange(n0, n0 + len(ring1))
        # triangles: background region between the oval and the border
        outer_ids = np.concatenate([np.array(T.FACE_OVAL), np.arange(n0, len(verts))])
        dl = Delaunay(verts[outer_ids, :2])
        tri_out = outer_ids[dl.simplices]
        cent = verts[tri_out, :2].mean(axis=1)
        keep = ~_polygon_contains(oval, cent)
        tri_out = tri_out[keep]
        # face tesselation, back to front (larger z = farther from the camera)
        tri_face = T.tesselation_triangles().astype(np.int64)
        order = np.argsort(-verts[tri_face, 2].mean(axis=1), kind="stable")
        tri_face = tri_face[order]
        # eye openings: triangulate the eye ring with the iris points, keep triangles inside the ring
        eye_tris = []
        for ring_ids, iris in ((T.RIGHT_EYE_RING, T.RIGHT_IRIS), (T.LEFT_EYE_RING, T.LEFT_IRIS)):
            ids = np.array(list(ring_ids) + list(iris))
            d = Delaunay(verts[ids, :2])
            t = ids[d.simplices]
            c = verts[t, :2].mean(axis=1)
            eye_tris.append(t[_polygon_contains(verts[ring_ids, :2], c)])
        triangles = np.concatenate([tri_out] + eye_tris + [tri_face]).astype(np.int32)
        head_w = np.zeros(len(verts), np.float32)
        head_w[:n0] = 1.0
        head_w[idx_ring1] = 0.5
        fz = float(np.mean(P[:468, 2]))
        pivot = np.array([centre[0], centre[1] + 0.25 * fsize, fz + 0.7 * fsize])
        controls, interp = cls._interpolation(verts[:, :2], n0, P, e_x, e_y, mouth_w)
        return cls(size=(w, h), vertices=verts.astype(np.float32), triangles=triangles, head_weight=head_w,
                   controls=controls, interp=interp, e_x=e_x, e_y=e_y, mouth_width=mouth_w, eye_distance=eye_dist,
                   face_size=fsize, pivot=pivot, ring_inner=idx_ring1)

    @staticmethod
    def control_ids() -> tuple[list[int], list[int], list[int]]:
        """(upper-region controls, lower-region controls, shared controls) as vertex ids."""
        upper = T.LIPS_INNER_UPPER + T.LIPS_OUTER_UPPER[1:-1]
        lower = T.LIPS_INNER_LOWER[1:-1] + T.LIPS_OUTER_LOWER[1:-1] + list(_JAW)
        shared = (_ANCHORS + T.RIGHT_EYE_UPPER + T.RIGHT_EYE_LOWER[1:-1] + T.LEFT_EYE_UPPER + T.LEFT_EYE_LOWER[1:-1]
                  + T.RIGHT_IRIS + T.LEFT_IRIS + _RIGHT_FOLD + _LEFT_FOLD + T.RIGHT_BROW + T.LEFT_BROW
                  + [T.MOUTH_CORNERS_OUTER[0], T.MOUTH_CORNERS_OUTER[1]])
        seen: set[int] = set()
        out = []
        for group in (upper, lower, shared):
            g = [i for i in dict.fromkeys(group) if i not in seen]
            seen.update(g)
            out.append(g)
        return out[0], out[1], out[2]

    @classmethod
    def _interpolation(cls, xy, n_face, P, e_x, e_y, mouth_w):
        upper, lower, shared = cls.control_ids()
        controls = np.array(upper + lower + shared, np.int64)
        region_c = np.array([0] * len(upper) + [1] * len(lower) + [2] * len(shared))
        # region of each vertex: below the inner-lip midline (lower) or above (upper)
        mid = 0.5 * (P[T.LIPS_INNER_UPPER, :2] + P[T.LIPS_INNER_LOWER, :2])
        c = mid.mean(axis=0)
        mu, mv = (mid - c) @ e_x, (mid - c) @ e_y
        order = np.argsort(mu)
        vu, vv = (xy - c) @ e_x, (xy - c) @ e_y
        line = np.interp(vu, mu[order], mv[order])
        lower_v = vv > line
        N = len(xy)
        d = np.linalg.norm(xy[:, None, :] - xy[None, controls, :], axis=2) / max(mouth_w, 1.0)
        wts = 1.0 / (d ** 3 + 1e-6)
        compat = np.ones((N, len(controls)), bool)
        compat[lower_v[:, None] & (region_c[None, :] == 0)] = False
        compat[~lower_v[:, None] & (region_c[None, :] == 1)] = False
        wts *= compat
        # only face vertices are interpolated; rings and border points stay put (expression-wise)
        wts[n_face - 10:] = 0.0  # iris points are controls; rows past the face are zero
        wts /= np.maximum(wts.sum(axis=1, keepdims=True), 1e-12)
        wts[controls] = 0.0
        wts[controls, np.arange(len(controls))] = 1.0
        return controls, wts.astype(np.float32)

    # ---------------------------------------------------------------- per frame
    def control_targets(self, m: dict[str, float]) -> np.ndarray:
        """Displacements [C, 2] (pixels) of the control points for motion parameters ``m``."""
        P = self.vertices[:, :2].astype(np.float64)
        ex, ey, W = self.e_x, self.e_y, self.mouth_width
        disp = {}
        open_ = max(0.0, m["open"]) * (1.0 - min(1.0, max(0.0, m["press"])))
        width = float(np.clip(m["width"], -1, 1))
        gmax = 0.30 * W
        jaw = ey * open_ * gmax * 0.85
        spread = W * (0.06 * max(width, 0.0) - 0.09 * max(-width, 0.0))
        iu, il = T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER
        ou, ol = T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER
        n = len(iu)
        for k in range(n):
            s = k / (n - 1)                       # 0 at the image-left corner, 1 at the image-right one
            prof = np.sin(np.pi * s) ** 0.6
            hx = ex * spread * (2 * s - 1) * (0.8 if 0 < k < n - 1 else 1.0)
            if k in (0, n - 1):                  # corners: width + follow the jaw a little
                corner = hx + jaw * 0.3 + ey * 0.02 * W * max(width, 0) * -1
                disp[iu[k]] = corner
                disp[ou[k]] = corner
                continue
            mid = 0.5 * (P[iu[k]] + P[il[k]])
            gap = open_ * gmax * prof
            up_t = mid - ey * gap * 0.15 + hx
            lo_t = mid + ey * gap * 0.85 + hx
            dup = up_t - P[iu[k]]
            dlo = lo_t - P[il[k]]
            rnd = W * 0.03 * max(-width, 0.0) * prof
            disp[iu[k]] = dup
            disp[il[k]] = dlo
            disp[ou[k]] = dup * 0.85 - ey * rnd
            disp[ol[k]] = dlo * 0.9 + jaw * 0.1 + ey * rnd
        for v, f in _JAW.items():
            disp[v] = jaw * f
        # eyes: the upper lid slides onto the lower lid; the crease and the iris follow
        blink = float(np.clip(m["blink"], 0, 1))
        brow = float(np.clip(m["brow"], 0, 1))
        for up, lo, iris, fold in ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER, T.RIGHT_IRIS, _RIGHT_FOLD),
                                   (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER, T.LEFT_IRIS, _LEFT_FOLD)):
            for k in range(1, len(up) - 1):
                d_up = (P[lo[k]] - P[up[k]]) * blink * 0.92
                disp[up[k]] = d_up - ey * brow * 0.03 * self.eye_distance * (1 - blink)
                disp[lo[k]] = (P[up[k]] - P[lo[k]]) * blink * 0.05
                if k - 1 < len(fold):
                    disp[fold[k - 1]] = d_up * 0.4 - ey * brow * 0.06 * self.eye_distance
            lo_c = P[lo[1:-1]].mean(axis=0)
            for i in iris:
                disp[i] = (lo_c - P[i]) * blink * 0.85
        for b in T.RIGHT_BROW + T.LEFT_BROW:
            disp[b] = -ey * brow * 0.06 * self.eye_distance
        out = np.zeros((len(self.controls), 2))
        for j, v in enumerate(self.controls):
            if v in disp:
                out[j] = disp[v]
        return out

    def deform(self, m: dict[str, float]) -> np.ndarray:
        """Destination vertex positions float32 [N, 2] for motion parameters ``m`` (a MotionTrack frame)."""
        dctl = self.control_targets(m)
        V = self.vertices.astype(np.float64).copy()
        V[:, :2] += self.interp.astype(np.float64) @ dctl
        yaw, pitch, roll = (np.deg2rad(m[k]) for k in ("yaw", "pitch", "roll"))
        if yaw or pitch or roll or m["tx"] or m["ty"]:
            cy, sy = np.cos(yaw), np.sin(yaw)
            cp, sp = np.cos(pitch), np.sin(pitch)
            cr, sr = np.cos(roll), np.sin(roll)
            Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
            Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
            R = Rz @ Ry @ Rx
            moved = (V - self.pivot) @ R.T + self.pivot
            moved[:, 0] += m["tx"] * self.face_size
            moved[:, 1] += m["ty"] * self.face_size
            wgt = self.head_weight.astype(np.float64)[:, None]
            V = V + wgt * (moved - V)
        return V[:, :2].astype(np.float32)
