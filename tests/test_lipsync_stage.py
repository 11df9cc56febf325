"""Wav2Lip-UHQ stage, restoration and video input on real inputs (astronaut + CMU ARCTIC) with the
synthetic official checkpoints (their outputs are noise, which makes every refined pixel visible)."""
from __future__ import annotations

import sys
import tracemalloc
import types
from fractions import Fraction

import cv2
import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.audio.mel import melspectrogram, resample_to_16k, wav2lip_mel_chunks
from sadtalker_ext.engines.base import FrameChunk, RunContext
from sadtalker_ext.engines.video import PingPong, VideoSourceEngine
from sadtalker_ext.errors import CheckpointError, DependencyError, OptionError, VideoError
from sadtalker_ext.io.probe import probe, read_frames
from sadtalker_ext.io.video_writer import VideoWriter
from sadtalker_ext.lipsync.compositing import MaskConfig
from sadtalker_ext.lipsync.restore import FaceRestorer, five_points, load_restorer
from sadtalker_ext.lipsync.stage import MelWindows, Wav2LipStage, lipsync_stage_for
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import generate, iter_frames

torch = pytest.importorskip("torch")
torch.set_num_threads(2)


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip4(arctic_wav) -> AudioClip:
    return load_audio(arctic_wav)


@pytest.fixture(scope="module")
def clip2(clip4) -> AudioClip:
    """The first 2 s of ARCTIC a0007."""
    return AudioClip(clip4.samples[: 2 * clip4.sample_rate].copy(), clip4.sample_rate, "a0007[0:2]")


@pytest.fixture(scope="module")
def lite_frames(astronaut, clip2):
    """The lite engine's 50 frames (256 px) for clip2 with their landmarks: (uint8 [50,256,256,3], [50,478,2])."""
    chunks = list(iter_frames(astronaut, clip2, GenerateOptions(engine="lite", size=256)))
    return (np.concatenate([c.frames for c in chunks]), np.concatenate([c.landmarks for c in chunks]))


@pytest.fixture(scope="module")
def lite_video(tmp_path_factory, lite_frames, clip2):
    """A 2 s, 256 px video made by the lite engine (with its speech)."""
    path = tmp_path_factory.mktemp("src") / "lite2s.mp4"
    with VideoWriter(path, (256, 256), 25, audio=clip2.samples, sample_rate=clip2.sample_rate) as w:
        w.write(lite_frames[0])
    return path


@pytest.fixture(scope="module")
def wav2lip_model(synthetic_checkpoints):
    from sadtalker_ext.lipsync.wav2lip_net import load_wav2lip
    return load_wav2lip(synthetic_checkpoints / "wav2lip_gan.pth")


def _ctx(clip: AudioClip, n: int, fps=25, **opts) -> RunContext:
    return RunContext(audio=clip, options=GenerateOptions(**opts), num_frames=n, fps=fps)


def _chunks(frames, landmarks, size):
    for s in range(0, len(frames), size):
        yield FrameChunk(start=s, frames=frames[s:s + size].copy(),
                         landmarks=None if landmarks is None else landmarks[s:s + size].copy())


def _run(stage, frames, landmarks, clip, size=10):
    ctx = _ctx(clip, len(frames))
    out = list(stage(_chunks(frames, landmarks, size), ctx))
    assert [c.start for c in out] == list(range(0, len(frames), size))
    return np.concatenate([c.frames for c in out]), ctx


# mediapipe face mesh: the outer lip ring (FACEMESH_LIPS) and the outer eye corners
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
EYE_CORNERS = [33, 263]


