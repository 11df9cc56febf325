"""End-to-end goldens from the official code (tests/goldens/make_*_e2e.py ran the official SadTalker and
Wav2Lip code on synthetic weights): our stage / engine reproduce their frames from the same inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.engines.base import FrameChunk, RunContext
from sadtalker_ext.options import GenerateOptions

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent / "goldens"


def _npz(name):
    g = np.load(HERE / name)
    return g, json.loads(str(g["meta"]))


# -- Wav2Lip inference.py ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def w2l_golden():
    inputs, meta = _npz("wav2lip_e2e_inputs.npz")
    boxes, _ = _npz("wav2lip_e2e_boxes.npz")
    frames, _ = _npz("wav2lip_e2e_frames.npz")
    return inputs, boxes["box_region"], frames, meta


def _w2l_input_frames(base, n):
    """The generator's input frames (make_wav2lip_e2e.input_frames, from the stored base picture)."""
    noise = np.random.default_rng(7).integers(-30, 31, (100, 256, 256, 3))
    return np.clip(base[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)[:n]


class Recording(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.mels, self.faces = [], []

    def forward(self, mel, face):
        self.mels.extend(mel[:, 0].numpy().copy())
        self.faces.extend(face.permute(0, 2, 3, 1).numpy().copy())
        return self.net(mel, face)


@pytest.mark.parametrize("batch_size,chunk", [(16, 25), (7, 10)])
def test_wav2lip_stage_reproduces_official_inference(w2l_golden, synthetic_checkpoints, arctic_wav,
                                                      batch_size, chunk):
    from sadtalker_ext.lipsync.stage import Wav2LipStage
    from sadtalker_ext.lipsync.wav2lip_net import load_wav2lip
    inputs, gold_boxes, gold_frames, meta = w2l_golden
    n = meta["frames_out"]
    top, bottom, left, right = meta["box_top_bottom_left_right"]
    frames = _w2l_input_frames(inputs["base"], n)
    net = Recording(load_wav2lip(synthetic_checkpoints / "wav2lip_gan.pth"))
    stage = Wav2LipStage(model=net, batch_size=batch_size, box=(top, bottom, left, right), paste="box")
    chunks = (FrameChunk(start=s, frames=frames[s:s + chunk].copy()) for s in range(0, n, chunk))
    ctx = RunContext(audio=load_audio(arctic_wav), options=GenerateOptions(), num_frames=n, fps=25)
    out = np.concatenate([c.frames for c in stage(chunks, ctx)])
    assert out.shape == (n, 256, 256, 3)
    # what the network received: the official mel chunk of every frame, the official face batch
    mel_err = np.abs(np.stack(net.mels) - inputs["mel_chunks"]).max()
    face_err = np.abs(np.stack(net.faces)[inputs["net_face_indices"]] - inputs["net_face"]).max()
    # the frames: outside the box the input, inside the official paste
    outside = np.ones((256, 256), bool)
    outside[top:bottom, left:right] = False
    np.testing.assert_array_equal(out[:, outside], frames[:, outside])
    diff = np.abs(out[:, top:bottom, left:right].astype(np.int16) - gold_boxes)
    print(f"batch {batch_size}: mel max err {mel_err:.2e}, face input max err {face_err:.2e}, box pixels: "
          f"max |diff| {diff.max()}, {np.mean(diff > 0) * 100:.4f}% differ")
    assert mel_err <= 1e-5 and face_err <= 1e-6
    assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3
    np.testing.assert_array_equal(out[gold_frames["frame_indices"]][:, outside], gold_frames["frames"][:, outside])


# -- SadTalker get_facerender_data + make_animation -------------------------------------------------
def _st_golden():
    w, meta = _npz("sadtalker_e2e_windows.npz")
    frames = {}
    for part in ("a", "b"):
        g, _ = _npz(f"sadtalker_e2e_frames_{part}.npz")
        frames.update({int(i): p for i, p in zip(g["frame_indices"], g["prediction"])})
    return w, frames, meta


class _Stub:
    """Stand-in networks that record the MappingNet input; audio2coeff returns the golden coefficients."""

    def __init__(self, coeffs, nc):
        self.coeffs, self.nc, self.windows = coeffs, nc, []

    def kp_detector(self, image):
        return torch.zeros(1, 15, 3)

    def mapping(self, semantics):
        self.windows.append(semantics.numpy().copy())
        b = semantics.shape[0]
        z = torch.zeros(b, 66)
        return {"yaw": z, "pitch": z, "roll": z, "t": torch.zeros(b, 3), "exp": torch.zeros(b, 45)}

    def generate(self, indiv_mels, ref, ratio, pose_style, generator=None, ref_pose_coeffs=None):
        return self.coeffs.copy()

    def prepare_source(self, image, kp_source):
        pass

    def render(self, kp_driving):
        return torch.zeros(kp_driving.shape[0], 3, 256, 256)


def _speech(arctic_wav, frames):
    from sadtalker_ext.audio.decode import AudioClip
    a = load_audio(arctic_wav)
    return AudioClip(a.samples[:frames * 640].copy(), a.sample_rate)


@pytest.mark.parametrize("setting", ["crop", "crop_still", "full"])
def test_sadtalker_windows_equal_get_facerender_data(monkeypatch, arctic_wav, setting):
    import threading

    from sadtalker_ext.engines import sadtalker as st
    w, _, meta = _st_golden()
    cfg = meta["settings"][setting]
    nc = 73 if cfg["preprocess"] == "full" else 70
    coeffs, first = w["coeffs"], w["first_coeff"][0]
    stub = _Stub(coeffs, nc)
    models = st._Models(checkpoint=Path("stub.safetensors"), mapping_file=Path("stub.pth.tar"),
                        device=torch.device("cpu"), dtype=torch.float32, audio2coeff=stub, recon=None,
                        kp_detector=stub.kp_detector, mapping=stub.mapping, renderer=stub,
                        lock=threading.Lock(), render_size=256)
    monkeypatch.setattr(st.SadTalkerEngine, "_models", lambda self, options: models)
    monkeypatch.setattr(st.SadTalkerEngine, "_coeffs_of", lambda self, m, pics, lms: np.repeat(first[None], len(pics), 0))
    eng = st.SadTalkerEngine()
    opts = GenerateOptions(engine="sadtalker", size=256, preprocess=cfg["preprocess"], batch_size=3, chunk_size=25,
                           expression_scale=cfg["expression_scale"], still=cfg["still"]).validate()
    src = eng.prepare(np.ascontiguousarray(w["source_picture"]), opts)
    t = len(coeffs)
    ctx = RunContext(audio=_speech(arctic_wav, t), options=opts, num_frames=t)
    list(eng.frames(src, eng.motion(src, ctx), ctx))
    np.testing.assert_allclose(stub.windows[0], w[f"{setting}_source_semantics"], rtol=1e-6, atol=1e-6)
    got = np.concatenate(stub.windows[1:])
    want = w[f"{setting}_target_semantics"]
    assert got.shape == want.shape == (t, nc, 27)
    err = np.abs(got - want).max()
    print(f"{setting}: max |window - official| {err:.2e}")
    assert err <= 1e-5 * max(1.0, float(np.abs(want).max()))


@pytest.fixture(scope="module")
def sadtalker_run(synthetic_checkpoints, arctic_wav):
    """Our engine on the golden's inputs (real networks, synthetic weights): source and motion."""
    from sadtalker_ext.engines import sadtalker as st
    w, frames, meta = _st_golden()
    first = w["first_coeff"][0]
    eng = st.SadTalkerEngine(checkpoints=str(synthetic_checkpoints))
    orig = st.SadTalkerEngine._coeffs_of
    st.SadTalkerEngine._coeffs_of = lambda self, m, pics, lms: np.repeat(first[None], len(pics), 0)
    try:
        opts = GenerateOptions(engine="sadtalker", size=256, preprocess="resize", batch_size=4,
                               checkpoints=str(synthetic_checkpoints), device="cpu").validate()
        src = eng.prepare(np.ascontiguousarray(w["source_picture"]), opts)
    finally:
        st.SadTalkerEngine._coeffs_of = orig
    a2c = src.models.audio2coeff
    coeffs = w["coeffs"]
    t = len(coeffs)
    a2c.generate = lambda *a, **k: coeffs.copy()  # the golden's coefficient sequence as the motion
    try:
        ctx = RunContext(audio=_speech(arctic_wav, t), options=opts, num_frames=t)
        motion = eng.motion(src, ctx)
    finally:
        del a2c.generate
    return eng, src, motion, frames


@pytest.mark.parametrize("renderer", ["fast", "plain"])
def test_sadtalker_engine_reproduces_make_animation(sadtalker_run, synthetic_checkpoints, renderer):
    """Stage by stage against the official code: the source picture as the network gets it, the keypoints, then
    frames. Frame 0 is also compared with the official run at batch size 1 (sadtalker_e2e_batch1.npz), the
    batch size we render it at here, within the golden tolerance. The batch-4 golden frames are compared within
    the golden tolerance plus the official code's own batch-size spread: the official frame 0 at batch 1 vs
    batch 4 (MappingNet's batched convs move the keypoints by 2.6e-6, the generator turns that into 1.24e-4)."""
    from conftest import golden_tol

    from sadtalker_ext.engines.sadtalker import source_tensor
    from sadtalker_ext.render.facevid2vid.adaptive import AdaptiveRenderer, PlainRenderer
    from sadtalker_ext.render.facevid2vid.checkpoint import load_generator
    eng, src, motion, frames = sadtalker_run
    b1, _ = _npz("sadtalker_e2e_batch1.npz")
    img = source_tensor(src.picture)
    np.testing.assert_array_equal(img.numpy(), b1["source_image"])  # official img_as_float32 scaling, bit for bit
    kp0 = eng._driving_keypoints(src, motion.coeffs, 0, 1)
    kp_err = max(np.abs(src.kp_source.numpy() - b1["kp_source_batch1"]).max(),
                 np.abs(kp0.numpy() - b1["kp_driving_batch1"]).max())
    spread = float(np.abs(b1["prediction_frame0"] - frames[0]).max())  # official batch 1 vs official batch 4
    if renderer == "fast":
        r = src.models.renderer
        assert isinstance(r, AdaptiveRenderer)  # the engine's renderer on the CPU: its fast path here
        r = r.paths["fast"]
        with src.models.lock:
            r.prepare_source(img, src.kp_source)
            r._sadtalker_owner = None
    else:
        r = PlainRenderer(load_generator(synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors"),
                           torch.device("cpu"), torch.float32)
        r.prepare_source(img, src.kp_source)
    with src.models.lock:
        got0 = r.render(kp0)[0].numpy()
    err_b1 = float(np.abs(got0 - b1["prediction_frame0"]).max())
    print(f"{renderer}: keypoints vs official batch 1 {kp_err:.2e}; frame 0 vs official batch 1 {err_b1:.2e} "
          f"(tol {golden_tol(got0):.2e}); official batch-size spread {spread:.2e}")
    errs = {}
    for f, want in sorted(frames.items()):
        kp = kp0 if f == 0 else eng._driving_keypoints(src, motion.coeffs, f, f + 1)
        with src.models.lock:
            got = got0 if f == 0 else r.render(kp)[0].numpy()
        errs[f] = (float(np.abs(got - want).max()), golden_tol(want) + spread)
        print(f"{renderer} renderer, frame {f}: max |ours - official batch 4| {errs[f][0]:.2e} (tol {errs[f][1]:.2e})")
    # the reference README's acceptance bound (1e-4 + 1e-5 max|golden|): 1e-6 held on the earlier machines
    # (AVX-512 with AMX); an AVX-512 CPU without AMX gives 4.05e-6 (other oneDNN kernels)
    assert kp_err <= min(golden_tol(b1["kp_source_batch1"]), golden_tol(b1["kp_driving_batch1"]))
    assert err_b1 <= golden_tol(b1["prediction_frame0"])
    assert 1e-5 < spread < 5e-4  # the stored official numbers are what they were measured to be
    assert all(e <= t for e, t in errs.values()), errs
