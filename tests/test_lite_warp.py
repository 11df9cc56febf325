"""The lite renderer's piecewise-affine warp (render/lite/warp.py) against independent references."""
import cv2
import numpy as np
from scipy.spatial import Delaunay
from skimage import data

from sadtalker_ext.render.lite.warp import MeshWarper


def _mesh(rng, n=200, size=256):
    pts = np.concatenate([rng.uniform(8, size - 8, (n, 2)), [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]]])
    return pts.astype(np.float32), Delaunay(pts).simplices


def test_a_global_affine_mesh_warps_like_cv2_warp_affine():
    """Every vertex moved by one affine map: the mesh warp is that map (cv2.warpAffine of the inverse) inside
    the mesh, whatever the triangulation."""
    rng = np.random.default_rng(1)
    img = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    src, tri = _mesh(rng)
    M = np.array([[0.97, 0.06, 4.0], [-0.05, 1.02, -3.0]], np.float32)  # source -> destination
    dst = (src @ M[:, :2].T + M[:, 2]).astype(np.float32)
    got, ids = MeshWarper(tri, (256, 256)).warp(img, src, dst)
    want = cv2.warpAffine(img, M, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inside = ids >= 0
    inside[:12], inside[-12:], inside[:, :12], inside[:, -12:] = False, False, False, False
    err = np.abs(got.astype(int) - want.astype(int))[inside]
    assert inside.sum() > 0.7 * 256 * 256
    # cv2.remap / warpAffine sample at 1/32-pixel fixed-point positions: float rounding of a coordinate across a
    # step moves a pixel by a 32nd of its neighbour difference (a few levels at edges), rarely
    assert np.percentile(err, 99.5) <= 1 and err.max() <= 12 and err.mean() < 0.1, (err.max(), err.mean())


def test_maps_are_each_pixels_triangle_affine_and_the_rest_is_untouched():
    """Per pixel, the sampled source point is x * A[t][0] + y * A[t][1] + A[t][2] for its triangle t (the closed form,
    with the per-triangle maps solved here by numpy.linalg), identity where no triangle; outside the region the
    frame is the source."""
    rng = np.random.default_rng(2)
    src, tri = _mesh(rng, 150)
    dst = (src + rng.normal(0, 3, src.shape)).astype(np.float32)
    img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    region = (30, 40, 220, 230)
    w = MeshWarper(tri, (256, 256))
    got, ids = w.warp(img, src, dst, region)
    x0, y0, x1, y1 = region
    # the closed form, solved independently: [x y 1] @ A = source xy for each triangle's three corners
    A = np.empty((len(tri), 3, 2))
    for k, t in enumerate(tri):
        D = np.concatenate([dst[t].astype(np.float64), np.ones((3, 1))], axis=1)
        A[k] = np.linalg.solve(D, src[t].astype(np.float64))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    t = ids
    mx = np.where(t >= 0, xs * A[t, 0, 0] + ys * A[t, 1, 0] + A[t, 2, 0], xs)
    my = np.where(t >= 0, xs * A[t, 0, 1] + ys * A[t, 1, 1] + A[t, 2, 1], ys)
    want = cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    diff = np.abs(got[y0:y1, x0:x1].astype(int) - want.astype(int))
    # float32 vs float64 coefficients: remap's 1/32-pixel coordinate steps differ on a few pixels (random noise:
    # neighbours differ by up to 255, so one step is up to 8 levels)
    assert np.percentile(diff, 99.9) <= 1 and diff.max() <= 8 and (diff > 0).mean() < 0.01, diff.max()
    outside = np.ones((256, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[outside], img[outside])
    assert (ids >= 0).mean() > 0.9