def _boxes(landmarks, shape, pads=(0, 10, 0, 0), window=5):
    """The documented face boxes, written here: landmark extent floor(min)..ceil(max) plus Wav2Lip's
    pads (top, bottom, left, right), clipped to the frame, then the causal mean of the last
    ``window`` boxes, rounded. Returns [(x0, y0, x1, y1)] per frame."""
    top, bottom, left, right = pads
    h, w = shape[:2]
    raw, out = [], []
    for lm in landmarks:
        raw.append((max(0, np.floor(lm[:, 0].min()) - left), max(0, np.floor(lm[:, 1].min()) - top),
                    min(w, np.ceil(lm[:, 0].max()) + right), min(h, np.ceil(lm[:, 1].max()) + bottom)))
        out.append(tuple(int(v) for v in np.round(np.mean(raw[-window:], axis=0))))
    return out


def _regions(frame_shape, lm, box, far_px):
    """Boolean maps: ``outside`` the box; ``far``: more than ``far_px`` from the lips and above the eye
    line (the mask never reaches there); ``lips``: inside the outer lip ring shrunk by 2 px."""
    h, w = frame_shape[:2]
    x0, y0, x1, y1 = box
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    poly = np.zeros((h, w), np.uint8)
    cv2.fillPoly(poly, [np.round(lm[LIPS_OUTER]).astype(np.int32)], 1)
    dist_out = cv2.distanceTransform(1 - poly, cv2.DIST_L2, 5)
    dist_in = cv2.distanceTransform(poly, cv2.DIST_L2, 5)
    eye_line = lm[EYE_CORNERS, 1].min()
    far = outside | ((dist_out > far_px) & (np.arange(h)[:, None] < eye_line - far_px))
    return outside, far, dist_in > 2


# -- audio windows ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [25.0, float(Fraction(30000, 1001)), 24.0])
def test_mel_windows_equal_whole_clip_chunking(clip4, fps):
    wav16 = resample_to_16k(clip4.samples, clip4.sample_rate)
    n = int(round(clip4.duration * fps)) + 3  # a few frames past the end: last-16-columns rule
    ref = wav2lip_mel_chunks(melspectrogram(wav16), fps, num_frames=n)
    mw = MelWindows(wav16, fps)
    got = np.concatenate([mw.windows(range(s, min(n, s + 7))) for s in range(0, n, 7)])
    assert got.shape == ref.shape == (n, 80, 16)
    assert np.max(np.abs(got - ref)) <= 1e-6
    # tiny clip (fewer than 16 columns): padded with silence like the official helper
    tiny = wav16[:1000]
    np.testing.assert_array_equal(MelWindows(tiny, fps).windows([0, 3]),
                                  wav2lip_mel_chunks(melspectrogram(tiny), fps, num_frames=4)[[0, 3]])


