"""img2img refinement stage: masks and crops, exactness outside the mask, backend call counts in both
modes, streaming order and buffer bound, optical-flow carrying, host backends through test doubles,
pipeline and CLI wiring."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.engines.base import FrameChunk, RunContext
from sadtalker_ext.errors import DependencyError, GenerationInterrupted, InputError, OptionError
from sadtalker_ext.host.base import Img2ImgRequest, LocalHost
from sadtalker_ext.lipsync.compositing import FACE_OVAL, LIPS_OUTER
from sadtalker_ext.refine.backends import CallableBackend, HostBackend, make_backend, refine_status
from sadtalker_ext.refine.flow import blend_weight
from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule, RefineParams
from sadtalker_ext.refine.regions import crop_resize, frame_regions, paste_back, target_size
from sadtalker_ext.refine.stage import RefineStage, buffer_limit, load_schedule, refine_stage_for

FPS = 25
NATIVE = 64


def synthetic_landmarks(cx: float, cy: float, rx: float = 46.0, ry: float = 58.0) -> np.ndarray:
    """478 MediaPipe-layout points: face oval on an ellipse, outer lips on a small one, rest at the centre."""
    lm = np.tile(np.array([cx, cy], np.float32), (478, 1))
    for k, i in enumerate(FACE_OVAL):
        a = -math.pi / 2 + 2 * math.pi * k / len(FACE_OVAL)
        lm[i] = (cx + rx * math.cos(a), cy + ry * math.sin(a))
    for k, i in enumerate(LIPS_OUTER):
        a = math.pi + 2 * math.pi * k / len(LIPS_OUTER)
        lm[i] = (cx + 0.4 * rx * math.cos(a), cy + 0.55 * ry + 0.12 * ry * math.sin(a))
    return lm


@pytest.fixture(scope="module")
def clip(astronaut):
    """24 frames of the astronaut photo panning right 2 px per frame, with landmarks on her face."""
    n = 24
    base = astronaut[:320, 64:384]                       # 320x320, face near (160, 60..180)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])
    lms = np.stack([synthetic_landmarks(161 + 2 * i, 124) for i in range(n)])
    return frames, lms


def chunks_of(frames, lms, size=5):
    for s in range(0, len(frames), size):
        yield FrameChunk(start=s, frames=frames[s:s + size], landmarks=None if lms is None else lms[s:s + size])


def ctx_for(n, **opts):
    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.options import GenerateOptions
    return RunContext(audio=AudioClip(np.zeros(640 * n, np.float32), 16000), options=GenerateOptions(**opts),
                      num_frames=n, fps=FPS)


class Recorder:
    """A backend that inverts the images (a change no blending can hide) and records every request."""

    name = "recorder"

    def __init__(self, native=NATIVE, fn=None):
        self.requests: list[Img2ImgRequest] = []
        self._native = native
        self.fn = fn or (lambda im: 255 - im)

    def native_size(self):
        return self._native

    def __call__(self, req):
        self.requests.append(req)
        return self.fn(req.images)


def run(stage, frames, lms, size=5):
    out = list(stage(chunks_of(frames, lms, size), ctx_for(len(frames))))
    starts = [c.start for c in out]
    allf = np.concatenate([c.frames for c in out])
    assert starts == sorted(starts) and allf.shape == frames.shape
    assert [c.start for c in out] == list(np.cumsum([0] + [len(c) for c in out[:-1]]))
    return allf, out


def soft_masks(stage, frames, lms):
    ps = stage.schedule.params_for(range(len(frames)), FPS, 0)
    return [frame_regions(f.shape, lm, p.mask, p.mask_blur, p.padding) for f, lm, p in zip(frames, lms, ps)]


# -- regions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["face", "mouth"])
def test_regions(clip, mask):
    frame, lm = clip[0][0], clip[1][0]
    r = frame_regions(frame.shape, lm, mask, mask_blur=6, padding=20)
    assert r.soft.dtype == np.float32 and r.hard.dtype == np.float32 and r.sd.dtype == np.uint8
    assert np.all(r.soft[r.hard == 1] > 0.25) and np.all((r.soft > 0) <= (r.sd == 255))  # sd covers the feather
    ys, xs = np.nonzero(r.sd)
    x0, y0, x1, y1 = r.box
    assert x1 - x0 == y1 - y0                              # square crop
    assert x0 <= xs.min() - 20 and xs.max() + 20 < x1 and y0 <= ys.min() - 20 and ys.max() + 20 < y1
    # feather reaches at most ceil(blur) px (Chebyshev) beyond the hard region
    import cv2
    grown = cv2.dilate(r.hard.astype(np.uint8), np.ones((13, 13), np.uint8))
    assert not np.any((r.soft > 0) & (grown == 0))
    wx0, wy0, wx1, wy1 = r.window                          # masks are stored as crops of box ∩ frame
    assert (wx0, wy0) == (max(0, x0), max(0, y0)) and (wx1, wy1) == (min(320, x1), min(320, y1))
    assert r.soft_crop.shape == r.sd_crop.shape == (wy1 - wy0, wx1 - wx0)
    sb = r.soft_bbox()
    ys2, xs2 = np.nonzero(r.soft > 0)
    assert sb == (xs2.min(), ys2.min(), xs2.max() + 1, ys2.max() + 1)
    if mask == "mouth":
        face = frame_regions(frame.shape, lm, "face", 6, 20)
        assert r.hard.sum() < 0.25 * face.hard.sum()
    assert target_size(r, 512, frame.shape) == (512, 512)
    assert frame_regions(frame.shape, None, mask, 6, 20) is None
    assert frame_regions(frame.shape, np.full((478, 2), np.nan), mask, 6, 20) is None


def test_full_mask_and_crop_outside_frame(clip):
    frame = clip[0][0][:, :200]                              # 320 x 200
    r = frame_regions(frame.shape, None, "full", 4, 10)
    assert r.full and r.soft.min() == 1 and target_size(r, 512, frame.shape) == (320, 512)
    crop = crop_resize(frame, (-20, -20, 60, 60), (80, 80))  # reflected outside the frame
    np.testing.assert_array_equal(crop[20:, 20:], frame[:60, :60])
    np.testing.assert_array_equal(crop[19, 20:], frame[1, :60])
    with pytest.raises(InputError):
        crop_resize(frame, (500, 500, 600, 600), (8, 8))


def test_paste_back_is_exact_outside_soft_mask(clip):
    frame, lm = clip[0][0], clip[1][0]
    r = frame_regions(frame.shape, lm, "face", 8, 16)
    size = target_size(r, NATIVE, frame.shape)
    patch = 255 - crop_resize(frame, r.box, size)
    out = paste_back(frame, patch, r)
    np.testing.assert_array_equal(out[r.soft == 0], frame[r.soft == 0])
    inside = r.soft >= 0.999
    assert np.abs(out[inside].astype(int) - frame[inside]).mean() > 60


# -- every mode ---------------------------------------------------------------------------------------------
def test_every_mode_one_call_per_batch_and_exact_outside_mask(clip):
    frames, lms = clip
    frames, lms = frames[:13], lms[:13]
    rec = Recorder()
    sched = KeyframeSchedule([Keyframe(frame=0, denoising_strength=0.2, mask_blur=4, padding=12),
                              Keyframe(frame=6, denoising_strength=0.8, mask_blur=10, padding=30)],
                             mode="every", batch_size=4).validate()
    stage = RefineStage(sched, rec, seed=3)
    out, chunks = run(stage, frames, lms)
    # batches never straddle the keyframe at 6: [0-3] [4-5] [6-9] [10-12]
    assert [r.frame_indices for r in rec.requests] == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11, 12]]
    assert stage.stats.sd_calls == 4 and stage.stats.sd_frames == 13
    # a batch uses the parameters of its first frame
    assert [r.params.denoising_strength for r in rec.requests] == pytest.approx([0.2, 0.2 + 0.6 * 4 / 6, 0.8, 0.8])
    for r in rec.requests:
        n = len(r.images)
        assert r.images.shape == (n, NATIVE, NATIVE, 3) and r.mask.shape == (n, NATIVE, NATIVE)
        assert set(np.unique(r.mask)) <= {0, 255} and r.width == r.height == NATIVE
        assert r.seeds == [r.params.seed] * n and r.inpaint_full_res is False
    assert len({r.params.seed for r in rec.requests}) == 1          # seed -1: one seed for the whole run
    regions = soft_masks(stage, frames, lms)
    for f_in, f_out, reg in zip(frames, out, regions):
        outside = reg.soft == 0
        np.testing.assert_array_equal(f_out[outside], f_in[outside])   # bit-exact outside the mask
        assert np.abs(f_out[reg.soft >= 0.999].astype(int) - f_in[reg.soft >= 0.999]).mean() > 60
    assert chunks[0].landmarks is not None                     # landmarks are passed on


def test_every_mode_seed_and_noise_options(clip):
    frames, lms = clip[0][:6], clip[1][:6]
    rec = Recorder()
    sched = KeyframeSchedule([Keyframe(frame=0, seed=1000)], mode="every", batch_size=3, same_noise=False).validate()
    run(RefineStage(sched, rec), frames, lms)
    assert [r.seeds for r in rec.requests] == [[1000, 1001, 1002], [1003, 1004, 1005]]
    # seed -1 is drawn from options.seed: same options, same seed; another seed, another draw
    seeds = []
    for s in (5, 5, 6):
        rec = Recorder()
        run(RefineStage(KeyframeSchedule(mode="every", batch_size=6), rec, seed=s), frames, lms)
        seeds.append(rec.requests[0].params.seed)
    assert seeds[0] == seeds[1] != seeds[2] and 0 <= seeds[0] < 2 ** 32


def test_frames_without_face_pass_through(clip):
    frames, lms = clip[0][:8], clip[1][:8].copy()
    lms[[2, 5]] = np.nan
    rec = Recorder()
    stage = RefineStage(KeyframeSchedule(mode="every", batch_size=8).validate(), rec)
    out, _ = run(stage, frames, lms, size=3)
    assert rec.requests[0].frame_indices == [0, 1, 3, 4, 6, 7]
    np.testing.assert_array_equal(out[[2, 5]], frames[[2, 5]])
    assert stage.stats.passed_frames == 2


def test_detector_fallback_when_chunk_has_no_landmarks(clip):
    frames, lms = clip[0][:4], clip[1][:4]
    seen = []

    def detect(frame):
        seen.append(frame)
        return lms[len(seen) - 1]

    rec = Recorder()
    run(RefineStage(KeyframeSchedule(mode="every", batch_size=4), rec, detect=detect), frames, None)
    assert len(seen) == 4 and len(rec.requests) == 1
    full = Recorder()
    seen.clear()
    out, _ = run(RefineStage(KeyframeSchedule([Keyframe(frame=0, mask="full")], mode="every"), full, detect=detect),
                 frames, None)
    assert seen == [] and full.requests[0].mask is None and full.requests[0].images.shape[1:3] == (NATIVE, NATIVE)
    assert np.abs(out.astype(int) - frames).mean() > 60      # every pixel repainted


def test_real_face_detector_fallback(astronaut):
    rec = Recorder()
    stage = RefineStage(KeyframeSchedule(mode="every"), rec)
    out = stage.preview(astronaut, 0, FPS)
    assert len(rec.requests) == 1 and rec.requests[0].mask.shape == (1, NATIVE, NATIVE)
    changed = np.any(out != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    assert 150 < xs.mean() < 300 and 60 < ys.mean() < 200    # the face, not the background
    assert changed.mean() < 0.1


def test_interrupt_before_backend_call(clip):
    frames, lms = clip[0][:6], clip[1][:6]
    rec = Recorder()
    stage = RefineStage(KeyframeSchedule(mode="every", batch_size=2), rec, should_stop=lambda: len(rec.requests) >= 1)
    with pytest.raises(GenerationInterrupted):
        run(stage, frames, lms)
    assert len(rec.requests) == 1


# -- keyframes mode --------------------------------------------------------------------------------------------
def test_keyframes_mode_one_call_per_keyframe_and_exact_outside_mask(clip):
    frames, lms = clip
    rec = Recorder()
    sched = KeyframeSchedule([Keyframe(frame=15, mask_blur=6), Keyframe(time=0.2), Keyframe(frame=23),
                              Keyframe(frame=100, denoising_strength=0.9)], mode="keyframes").validate()
    stage = RefineStage(sched, rec)
    out, chunks = run(stage, frames, lms)
    assert [r.frame_indices for r in rec.requests] == [[5], [15], [23]]   # the one past the end: none
    assert stage.stats.sd_calls == 3 and stage.stats.carried_frames == 21 and stage.stats.keyframes_beyond_end == 1
    regions = soft_masks(stage, frames, lms)
    for i, (f_in, f_out, reg) in enumerate(zip(frames, out, regions)):
        np.testing.assert_array_equal(f_out[reg.soft == 0], f_in[reg.soft == 0], err_msg=f"frame {i}")
        core = reg.soft >= 0.999
        assert np.abs(f_out[core].astype(int) - f_in[core]).mean() > 20, i   # every frame got refinement
    # frames wait only for the next keyframe: frames 6..14 for keyframe 15
    assert stage.stats.max_buffered == 9


def test_keyframes_mode_carries_refinement_along_the_motion(clip):
    """Carried frames approximate what a direct img2img of each frame would give."""
    frames, lms = clip
    rng = np.random.default_rng(0)
    pattern = rng.integers(-50, 50, (NATIVE, NATIVE, 1))

    def fn(im):  # a texture fixed to the face crop (it moves with the face)
        return np.clip(im.astype(int) + pattern, 0, 255).astype(np.uint8)

    every = RefineStage(KeyframeSchedule(mode="every", batch_size=8), Recorder(fn=fn))
    direct, _ = run(every, frames, lms)
    keys = RefineStage(KeyframeSchedule([Keyframe(frame=0), Keyframe(frame=12), Keyframe(frame=23)]), Recorder(fn=fn))
    carried, _ = run(keys, frames, lms)
    regions = soft_masks(keys, frames, lms)
    for i in (3, 6, 9, 17, 20):
        core = regions[i].soft >= 0.999
        err_carried = np.abs(carried[i][core].astype(int) - direct[i][core]).mean()
        err_none = np.abs(frames[i][core].astype(int) - direct[i][core]).mean()
        assert err_carried < 0.35 * err_none, (i, err_carried, err_none)
    np.testing.assert_array_equal(carried[12], direct[12])      # keyframes are refined directly


def test_blend_weight_rules():
    assert blend_weight(5, 0, 10, 100) == pytest.approx(0.5)
    assert blend_weight(10, 0, 10, 100) == 1.0 and blend_weight(0, 0, 10, 100) == 0.0
    assert blend_weight(7, 5, None, 100) == 0.0                           # after the last keyframe
    assert blend_weight(3, None, 8, 100) == 1.0                           # before the first
    # keyframes farther apart than the buffer: the hand-over happens over the last `limit` frames
    assert blend_weight(50, 0, 100, 20) == 0.0 and blend_weight(90, 0, 100, 20) == pytest.approx(0.5)
    assert blend_weight(60, None, 100, 20) == 0.0 and blend_weight(85, None, 100, 20) == pytest.approx(0.5)
    waiting = [t for t in range(1, 100) if blend_weight(t, 0, 100, 20) > 0]
    assert len(waiting) == 19
    assert buffer_limit(1024, (512, 512, 3)) == 1365 and buffer_limit(1024, (1080, 1920, 3)) == 172


def test_keyframes_mode_buffer_is_bounded(clip):
    frames, lms = clip
    frame_mb = frames[0].nbytes / 2 ** 20                   # 0.29 MiB
    rec = Recorder()
    sched = KeyframeSchedule([Keyframe(frame=0), Keyframe(frame=23)], max_buffer_mb=16).validate()
    stage = RefineStage(sched, rec)
    limit = buffer_limit(16, frames[0].shape)
    assert limit == int(16 / frame_mb)
    small = KeyframeSchedule([Keyframe(frame=0), Keyframe(frame=23)], max_buffer_mb=16)
    # emulate a tiny budget: frames far from the next keyframe are emitted without waiting
    stage2 = RefineStage(small, rec)
    import sadtalker_ext.refine.stage as st
    orig = st.buffer_limit
    st.buffer_limit = lambda mb, shape: 6
    try:
        out, _ = run(stage2, frames, lms, size=1)
    finally:
        st.buffer_limit = orig
    assert stage2.stats.max_buffered == 5 and len(rec.requests) == 2
    out_full, _ = run(stage, frames, lms)
    assert stage.stats.max_buffered == 22


# -- backends --------------------------------------------------------------------------------------------------
class FakeHost(LocalHost):
    """A host test double that records the Img2ImgRequest arguments and brightens the masked pixels."""

    name = "fake-webui"

    def __init__(self, native=None):
        super().__init__(output_dir="unused")
        self.calls: list[Img2ImgRequest] = []
        self._native_size = native

    def can_img2img(self):
        return True

    def sd_native_size(self):
        return self._native_size

    def img2img(self, request):
        self.calls.append(request)
        out = request.images.copy()
        if request.mask is not None:
            out[request.mask > 0] = 250
        return out


def test_host_backend_arguments(clip):
    frames, lms = clip[0][:6], clip[1][:6]
    host = FakeHost(native=96)
    sched = KeyframeSchedule([Keyframe(frame=0, denoising_strength=0.45, seed=77, padding=24, mask_blur=5,
                                       prompt="sharp portrait", negative_prompt="blur", cfg_scale=6.5, steps=12,
                                       sampler="DPM++ 2M Karras")], mode="every", batch_size=3).validate()
    stage = refine_stage_for(_opts(sched.to_dict()), host=host)  # options carry a schedule as its JSON object
    assert isinstance(stage.backend, HostBackend)
    out, _ = run(stage, frames, lms)
    assert len(host.calls) == 2
    for req in host.calls:
        assert req.images.shape == (3, 96, 96, 3) and req.images.dtype == np.uint8
        p = req.params
        assert p.denoising_strength == 0.45 and p.seed == 77 and req.seeds == [77] * 3
        assert p.padding == 24 and p.mask_blur == 5 and p.cfg_scale == 6.5
        assert p.steps == 12 and p.sampler == "DPM++ 2M Karras"
        assert p.prompt == "sharp portrait" and p.negative_prompt == "blur"
        assert req.width == req.height == 96 and req.inpainting_fill == 1
        # one mask for the whole call (the union), so that the WebUI can batch the images
        assert req.mask.shape == (3, 96, 96) and all(np.array_equal(req.mask[0], m) for m in req.mask)
        assert 0.2 < (req.mask > 0).mean() < 0.9
    regions = soft_masks(stage, frames, lms)
    for f_in, f_out, reg in zip(frames, out, regions):
        np.testing.assert_array_equal(f_out[reg.soft == 0], f_in[reg.soft == 0])
        assert np.all(f_out[reg.soft >= 0.999] >= 240)
    # default native size without the host's answer: 512
    assert HostBackend(FakeHost(native=None)).native_size() == 512


def _opts(refine, **kw):
    from sadtalker_ext.options import GenerateOptions
    return GenerateOptions(refine=refine, **kw).validate()


def test_a1111_host_adapter_through_the_webui_double(clip, monkeypatch):
    """The stage's request through the real WebUI adapter into the WebUI double's processing."""
    pytest.importorskip("sadtalker_ext.host.a1111")
    double = Path(__file__).parent / "host_double"
    if not (double / "modules" / "processing.py").is_file():
        pytest.skip("WebUI double not present")
    monkeypatch.syspath_prepend(str(double))
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
        monkeypatch.delitem(sys.modules, name)
    from modules import processing, shared
    from sadtalker_ext.host.a1111 import A1111Host
    if hasattr(shared, "double_reset"):
        shared.double_reset()
    processing.double_calls.clear()
    frames, lms = clip[0][:4], clip[1][:4]
    sched = KeyframeSchedule([Keyframe(frame=0, denoising_strength=0.35, seed=11, padding=40, mask_blur=3)],
                             mode="every", batch_size=4).validate()
    stage = RefineStage(sched, HostBackend(A1111Host(), native=64))
    out, _ = run(stage, frames, lms)
    assert len(processing.double_calls) == 1                  # one mask for the batch -> one process_images
    p = processing.double_calls[0]
    assert p.denoising_strength == 0.35 and p.seed == [11] * 4 and p.batch_size == 4
    assert (p.width, p.height) == (64, 64) and p.inpaint_full_res is False and p.inpaint_full_res_padding == 40
    assert p.mask_blur_x == 3 and p.image_mask is not None and p.image_mask.size == (64, 64)
    regions = soft_masks(stage, frames, lms)
    for f_in, f_out, reg in zip(frames, out, regions):
        np.testing.assert_array_equal(f_out[reg.soft == 0], f_in[reg.soft == 0])
        assert (f_out[reg.soft >= 0.999] != f_in[reg.soft >= 0.999]).mean() > 0.5


def test_local_host_and_no_model_messages(tmp_path):
    with pytest.raises(DependencyError, match="needs a Stable Diffusion model") as ei:
        make_backend(host=LocalHost(output_dir=tmp_path))
    assert "\n" not in str(ei.value)
    with pytest.raises(DependencyError):
        make_backend()
    with pytest.raises(DependencyError):
        refine_stage_for(_opts({"keyframes": [{"frame": 0}]}))
    ok, msg = refine_status(LocalHost(output_dir=tmp_path))
    assert not ok and msg.startswith("img2img refinement is disabled")
    local = LocalHost(output_dir=tmp_path, img2img_backend=lambda r: r.images)
    assert isinstance(make_backend(host=local), HostBackend) and refine_status(local)[0]
    assert refine_status(local)[1] == "img2img refinement uses the host's loaded model"
    for name in ("a1111", "forge"):  # what the WebUI adapter calls itself: a user reads "WebUI"
        local.name = name
        assert refine_status(local) == (True, "img2img refinement uses the WebUI's loaded model")
    assert not refine_status(sd_checkpoint=tmp_path / "none.safetensors")[0]
    assert refine_stage_for(_opts(None)) is None


def test_backend_output_is_checked(clip):
    bad = CallableBackend(lambda r: r.images[:, :10], native=NATIVE)
    stage = RefineStage(KeyframeSchedule(mode="every"), bad)
    with pytest.raises(InputError, match="returned images of shape"):
        stage.preview(clip[0][0], 0, FPS, landmarks=clip[1][0])


def test_load_schedule_forms(tmp_path):
    p = tmp_path / "k.json"
    KeyframeSchedule([Keyframe(frame=2, steps=9)]).save(p)
    for form in (str(p), p, '{"keyframes": [{"frame": 2, "steps": 9}]}', [{"frame": 2, "steps": 9}],
                 {"keyframes": [{"frame": 2, "steps": 9}]}):
        assert load_schedule(form).keyframes == [Keyframe(frame=2, steps=9)]
    with pytest.raises(OptionError):
        load_schedule(3)
    stage = refine_stage_for(_opts(str(p), refine_mode="every"), backend=Recorder())
    assert stage.mode == "every"
    with pytest.raises(OptionError, match="refine-mode"):
        _opts(str(p), refine_mode="all")


# -- pipeline and CLI -------------------------------------------------------------------------------------------
class FakeEngine:
    """An engine double: the panning clip as its frames (so the test needs no model)."""

    name = "fake"

    def __init__(self, frames, lms):
        self._frames, self._lms = frames, lms

    def prepare(self, image, options):
        return None

    def output_size(self, source):
        return self._frames.shape[2], self._frames.shape[1]

    def motion(self, source, ctx):
        return None

    def frames(self, source, motion, ctx):
        n = min(ctx.num_frames, len(self._frames))
        yield from chunks_of(self._frames[:n], self._lms[:n], ctx.options.chunk_size)


def test_pipeline_runs_refinement_last(clip, tmp_path, astronaut):
    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate
    frames, lms = clip
    audio = AudioClip(np.zeros(16000 * 24 // 25, np.float32), 16000)   # 24 frames
    rec = Recorder()
    sched = KeyframeSchedule([Keyframe(frame=0), Keyframe(frame=20)])
    order = []

    def marker(chunks, ctx):
        for c in chunks:
            order.append("marker")
            yield c

    stage = RefineStage(sched, rec)
    res = generate(astronaut, audio, tmp_path / "o.mp4", GenerateOptions(engine="lite", chunk_size=8),
                   engine=FakeEngine(frames, lms), stages=[stage, marker])
    assert res.num_frames == 24 and res.info["refine"]["sd_calls"] == 2 and res.path.exists()
    # options.refine without a model fails before anything is rendered
    with pytest.raises(DependencyError):
        generate(astronaut, audio, tmp_path / "p.mp4", GenerateOptions(refine={"keyframes": []}),
                 engine=FakeEngine(frames, lms))
    assert not (tmp_path / "p.mp4").exists()


def test_cli_without_model_prints_one_line(tmp_path, capsys):
    from sadtalker_ext.cli.main import main
    k = tmp_path / "k.json"
    KeyframeSchedule([Keyframe(time=0.0)]).save(k)
    rc = main(["--quiet", "demo", "--out", str(tmp_path / "o.mp4"), "--refine", str(k), "--refine-mode", "every"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: img2img refinement needs a Stable Diffusion model")
    rc = main(["--quiet", "demo", "--out", str(tmp_path / "o.mp4"), "--refine", str(k),
               "--sd-checkpoint", str(tmp_path / "none.safetensors")])
    assert rc == 2 and "SD checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("method,side", [("dis", 256), ("dis", 1024), ("farneback", 256)])
def test_flow_measures_a_known_shift(astronaut, method, side):
    """Frame k is frame t moved by (+6, -4) px: the flow t -> k is (+6, -4), also when computed downscaled."""
    import cv2
    from sadtalker_ext.refine.flow import FlowCarrier
    g = cv2.cvtColor(astronaut[40:460, 40:460], cv2.COLOR_RGB2GRAY)        # 420 px: downscaled when side=256
    t = g[20:-20, 20:-20]
    k = g[24:-16, 14:-26]                                                  # k(x) = t(x - (6, -4))
    flow = FlowCarrier(method, max_side=side).flow(np.ascontiguousarray(t), np.ascontiguousarray(k))
    inner = flow[40:-40, 40:-40].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [6.0, -4.0], atol=0.6)


def test_frames_waiting_for_a_keyframe_hold_no_masks(clip, monkeypatch):
    """Masks are built only when a frame is finished: while frames 1..22 wait for keyframe 23, only
    the keyframes' masks exist (the buffer holds pixels and landmarks only)."""
    import sadtalker_ext.refine.stage as st
    frames, lms = clip
    built = []
    real = st.frame_regions

    def counting(*a, **k):
        built.append(1)
        return real(*a, **k)
    monkeypatch.setattr(st, "frame_regions", counting)
    seen_at_call = []
    rec = Recorder(fn=lambda im: (seen_at_call.append(len(built)), 255 - im)[1])
    run(RefineStage(KeyframeSchedule([Keyframe(frame=0), Keyframe(frame=23)]), rec), frames, lms, size=4)
    assert seen_at_call == [1, 2] and len(built) == 24


