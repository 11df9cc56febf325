"""Index sets of mediapipe's 478-point face mesh (468 surface points + 10 iris points).

Facts taken from mediapipe's ``face_mesh_connections`` (Apache-2.0). Rings are ordered around the
contour. "Left"/"right" are the subject's, so the subject's right eye is on the image's left.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

NUM_POINTS = 478

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]

# Lips: corners are 61/291 (outer) and 78/308 (inner). Upper/lower lists run corner to corner.
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
MOUTH_CORNERS_INNER = (78, 308)
MOUTH_CORNERS_OUTER = (61, 291)
UPPER_LIP_MID_INNER, LOWER_LIP_MID_INNER = 13, 14

# Eyes: corners first/last; upper and lower lids run from the outer corner to the inner one.
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
LEFT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
RIGHT_IRIS = [468, 469, 470, 471, 472]   # centre first
LEFT_IRIS = [473, 474, 475, 476, 477]
RIGHT_BROW = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
LEFT_BROW = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10


def ring(upper: list[int], lower: list[int]) -> list[int]:
    """Closed contour from two corner-to-corner chains sharing their end points."""
    return list(upper) + list(lower[-2:0:-1])


MOUTH_INNER_RING = ring(LIPS_INNER_UPPER, LIPS_INNER_LOWER)
MOUTH_OUTER_RING = ring(LIPS_OUTER_UPPER, LIPS_OUTER_LOWER)
RIGHT_EYE_RING = ring(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
LEFT_EYE_RING = ring(LEFT_EYE_UPPER, LEFT_EYE_LOWER)


@lru_cache(maxsize=1)
def tesselation_triangles() -> np.ndarray:
    """int32 [K, 3] triangles of mediapipe's face-mesh tesselation (3-cliques of its edge set).

    The mesh leaves holes at the eyes and the mouth; the renderer fills those itself.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = set()
    for a, b in FACEMESH_TESSELATION:
        for c in adj[a] & adj[b]:
            tris.add(tuple(sorted((a, b, c))))
    return np.array(sorted(tris), dtype=np.int32)


# 68-point (iBUG 300-W) convention approximated from the 478-point mesh, used for measurements and
# for mapping to tools that expect 68 points. Each entry is one mesh index.
MESH_TO_68 = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                     # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,                                                # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                          # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,                                # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,                                                  # inner lips 60-67
]
