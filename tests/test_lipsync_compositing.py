"""UHQ compositing (masks, feathering, colour matching, paste-back) on the real astronaut photo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from sadtalker_ext.errors import InputError, NoFaceError, OptionError
from sadtalker_ext.lipsync import compositing as C


@pytest.fixture(scope="module")
def mesh_connections():
    mp = pytest.importorskip("mediapipe")
    if not hasattr(mp, "solutions"):
        pytest.skip("this mediapipe build has no legacy solutions API")
    from mediapipe.python.solutions import face_mesh_connections
    return face_mesh_connections


@pytest.fixture(scope="module")
def landmarks(astronaut, mesh_connections):
    """478 MediaPipe face-mesh landmarks of the astronaut, float32 [478, 3] in pixels."""
    import mediapipe as mp
    h, w = astronaut.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        result = mesh.process(astronaut)
    assert result.multi_face_landmarks, "MediaPipe found no face in the astronaut photo"
    pts = result.multi_face_landmarks[0].landmark
    lm = np.array([[p.x * w, p.y * h, p.z * w] for p in pts], dtype=np.float32)
    assert lm.shape == (478, 3)
    return lm


@pytest.fixture(scope="module")
def box(landmarks, astronaut):
    return C.face_box(landmarks, astronaut.shape, pads=(0, 10, 0, 0))


@pytest.fixture(scope="module")
def generated(astronaut, box):
    """A stand-in for the network output: the face crop at 96x96, tinted, pasted back at the box."""
    crop = C.crop_box(astronaut, box, 96).astype(np.int16)
    tinted = np.clip(crop + np.array([35, -15, -20]), 0, 255).astype(np.uint8)
    return C.paste_patch(astronaut, tinted, box)


def _ring_edges(ring):
    return {frozenset((a, b)) for a, b in zip(ring, ring[1:] + ring[:1])}


def test_contours_follow_mediapipe_connections(mesh_connections):
    lips = {frozenset(e) for e in mesh_connections.FACEMESH_LIPS}
    oval = {frozenset(e) for e in mesh_connections.FACEMESH_FACE_OVAL}
    assert _ring_edges(C.LIPS_OUTER) | _ring_edges(C.LIPS_INNER) == lips
    assert _ring_edges(C.FACE_OVAL) == oval


def test_masks_sit_on_the_real_face(landmarks, astronaut):
    mouth = C.mouth_mask(landmarks, astronaut.shape)
    face = C.face_mask(landmarks, astronaut.shape)
    assert mouth.shape == face.shape == astronaut.shape[:2] and mouth.dtype == np.float32
    assert set(np.unique(mouth)) == {0.0, 1.0}
    # raster area agrees with the polygon's area (fillPoly also sets the pixels the edges cross)
    lips = landmarks[list(C.LIPS_OUTER), :2]
    assert 0 <= mouth.sum() - cv2.contourArea(lips) < 0.75 * cv2.arcLength(lips, True)
    assert np.all(face[mouth > 0] == 1)  # lips inside the face oval
    ys, xs = np.nonzero(mouth)
    # the lips are red: the mouth region is redder than the face around it
    rg = astronaut[..., 0].astype(float) - astronaut[..., 1]
    assert rg[mouth > 0].mean() > rg[(face > 0) & (mouth == 0)].mean() + 10
    assert abs(xs.mean() + 0.5 - lips[:, 0].mean()) < 3 and abs(ys.mean() + 0.5 - lips[:, 1].mean()) < 3


def test_mouth_mask_grows_monotonically_with_dilation(landmarks, astronaut):
    masks = [C.mouth_mask(landmarks, astronaut.shape, d) for d in (0, 1, 2.5, 4, 8, 16)]
    areas = [m.sum() for m in masks]
    assert all(a < b for a, b in zip(areas, areas[1:])), areas
    assert all(np.all(b[a > 0] == 1) for a, b in zip(masks, masks[1:]))  # nested
    # dilating by d adds roughly perimeter * d pixels
    perimeter = cv2.arcLength(landmarks[list(C.LIPS_OUTER), :2], True)
    assert 0.7 * perimeter * 4 < areas[3] - areas[0] < 1.5 * (perimeter * 4 + np.pi * 16)


def test_face_mask_shrinks_monotonically_with_erosion(landmarks, astronaut):
    masks = [C.face_mask(landmarks, astronaut.shape, e) for e in (0, 1, 2.5, 4, 8, 16)]
    areas = [m.sum() for m in masks]
    assert all(a > b for a, b in zip(areas, areas[1:])), areas
    assert all(np.all(a[b > 0] == 1) for a, b in zip(masks, masks[1:]))
    assert areas[-1] > 0


def test_masks_stay_inside_frame_when_face_leaves_it(landmarks, astronaut):
    shifted = landmarks.copy()
    shifted[:, 0] -= 200.0  # about half of the face is now left of the frame
    assert shifted[:, 0].min() < 0 < shifted[:, 0].max()
    face = C.face_mask(shifted, astronaut.shape, erode_px=4)
    mouth = C.mouth_mask(shifted, astronaut.shape, dilate_px=30)
    for m in (face, mouth):
        assert m.shape == astronaut.shape[:2] and 0 < m.sum()
    # the frame border does not erode the face: column 0 stays covered
    assert face[:, 0].sum() > 40
    box = C.face_box(shifted, astronaut.shape)
    assert box[0] == 0 and box[2] <= astronaut.shape[1]
    mask = C.lipsync_mask(shifted, astronaut.shape, box)
    assert mask.shape == astronaut.shape[:2] and 0 <= mask.min() and mask.max() <= 1 and mask.sum() > 0
    far = landmarks.copy()
    far[:, 0] -= 1000.0
    assert C.mouth_mask(far, astronaut.shape, 5).sum() == 0
    with pytest.raises(NoFaceError):
        C.face_box(far, astronaut.shape)


def test_feather_is_a_bounded_gaussian(landmarks, astronaut):
    hard = C.face_mask(landmarks, astronaut.shape, 0)
    soft = C.feather(hard, 7.5)
    ref = cv2.GaussianBlur(hard, (17, 17), 8 / 3.0, borderType=cv2.BORDER_REPLICATE)
    assert np.max(np.abs(soft - ref)) < 1e-6  # the ROI shortcut equals a full-frame blur
    assert soft.min() >= 0 and soft.max() <= 1
    reach = cv2.dilate(hard.astype(np.uint8), np.ones((17, 17), np.uint8))
    assert np.all(soft[reach == 0] == 0)  # exactly zero beyond ceil(blur) px
    assert soft[hard > 0].max() == pytest.approx(1.0, abs=1e-6)
    assert 0 < soft[(reach > 0) & (hard == 0)].max() < 1
    assert np.array_equal(C.feather(hard, 0), hard)


def test_lipsync_mask_options(landmarks, astronaut, box):
    full = C.lipsync_mask(landmarks, astronaut.shape, box, C.MaskConfig(blur_px=6))
    only = C.lipsync_mask(landmarks, astronaut.shape, box, C.MaskConfig(blur_px=6, only_mouth=True))
    assert only.sum() < full.sum() and np.all(only <= full + 1e-6)
    x0, y0, x1, y1 = box
    inside = np.zeros(astronaut.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    assert np.all(full[~inside] == 0) and np.all(only[~inside] == 0)
    # the lower-face region starts at half the box; the top of the face is untouched
    assert np.all(full[: y0 + (y1 - y0) // 2 - 6] == 0)
    with pytest.raises(OptionError):
        C.lipsync_mask(landmarks, astronaut.shape, box, C.MaskConfig(blur_px=-1))


def test_composite_changes_only_masked_pixels(landmarks, astronaut, box, generated):
    mask = C.lipsync_mask(landmarks, astronaut.shape, box)
    frame_before = astronaut.copy()
    out = C.composite(astronaut, generated, mask)
    assert np.array_equal(astronaut, frame_before)  # input not modified
    assert out.dtype == np.uint8 and out.shape == astronaut.shape
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])  # bit-exact outside
    assert np.array_equal(out[mask == 1], generated[mask == 1])
    part = (mask > 0) & (mask < 1)
    lo = np.minimum(astronaut, generated)[part].astype(int) - 1
    hi = np.maximum(astronaut, generated)[part].astype(int) + 1
    assert np.all((out[part] >= lo) & (out[part] <= hi))
    changed = np.any(out != astronaut, axis=-1)
    assert changed.sum() > 500 and not np.any(changed & (mask == 0))


def test_paste_patch_only_writes_the_box(astronaut, box, generated):
    x0, y0, x1, y1 = box
    outside = np.ones(astronaut.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(generated[outside], astronaut[outside])
    assert not np.array_equal(generated[y0:y1, x0:x1], astronaut[y0:y1, x0:x1])
    as_float = C.paste_patch(astronaut, C.crop_box(astronaut, box, 96).astype(np.float32) / 255, box)
    assert np.abs(as_float.astype(int) - astronaut.astype(int))[y0:y1, x0:x1].mean() < 8


def test_color_matching_moves_patch_towards_frame(landmarks, astronaut, box, generated):
    mask = C.lipsync_mask(landmarks, astronaut.shape, box)
    sel = mask > 0
    target = astronaut[sel].astype(float).mean(0)
    before = np.linalg.norm(generated[sel].astype(float).mean(0) - target)
    matched = C.match_color(generated, astronaut, mask)
    after = np.linalg.norm(matched[sel].astype(float).mean(0) - target)
    assert before > 20 and after < 0.25 * before, (before, after)
    half = C.match_color(generated, astronaut, mask, strength=0.5)
    mid = np.linalg.norm(half[sel].astype(float).mean(0) - target)
    assert after < mid < before
    assert np.array_equal(matched[~sel], generated[~sel])
    assert np.array_equal(C.match_color(generated, astronaut, mask, strength=0.0), generated)
    assert np.array_equal(C.match_color(generated, astronaut, np.zeros_like(mask)), generated)
    mean_only = C.match_color(generated, astronaut, mask, match_std=False)
    assert np.linalg.norm(mean_only[sel].astype(float).mean(0) - target) < 0.25 * before


def test_face_box_contains_landmarks_with_pads(landmarks, astronaut):
    x0, y0, x1, y1 = C.face_box(landmarks, astronaut.shape, pads=(0, 0, 0, 0))
    assert x0 <= landmarks[:, 0].min() and landmarks[:, 0].max() <= x1
    assert y0 <= landmarks[:, 1].min() and landmarks[:, 1].max() <= y1
    assert x1 - x0 < np.ptp(landmarks[:, 0]) + 2 and y1 - y0 < np.ptp(landmarks[:, 1]) + 2
    assert C.face_box(landmarks, astronaut.shape, pads=(5, 10, 3, 4)) == (x0 - 3, y0 - 5, x1 + 4, y1 + 10)
    assert C.face_box(landmarks, astronaut.shape, pads=(0, 10_000, 0, 0))[3] == astronaut.shape[0]


def test_box_smoothing_reduces_jitter(landmarks, astronaut):
    base = np.array(C.face_box(landmarks, astronaut.shape), float)
    rng = np.random.default_rng(0)
    jitter = base + rng.normal(0, 3, size=(60, 4))
    smooth = C.smooth_boxes(jitter, window=5)
    assert smooth.dtype == np.int32 and smooth.shape == (60, 4)
    step = lambda b: np.abs(np.diff(b, axis=0)).mean()  # noqa: E731
    assert step(smooth) < 0.6 * step(jitter)
    assert np.abs(smooth - base).mean() < np.abs(jitter - base).mean()
    const = np.tile(base, (7, 1))
    assert np.array_equal(C.smooth_boxes(const, 5), const.astype(np.int32))
    s = C.BoxSmoother(window=3)
    got = [s.update(b) for b in jitter[:5]]
    assert got[0] == tuple(int(v) for v in np.round(jitter[0]))
    assert got[4] == tuple(int(v) for v in np.round(jitter[2:5].mean(0)))
    s.reset()
    assert s.update(jitter[10]) == tuple(int(v) for v in np.round(jitter[10]))


def test_debug_images_are_written(tmp_path, landmarks, astronaut, box, generated):
    mask = C.lipsync_mask(landmarks, astronaut.shape, box)
    paths = C.write_debug_images(tmp_path / "dbg", astronaut, generated, mask, box, landmarks, prefix="f0007")
    names = {p.name for p in paths}
    assert {"f0007_mask.png", "f0007_overlay.png", "f0007_composite.png", "f0007_crop_frame.png"} <= names
    saved_mask = cv2.imread(str(tmp_path / "dbg" / "f0007_mask.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(saved_mask, np.round(mask * 255).astype(np.uint8))
    crop = cv2.imread(str(tmp_path / "dbg" / "f0007_crop_generated.png"))[..., ::-1]
    x0, y0, x1, y1 = box
    assert np.array_equal(crop, generated[y0:y1, x0:x1])


def test_invalid_inputs_raise_typed_errors(landmarks, astronaut):
    with pytest.raises(InputError):
        C.mouth_mask(landmarks[:68], astronaut.shape)
    bad = landmarks.copy()
    bad[5, 0] = np.nan
    with pytest.raises(InputError):
        C.face_mask(bad, astronaut.shape)
    with pytest.raises(OptionError):
        C.mouth_mask(landmarks, astronaut.shape, dilate_px=-2)
    with pytest.raises(InputError):
        C.composite(astronaut, astronaut[:-1], np.zeros(astronaut.shape[:2], np.float32))
    with pytest.raises(OptionError):
        C.match_color(astronaut, astronaut, np.ones(astronaut.shape[:2], np.float32), strength=2)
