"""What the networks receive: stand-in networks record their inputs, and every frame's input is
compared with the official one, computed here in closed form or by an independent implementation
(never by the production helpers).

Official facts used (Rudrabha/Wav2Lip ``inference.py`` @5c90fa9, OpenTalker/SadTalker
``src/generate_facerender_batch.py`` / ``src/facerender/animate.py`` @cd4c046):

* Wav2Lip mel chunk of video frame ``i`` (its index in the clip): columns
  ``int(i * 80/fps) .. +16``; the first chunk that would run past the end is the last 16 columns
  and ends the list (so the clip has that many frames).
* Wav2Lip face input: the box crop resized to 96x96 with ``cv2.resize``'s default (bilinear), in the
  BGR order ``cv2`` reads frames in, divided by 255; channels 0-2 the crop with rows 48..95 zeroed,
  channels 3-5 the unmasked crop. The prediction is BGR too.
* SadTalker: the source image reaches the KPDetector (and the generator) as RGB float in [0, 1],
  ``[1, 3, S, S]``; the MappingNet source window is the 70 (73 for ``full``) source coefficients
  repeated 27 times; frame ``f``'s target window is rows ``clip(f-13 .. f+13, 0, T-1)`` of the
  coefficients after ``[:, :64] *= expression_scale``, the crop parameters appended (``full``) and
  ``[:, 64:]`` replaced by the source's (still), transposed to ``[C, 27]``.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.engines.base import FrameChunk, RunContext
from sadtalker_ext.options import GenerateOptions

torch = pytest.importorskip("torch")

FPS = 25.0
BATCH_SIZES = list(range(1, 34)) + [48, 64, 71, 72, 73, 100, 1024]


# -- independent references -----------------------------------------------------------------------
def reference_mel(wav16: np.ndarray) -> np.ndarray:
    """Wav2Lip's ``audio.melspectrogram`` written from its hparams with librosa (not our mel code):
    pre-emphasis 0.97, |STFT| (n_fft 800, hop 200, Hann 800, centred, zero padding), Slaney mel
    80 bands 55..7600 Hz, 20 log10(max(1e-5, .)) - 20, then clip(8 (S + 100) / 100 - 4, -4, 4)."""
    import librosa
    y = np.append(wav16[0], wav16[1:] - 0.97 * wav16[:-1]).astype(np.float64)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="constant"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * (s + 100) / 100 - 4, -4, 4)


def official_mel_chunks(mel: np.ndarray, fps: float) -> list:
    """The ``while 1`` loop of Wav2Lip ``inference.py`` (mel_idx_multiplier = 80/fps)."""
    chunks, i, mult, n = [], 0, 80.0 / fps, mel.shape[1]
    while True:
        s = int(i * mult)
        if s + 16 > n:
            chunks.append(mel[:, n - 16:])
            return chunks
        chunks.append(mel[:, s:s + 16])
        i += 1


@pytest.fixture(scope="module")
def speech3(arctic_wav) -> AudioClip:
    """3 s of ARCTIC a0007 (0.5 .. 3.5 s), 16 kHz."""
    full = load_audio(arctic_wav)
    return AudioClip(full.samples[8000:56000].copy(), full.sample_rate, "a0007[0.5:3.5]")


def test_reference_mel_matches_the_official_golden(reference_dir):
    """The test's own mel implementation reproduces the official golden (so it can be the reference)."""
    g = np.load(reference_dir / "goldens" / "mel_sadtalker.npz")
    assert np.max(np.abs(reference_mel(g["wav"].astype(np.float64)) - g["mel"])) <= 1e-6