# -- the stage on real frames -----------------------------------------------------------------------
def test_pixels_outside_feathered_mask_unchanged(lite_frames, clip2, wav2lip_model, tmp_path):
    frames, lms = lite_frames[0][:30], lite_frames[1][:30]
    stage = Wav2LipStage(model=wav2lip_model, batch_size=16, debug_dir=tmp_path / "dbg", debug_frame=7)
    out, ctx = _run(stage, frames, lms, clip2, size=10)  # batches of 16 across chunks of 10
    assert ctx.info["lipsync"] == {"frames": 30, "refined": 30, "no_face": 0, "batch_size": 16, "checkpoint": None}
    changed_inside = []
    for i, box in enumerate(_boxes(lms, frames.shape[1:])):
        diff = np.abs(out[i].astype(np.int16) - frames[i]).max(axis=2)
        outside, far, lips = _regions(frames.shape[1:], lms[i], box, far_px=8 + 8 + 2)
        assert not diff[outside].any(), f"frame {i}: a pixel outside the face box changed"
        assert not diff[far].any(), f"frame {i}: a pixel above the eyes changed"
        changed_inside.append(np.mean(diff[lips] > 0))
    print(f"fraction of pixels inside the lips changed: min {min(changed_inside):.3f}")
    assert min(changed_inside) > 0.8  # the synthetic network's noise replaces the mouth region
    names = sorted(p.name for p in (tmp_path / "dbg").iterdir())
    assert names == sorted(f"frame00007_{k}.png" for k in (
        "frame", "generated", "mask", "composite", "overlay", "crop_frame", "crop_generated",
        "net_masked", "net_reference", "net_output"))
    mask_png = cv2.imread(str(tmp_path / "dbg" / "frame00007_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask_png.shape == (256, 256) and mask_png.max() == 255
    net_masked = cv2.imread(str(tmp_path / "dbg" / "frame00007_net_masked.png"))
    assert net_masked.shape == (96, 96, 3) and not net_masked[48:].any() and net_masked[:48].mean() > 20


def test_batch_size_does_not_change_the_result(lite_frames, clip2, wav2lip_model):
    frames, lms = lite_frames[0][:8], lite_frames[1][:8]
    outs = [_run(Wav2LipStage(model=wav2lip_model, batch_size=b), frames, lms, clip2, size=3)[0] for b in (1, 5, 16)]
    for o in outs[1:]:  # batched convolutions round differently: a level or two on a few pixels
        d = np.abs(o.astype(np.int16) - outs[0])
        assert d.max() <= 2 and np.mean(d > 0) < 0.01, (d.max(), np.mean(d > 0))


def test_frames_without_face_pass_through_bit_exactly(lite_frames, clip2, wav2lip_model):
    from skimage import data
    frames, lms = lite_frames[0][:10].copy(), lite_frames[1][:10].copy()
    no_face = cv2.resize(data.coffee(), (256, 256), interpolation=cv2.INTER_AREA)
    for j in (3, 7):
        frames[j] = no_face
        lms[j] = np.nan
    stage = Wav2LipStage(model=wav2lip_model, batch_size=4)
    # landmarks given by the engine (NaN = no face) ...
    out, ctx = _run(stage, frames, lms, clip2, size=5)
    # ... and found by the detector (chunk.landmarks None)
    out_det, ctx_det = _run(stage, frames, None, clip2, size=5)
    for o, c in ((out, ctx), (out_det, ctx_det)):
        assert c.info["lipsync"]["no_face"] == 2 and c.info["lipsync"]["refined"] == 8
        for j in range(10):
            if j in (3, 7):
                np.testing.assert_array_equal(o[j], frames[j])
            else:
                assert (o[j] != frames[j]).any()


def test_only_mouth_and_restorer(lite_frames, clip2, wav2lip_model):
    frames, lms = lite_frames[0][:6], lite_frames[1][:6]
    calls = []

    def paint_blue(img):
        calls.append(img.shape)
        out = np.zeros_like(img)
        out[..., 2] = 255
        return out

    cfg = MaskConfig(only_mouth=True, dilate_px=4, blur_px=4)
    out, _ = _run(Wav2LipStage(model=wav2lip_model, mask=cfg, restore=paint_blue, color_match=False),
                  frames, lms, clip2, size=6)
    assert len(calls) == 6
    for i, box in enumerate(_boxes(lms, frames.shape[1:])):
        assert calls[i] == (box[3] - box[1], box[2] - box[0], 3)
        outside, _, lips = _regions(frames.shape[1:], lms[i], box, far_px=0)
        poly = np.zeros(frames.shape[1:3], np.uint8)
        cv2.fillPoly(poly, [np.round(lms[i][LIPS_OUTER]).astype(np.int32)], 1)
        far = cv2.distanceTransform(1 - poly, cv2.DIST_L2, 5) > 4 + 4 + 2  # beyond dilation + feather
        assert np.array_equal(out[i][far | outside], frames[i][far | outside]), f"frame {i}: only the lips may change"
        assert lips.any() and (out[i][lips] == (0, 0, 255)).all()  # inside the lips: the restorer's output
        # everywhere a blend between the frame and pure blue: blue never drops, red and green never rise
        assert (out[i][..., 2] >= frames[i][..., 2]).all() and (out[i][..., :2] <= frames[i][..., :2]).all()
    bad = Wav2LipStage(model=wav2lip_model, restore=lambda img: img[:10])
    with pytest.raises(Exception, match="restorer returned"):
        _run(bad, frames, lms, clip2, size=6)


def test_memory_is_flat_in_audio_length(astronaut):
    """Peak traced (numpy) memory of the stage on 10 s vs 40 s of frames at 256 px.

    A stand-in network keeps it fast; the stage's own buffering, masks and mel windows are what is
    measured."""
    from sadtalker_ext.face.landmarks import detect_faces

    class Echo(torch.nn.Module):
        def forward(self, mel, face):
            return face[:, 3:] * 0.5 + mel.mean() * 0.0 + 0.25

    base = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    lm = detect_faces(base)[0].points[:, :2]
    rng = np.random.default_rng(0)

    def run(seconds):
        n = 25 * seconds
        clip = AudioClip((0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32), 16000)

        def chunks():
            for s in range(0, n, 25):
                yield FrameChunk(start=s, frames=np.repeat(base[None], 25, axis=0),
                                 landmarks=np.repeat(lm[None], 25, axis=0))
        stage = Wav2LipStage(model=Echo(), batch_size=64)
        ctx = _ctx(clip, n)
        tracemalloc.start()
        tracemalloc.reset_peak()
        count = sum(len(c) for c in stage(chunks(), ctx))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == n and ctx.info["lipsync"]["refined"] == n
        return peak

    p10, p40 = run(10), run(40)
    print(f"peak traced memory: 10 s {p10 / 2**20:.1f} MiB, 40 s {p40 / 2**20:.1f} MiB")
    assert p40 <= 1.15 * p10 + (1 << 20)


# -- end to end -------------------------------------------------------------------------------------
def test_lite_engine_with_wav2lip_end_to_end(tmp_path, astronaut, clip2, lite_frames, synthetic_checkpoints):
    out = tmp_path / "lite_w2l.mp4"
    res = generate(astronaut, clip2, out, GenerateOptions(engine="lite", size=256, lipsync="wav2lip",
                                                          checkpoints=str(synthetic_checkpoints),
                                                          lipsync_debug=str(tmp_path / "dbg"), crf=12))
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.width, info.height, info.fps) == ("h264", "yuv420p", 256, 256, 25.0)
    assert info.num_frames == 50 and abs(info.audio_duration - 2.0) <= 0.05
    assert res.info["lipsync"]["refined"] == 50 and res.info["lipsync"]["checkpoint"] == "wav2lip_gan.pth"
    assert len(list((tmp_path / "dbg").glob("frame00000_*.png"))) == 10
    # the stage ran where it should: hair unchanged (up to H.264), mouth replaced
    frames = np.stack(list(read_frames(out))).astype(np.int16)
    src = lite_frames[0].astype(np.int16)
    boxes = _boxes(lite_frames[1], src.shape[1:])
    lips = [_regions(src.shape[1:], lite_frames[1][i], b, 0)[2] for i, b in enumerate(boxes)]
    top = np.abs(frames[:, :40] - src[:, :40]).mean()
    inside = np.mean([np.abs(frames[i] - src[i])[m].mean() for i, m in enumerate(lips)])
    print(f"mean |diff| vs lite-only frames: hair {top:.2f}, mouth {inside:.1f}")
    assert top < 3.0 and inside > 6 * top


def test_video_input_ping_pong_and_audio_replaced(tmp_path, lite_video, lite_frames, clip4, synthetic_checkpoints):
    from scipy.io import wavfile
    from sadtalker_ext.cli.main import main
    speech = clip4.samples[::-1].copy()  # 4 s that the source video never had
    wav = tmp_path / "speech.wav"
    wavfile.write(wav, clip4.sample_rate, (speech * 32767).astype(np.int16))
    out = tmp_path / "retalk.mp4"
    rc = main(["--quiet", "generate", "--video", str(lite_video), "--audio", str(wav), "--out", str(out),
               "--lipsync", "wav2lip", "--checkpoints", str(synthetic_checkpoints)])
    assert rc == 0
    info = probe(out)
    assert (info.width, info.height, info.fps, info.num_frames) == (256, 256, 25.0, 100)
    assert abs(info.audio_duration - 4.0) <= 0.05
    got = load_audio(out).samples[: len(speech)]
    n = min(len(got), len(speech))
    r_new = np.corrcoef(got[:n], speech[:n])[0, 1]
    r_old = np.corrcoef(got[:32000], clip4.samples[:32000])[0, 1]
    print(f"audio correlation with the new speech {r_new:.3f}, with the video's own {r_old:.3f}")
    assert r_new > 0.9 and abs(r_old) < 0.3
    # ping-pong: in the second half pick the frames where looping forward would differ most
    frames = np.stack(list(read_frames(out))).astype(np.int16)[:, :40]  # hair rows, outside the face box
    src = lite_frames[0][:, :40].astype(np.int16)
    ks = sorted(range(50, 100), key=lambda k: -np.abs(src[PingPong.index(k, 50)] - src[k % 50]).mean())[:5]
    for k in ks:
        right = np.abs(frames[k] - src[PingPong.index(k, 50)]).mean()
        wrong = np.abs(frames[k] - src[k % 50]).mean()
        assert right < wrong, (k, right, wrong)


def test_video_engine_streams_exact_ping_pong(lite_video, clip4):
    src = np.stack(list(read_frames(lite_video)))
    assert len(src) == 50
    expected = [PingPong.index(i, 50) for i in range(130)]
    assert expected[48:52] == [48, 49, 48, 47] and expected[97:100] == [1, 0, 1]
    for buffer_frames, chunk in ((1000, 25), (5, 4)):  # kept in memory / re-read backward in blocks
        eng = VideoSourceEngine(lite_video, landmarks=False, buffer_bytes=buffer_frames * 256 * 256 * 3)
        opts = GenerateOptions(chunk_size=chunk)
        source = eng.prepare(None, opts)
        ctx = RunContext(audio=clip4, options=opts, num_frames=130, fps=eng.fps)
        chunks = list(eng.frames(source, eng.motion(source, ctx), ctx))
        assert all(c.landmarks is None for c in chunks) and chunks[1].start == chunk
        got = np.concatenate([c.frames for c in chunks])
        assert len(got) == 130
        for i, k in enumerate(expected):
            assert np.array_equal(got[i], src[k]), f"buffer {buffer_frames}: output frame {i} is not source {k}"


def test_video_engine_landmarks_follow_the_face(lite_video, lite_frames, clip2):
    eng = VideoSourceEngine(lite_video)
    opts = GenerateOptions(lipsync="wav2lip", chunk_size=8)
    source = eng.prepare(None, opts)
    ctx = RunContext(audio=clip2, options=opts, num_frames=8, fps=eng.fps)
    (chunk,) = list(eng.frames(source, eng.motion(source, ctx), ctx))
    assert chunk.landmarks.shape == (8, 478, 2) and np.isfinite(chunk.landmarks).all()
    err = np.linalg.norm(chunk.landmarks - lite_frames[1][:8], axis=2).mean()
    print(f"mean landmark distance to the lite engine's own: {err:.2f} px")
    assert err < 4.0


def test_video_input_keeps_fractional_frame_rate(tmp_path, lite_frames, clip2):
    path = tmp_path / "ntsc.mp4"
    fps = Fraction(30000, 1001)
    with VideoWriter(path, (256, 256), fps) as w:
        w.write(lite_frames[0][:30])
    assert abs(probe(path).fps - 29.97) < 0.01
    out = tmp_path / "o.mp4"
    res = generate(None, clip2, out, GenerateOptions(lipsync="none"), video=path)
    info = probe(out)
    assert res.engine == "video" and res.num_frames == round(2.0 * 30000 / 1001) == 60
    assert abs(info.fps - 29.97) < 0.01 and info.num_frames == 60
    assert abs(info.audio_duration - 2.0) <= 0.05 and abs(info.video_duration - 2.0) < 0.02


def test_video_engine_errors(tmp_path, arctic_wav):
    with pytest.raises(VideoError, match="not found"):
        VideoSourceEngine(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="no video track"):
        VideoSourceEngine(arctic_wav)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoError):
        VideoSourceEngine(junk)