@pytest.mark.parametrize("mask,size,expect", [
    ("full", "auto", (320, 320)),      # the 320 px frame itself, not blown up to the model's 512
    ("full", "native", (512, 512)),
    ("full", 256, (256, 256)),
    ("face", "native", (512, 512)),
])
def test_refinement_size_follows_the_video(clip, mask, size, expect):
    """schedule.size: "auto" refines a crop at its own size in the frame (at most the model's native
    size), "native" at the model's size (always 512 before), or the given pixels."""
    frames, lms = clip
    rec = Recorder(native=512)
    sched = KeyframeSchedule([Keyframe(frame=0)], size=size).validate()
    sched.defaults.mask = mask
    run(RefineStage(sched, rec), frames[:5], lms[:5])
    assert len(rec.requests) == 1
    assert rec.requests[0].images.shape[1:3] == expect[::-1]
    assert (rec.requests[0].width, rec.requests[0].height) == expect


def test_refinement_size_auto_for_a_face_crop(clip):
    """The synthetic face is 92 x 116 px (landmark ellipse), plus 32 px padding a side: its crop is refined
    at about that size (a multiple of 8), far below the model's 512."""
    frames, lms = clip
    rec = Recorder(native=512)
    sched = KeyframeSchedule([Keyframe(frame=0)]).validate()
    assert sched.size == "auto" and sched.defaults.mask == "face"
    run(RefineStage(sched, rec), frames[:5], lms[:5])
    side = rec.requests[0].images.shape[1]
    assert rec.requests[0].images.shape[2] == side and side % 8 == 0
    assert 116 <= side <= 116 + 2 * 32 + 48, side


@pytest.mark.parametrize("bad", [0, 63, 2049, 256.0, True, "big"])
def test_refinement_size_is_checked(bad):
    with pytest.raises(OptionError, match="size must be"):
        KeyframeSchedule([Keyframe(frame=0)], size=bad).validate()
    assert KeyframeSchedule.from_json('{"keyframes": [{"frame": 0}], "size": 384}').size == 384