# -- Wav2Lip ----------------------------------------------------------------------------------------
class RecordingWav2Lip(torch.nn.Module):
    """Records (mel, face) of every forward; predicts its reference channels (BGR) back."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.mels, self.faces, self.batches = [], [], []

    def forward(self, mel, face):
        assert mel.shape[1:] == (1, 80, 16) and face.shape[1:] == (6, 96, 96)
        self.batches.append(int(face.shape[0]))
        self.mels.extend(mel[:, 0].detach().numpy().copy())
        self.faces.extend(face.detach().permute(0, 2, 3, 1).numpy().copy())
        return face[:, 3:] + self.p


def _pattern_frames(n: int, size: int = 160):
    """n distinct frames: the astronaut with per-frame noise; its mediapipe landmarks (fixed)."""
    from skimage import data

    from sadtalker_ext.face.landmarks import detect_faces
    base = cv2.resize(data.astronaut()[20:300, 110:390], (size, size), interpolation=cv2.INTER_AREA)
    lm = detect_faces(base)[0].points[:, :2].astype(np.float32)
    rng = np.random.default_rng(5)
    frames = np.clip(base[None].astype(np.int16) + rng.integers(-40, 41, (n, size, size, 3)), 0, 255)
    return frames.astype(np.uint8), lm


@pytest.fixture(scope="module")
def pattern(speech3):
    mel = reference_mel(speech3.samples.astype(np.float64))
    expected = official_mel_chunks(mel, FPS)
    frames, lm = _pattern_frames(len(expected) + 3)
    return frames, lm, expected


def _box(lm, shape, pads=(0, 10, 0, 0)):
    """Landmark extent + Wav2Lip pads (top, bottom, left, right), clipped like ``face_detect``."""
    top, bottom, left, right = pads
    h, w = shape[:2]
    x0 = max(0, math.floor(float(lm[:, 0].min())) - left)
    y0 = max(0, math.floor(float(lm[:, 1].min())) - top)
    x1 = min(w, math.ceil(float(lm[:, 0].max())) + right)
    y1 = min(h, math.ceil(float(lm[:, 1].max())) + bottom)
    return x0, y0, x1, y1


def _run_stage(frames, lm, clip, batch_size, chunk=10, **kw):
    from sadtalker_ext.lipsync.stage import Wav2LipStage
    net = RecordingWav2Lip()
    stage = Wav2LipStage(model=net, batch_size=batch_size, **kw)
    n = len(frames)
    chunks = (FrameChunk(start=s, frames=frames[s:s + chunk].copy(),
                         landmarks=np.repeat(lm[None], min(chunk, n - s), axis=0))
              for s in range(0, n, chunk))
    ctx = RunContext(audio=clip, options=GenerateOptions(), num_frames=n, fps=FPS)
    out = np.concatenate([c.frames for c in stage(chunks, ctx)])
    return net, out


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_wav2lip_gets_each_frames_official_mel_window(pattern, speech3, batch_size):
    frames, lm, expected = pattern
    net, _ = _run_stage(frames, lm, speech3, batch_size)
    n = len(frames)
    assert len(net.mels) == n
    assert net.batches == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    for i, got in enumerate(net.mels):
        want = expected[min(i, len(expected) - 1)]  # frames past the official list: its last chunk
        err = np.max(np.abs(got - want))
        assert err <= 2e-5, f"batch {batch_size}: frame {i} got a mel window {err:.3g} from its own"


@pytest.mark.parametrize("batch_size", [1, 7, 16, 1024])
def test_wav2lip_face_input_is_official(pattern, speech3, batch_size):
    frames, lm, expected = pattern
    net, _ = _run_stage(frames, lm, speech3, batch_size)
    x0, y0, x1, y1 = _box(lm, frames.shape[1:])
    for i, got in enumerate(net.faces):
        crop = cv2.resize(frames[i][y0:y1, x0:x1], (96, 96))  # the official default interpolation
        bgr = crop[:, :, ::-1].astype(np.float32) / 255.0
        masked = bgr.copy()
        masked[48:] = 0
        np.testing.assert_allclose(got[:, :, 3:], bgr, atol=1e-6, err_msg=f"frame {i}: reference channels")
        np.testing.assert_allclose(got[:, :, :3], masked, atol=1e-6, err_msg=f"frame {i}: masked channels")


def test_wav2lip_prediction_is_read_as_bgr(pattern, speech3):
    """The stand-in predicts its BGR reference: pasted back as BGR the box shows the frame again
    (up to two resamplings); read as RGB its red and blue would swap."""
    frames, lm, _ = pattern
    _, out = _run_stage(frames[:20], lm, speech3, 8, color_match=False)
    x0, y0, x1, y1 = _box(lm, frames.shape[1:])
    region = (slice(None), slice(y0 + (y1 - y0) // 2, y1 - 4), slice(x0 + 8, x1 - 8))
    ref = frames[:20][region].astype(np.float32)
    got = out[region].astype(np.float32)
    right = np.abs(got - ref).mean()
    swapped = np.abs(got - ref[..., ::-1]).mean()
    print(f"mean |diff| of the mouth region: {right:.2f} as BGR, {swapped:.2f} channel-swapped")
    assert right < 12 and swapped > 2 * right


def test_wav2lip_windows_at_a_fractional_frame_rate(speech3):
    fps = 30000 / 1001
    mel = reference_mel(speech3.samples.astype(np.float64))
    expected = official_mel_chunks(mel, fps)
    frames, lm = _pattern_frames(len(expected), size=128)
    from sadtalker_ext.lipsync.stage import Wav2LipStage
    net = RecordingWav2Lip()
    stage = Wav2LipStage(model=net, batch_size=6)
    chunks = (FrameChunk(start=s, frames=frames[s:s + 9].copy(),
                         landmarks=np.repeat(lm[None], min(9, len(frames) - s), axis=0))
              for s in range(0, len(frames), 9))
    ctx = RunContext(audio=speech3, options=GenerateOptions(), num_frames=len(frames), fps=fps)
    list(stage(chunks, ctx))
    assert len(net.mels) == len(expected)
    for i, (got, want) in enumerate(zip(net.mels, expected)):
        assert np.max(np.abs(got - want)) <= 2e-5, f"frame {i}"


# -- SadTalker --------------------------------------------------------------------------------------
class Recorder:
    """Stand-ins for the SadTalker networks; every input is kept as numpy."""

    def __init__(self, raw_coeffs: np.ndarray, nc: int):
        self.raw = raw_coeffs
        self.nc = nc
        self.kp_inputs, self.mapping_inputs, self.source_images, self.rendered = [], [], [], []
        self.lock = threading.Lock()

    def kp_detector(self, image):
        self.kp_inputs.append(image.detach().cpu().numpy().copy())
        return torch.zeros(1, 15, 3)

    def mapping(self, semantics):
        assert semantics.shape[1:] == (self.nc, 27)
        self.mapping_inputs.append(semantics.detach().cpu().numpy().copy())
        b = semantics.shape[0]
        z = torch.zeros(b, 66)
        return {"yaw": z, "pitch": z, "roll": z, "t": torch.zeros(b, 3), "exp": torch.zeros(b, 45)}

    # audio2coeff
    def generate(self, indiv_mels, ref, ratio, pose_style, generator=None, ref_pose_coeffs=None):
        assert len(indiv_mels) == len(self.raw)
        return self.raw.copy()

    # renderer
    def prepare_source(self, image, kp_source):
        self.source_images.append(image.detach().cpu().numpy().copy())

    def render(self, kp_driving):
        self.rendered.append(int(kp_driving.shape[0]))
        return torch.zeros(kp_driving.shape[0], 3, 256, 256)


FIRST = np.concatenate([np.linspace(-1, 1, 64), [0.1, -0.2, 0.05, 0.3, -0.1, 0.2],
                        [0.45, 120.0, 110.0]]).astype(np.float32)


def _raw(t: int) -> np.ndarray:
    """Coefficients that name their frame and column: 100 * frame + column / 100."""
    return (100.0 * np.arange(t)[:, None] + np.arange(70)[None, :] / 100.0).astype(np.float32)


def _sadtalker(monkeypatch, t, preprocess="resize", **opts):
    from sadtalker_ext.engines import sadtalker as st
    nc = 73 if "full" in preprocess else 70
    rec = Recorder(_raw(t), nc)
    models = st._Models(checkpoint=Path("stand-in.safetensors"), mapping_file=Path("mapping.pth.tar"),
                        device=torch.device("cpu"), dtype=torch.float32, audio2coeff=rec, recon=None,
                        kp_detector=rec.kp_detector, mapping=rec.mapping, renderer=rec, lock=rec.lock,
                        render_size=256)
    monkeypatch.setattr(st.SadTalkerEngine, "_models", lambda self, options: models)
    monkeypatch.setattr(st.SadTalkerEngine, "_coeffs_of",
                        lambda self, m, pictures, landmarks: np.repeat(FIRST[None], len(pictures), 0))
    eng = st.SadTalkerEngine()
    options = GenerateOptions(engine="sadtalker", size=256, preprocess=preprocess, **opts).validate()
    return eng, rec, options


def _official_target_windows(raw, first, nc, expression_scale, still):
    g = raw[:, :70].astype(np.float64).copy()
    g[:, :64] *= expression_scale
    if nc == 73:
        g = np.concatenate([g, np.repeat(first[None, 70:73], len(g), 0)], axis=1)
    if still:
        g[:, 64:] = first[64:nc]
    t = len(g)
    out = []
    for f in range(t):
        index = [min(max(k, 0), t - 1) for k in range(f - 13, f + 14)]
        out.append(g[index].T)
    return np.array(out)


@pytest.fixture(scope="module")
def portrait256():
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[::2, ::2])


def test_kp_detector_and_renderer_get_the_rgb_source_in_0_1(monkeypatch, portrait256, speech3):
    eng, rec, opts = _sadtalker(monkeypatch, 8)
    src = eng.prepare(portrait256, opts)
    want = (portrait256.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # RGB, CHW, [0, 1]
    assert len(rec.kp_inputs) == 1 and rec.kp_inputs[0].shape == (1, 3, 256, 256)
    np.testing.assert_allclose(rec.kp_inputs[0], want, atol=1e-7)
    np.testing.assert_allclose(rec.mapping_inputs[0], np.repeat(FIRST[None, :70, None], 27, 2), atol=0)
    clip = AudioClip(speech3.samples[:int(0.32 * 16000)].copy(), 16000)
    ctx = RunContext(audio=clip, options=opts, num_frames=8)
    list(eng.frames(src, eng.motion(src, ctx), ctx))
    assert len(rec.source_images) == 1
    np.testing.assert_allclose(rec.source_images[0], want, atol=1e-7)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 5, 7, 8, 16, 25, 32, 61, 64])
@pytest.mark.parametrize("preprocess,scale,still", [("resize", 1.0, False), ("resize", 0.4, True),
                                                    ("full", 1.7, False), ("full", 1.0, True)])
def test_mapping_net_gets_each_frames_official_window(monkeypatch, portrait256, speech3, batch_size,
                                                      preprocess, scale, still):
    t = 61  # more than two chunks, not a multiple of any batch size tried but 1 and 61
    eng, rec, opts = _sadtalker(monkeypatch, t, preprocess, batch_size=batch_size, chunk_size=25,
                                expression_scale=scale, still=still)
    src = eng.prepare(portrait256, opts)
    nc = 73 if preprocess == "full" else 70
    np.testing.assert_allclose(rec.mapping_inputs[0], np.repeat(FIRST[None, :nc, None], 27, 2), atol=0)
    clip = AudioClip(np.resize(speech3.samples, t * 640).copy(), 16000)
    ctx = RunContext(audio=clip, options=opts, num_frames=t)
    chunks = list(eng.frames(src, eng.motion(src, ctx), ctx))
    assert sum(len(c) for c in chunks) == t and [c.start for c in chunks] == [0, 25, 50]
    got = np.concatenate(rec.mapping_inputs[1:])
    assert [len(m) for m in rec.mapping_inputs[1:]] == rec.rendered
    assert rec.rendered == [batch_size] * (t // batch_size) + ([t % batch_size] if t % batch_size else [])
    want = _official_target_windows(_raw(t), FIRST, nc, scale, still)
    assert got.shape == want.shape == (t, nc, 27)
    for f in range(t):
        np.testing.assert_allclose(got[f], want[f], rtol=1e-6, atol=1e-5,
                                   err_msg=f"batch {batch_size}: frame {f}'s MappingNet window")