# -- construction from options ----------------------------------------------------------------------
def test_lipsync_stage_for_options(tmp_path, synthetic_checkpoints, monkeypatch):
    monkeypatch.delenv("SADTALKER_CHECKPOINTS", raising=False)
    from sadtalker_ext.lipsync.stage import find_wav2lip_checkpoint
    assert lipsync_stage_for(GenerateOptions(lipsync="none", checkpoints=str(synthetic_checkpoints))) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    if find_wav2lip_checkpoint(str(empty)) is None:  # no Wav2Lip file installed in the repository
        assert lipsync_stage_for(GenerateOptions(lipsync="auto", checkpoints=str(empty))) is None
        with pytest.raises(CheckpointError, match="wav2lip_gan.pth"):
            lipsync_stage_for(GenerateOptions(lipsync="wav2lip", checkpoints=str(empty)))
    stage = lipsync_stage_for(GenerateOptions(lipsync="auto", checkpoints=str(synthetic_checkpoints), pads=(1, 2, 3, 4),
                                              mask_blur=3.0, only_mouth=True, wav2lip_batch_size=32, device="cpu"))
    assert isinstance(stage, Wav2LipStage) and stage.checkpoint_path.name == "wav2lip_gan.pth"
    assert stage.pads == (1, 2, 3, 4) and stage.batch_size == 32 and stage.mask.only_mouth and stage.mask.blur_px == 3.0
    with pytest.raises(OptionError):
        Wav2LipStage(model=object(), batch_size=0)
    with pytest.raises(SystemExit):
        from sadtalker_ext.cli.main import build_parser
        build_parser().parse_args(["generate", "--image", "a.png", "--video", "b.mp4", "--audio", "c.wav", "--out", "o.mp4"])


# -- restoration --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def astronaut_landmarks(astronaut):
    from sadtalker_ext.face.landmarks import detect_faces
    return detect_faces(astronaut)[0].points[:, :2]


def test_five_points_order(astronaut_landmarks):
    p = five_points(astronaut_landmarks)
    assert p.shape == (5, 2)
    assert p[0, 0] < p[2, 0] < p[1, 0] and p[3, 0] < p[2, 0] < p[4, 0]  # left/right around the nose
    assert max(p[0, 1], p[1, 1]) < p[2, 1] < min(p[3, 1], p[4, 1])  # eyes, nose, mouth from top to bottom


def test_face_restorer_aligns_and_pastes_back(astronaut, astronaut_landmarks):
    seen = []

    def identity(face):
        seen.append(face)
        return face.copy()

    r = FaceRestorer(identity)
    out = r(astronaut, landmarks=astronaut_landmarks)
    aligned = seen[0]
    assert aligned.shape == (512, 512, 3)
    # the aligned face puts the five points on the FFHQ template: eyes at y ~240, mouth at ~371
    ap = five_points(astronaut_landmarks)
    m, _ = cv2.estimateAffinePartial2D(ap, r.template, method=cv2.LMEDS)
    warped = ap @ m[:, :2].T + m[:, 2]
    assert np.abs(warped - r.template)[:2].max() < 6 and np.abs(warped - r.template).max() < 20
    x0, y0 = astronaut_landmarks.min(0).astype(int)
    x1, y1 = astronaut_landmarks.max(0).astype(int)
    face_diff = np.abs(out[y0:y1, x0:x1].astype(np.int16) - astronaut[y0:y1, x0:x1]).mean()
    assert face_diff < 3.0  # identity restoration: only resampling error
    assert np.array_equal(out[-60:], astronaut[-60:])  # far below the face: untouched

    grey = FaceRestorer(lambda face: np.full_like(face, 128))
    g = grey(astronaut, landmarks=astronaut_landmarks)
    cy, cx = int(ap[2, 1]), int(ap[2, 0])
    assert np.abs(g[cy, cx].astype(int) - 128).max() <= 1  # the nose is replaced
    assert np.array_equal(g[-60:], astronaut[-60:])
    from skimage import data
    coffee = data.coffee()
    assert np.array_equal(grey(coffee), coffee)  # no face: unchanged


def test_load_restorer_error_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("SADTALKER_CHECKPOINTS", raising=False)
    with pytest.raises(OptionError, match="--restore"):
        load_restorer("gfpgan2")
    with pytest.raises(OptionError, match="fidelity"):
        load_restorer("codeformer", fidelity=1.5)
    with pytest.raises(CheckpointError, match="GFPGANv1.4.pth"):
        load_restorer("gfpgan", checkpoints=str(tmp_path))
    ckpt = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": {"toRGB.0.weight": torch.zeros(3, 8, 1, 1)}}, ckpt)
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as if not installed
    with pytest.raises(DependencyError, match="pip install spandrel"):
        load_restorer("gfpgan", checkpoints=str(tmp_path))


def _fake_spandrel(arch_id, model):
    """A stand-in for the spandrel API used by load_restorer (canonicalize + ModelLoader)."""
    mod = types.ModuleType("spandrel")
    mod.canonicalize_state_dict = lambda sd: sd.get("params_ema", sd)

    class Loader:
        def load_from_state_dict(self, sd):
            assert "toRGB.0.weight" in sd
            return types.SimpleNamespace(model=model, architecture=types.SimpleNamespace(id=arch_id))
    mod.ModelLoader = Loader
    return mod


def test_load_restorer_through_spandrel_api(tmp_path, monkeypatch, astronaut, astronaut_landmarks):
    monkeypatch.delenv("SADTALKER_CHECKPOINTS", raising=False)
    torch.save({"params_ema": {"toRGB.0.weight": torch.zeros(3, 8, 1, 1)}}, tmp_path / "GFPGANv1.4.pth")
    torch.save({"params_ema": {"toRGB.0.weight": torch.zeros(3, 8, 1, 1)}}, tmp_path / "codeformer.pth")
    calls = []

    class GfpganLike(torch.nn.Module):  # the [-1, 1] in / out convention, identity
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, return_rgb=True, weight=None):
            calls.append((float(x.min()), float(x.max()), return_rgb, weight))
            return (x + self.p, None)

    monkeypatch.setitem(sys.modules, "spandrel", _fake_spandrel("ESRGAN", GfpganLike()))
    with pytest.raises(CheckpointError, match="is a ESRGAN model"):
        load_restorer("gfpgan", checkpoints=str(tmp_path))
    monkeypatch.setitem(sys.modules, "spandrel", _fake_spandrel("GFPGAN", GfpganLike()))
    r = load_restorer("gfpgan", checkpoints=str(tmp_path))
    out = r(astronaut, landmarks=astronaut_landmarks)
    lo, hi, return_rgb, _ = calls[-1]
    assert -1.0 <= lo < -0.5 and 0.5 < hi <= 1.0 and return_rgb is False
    x0, y0 = astronaut_landmarks.min(0).astype(int)
    x1, y1 = astronaut_landmarks.max(0).astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(np.int16) - astronaut[y0:y1, x0:x1]).mean() < 3.0
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)
    with pytest.raises(DependencyError, match="spandrel_extra_arches"):
        load_restorer("codeformer", checkpoints=str(tmp_path))
    extra = types.ModuleType("spandrel_extra_arches")
    extra.install = lambda: None
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", extra)
    monkeypatch.setitem(sys.modules, "spandrel", _fake_spandrel("CodeFormer", GfpganLike()))
    load_restorer("codeformer", checkpoints=str(tmp_path), fidelity=0.7)(astronaut, landmarks=astronaut_landmarks)
    assert calls[-1][3] == pytest.approx(0.7)
