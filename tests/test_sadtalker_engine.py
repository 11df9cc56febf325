"""The SadTalker engine end to end with synthetic official checkpoints, and its preprocessing.

Content is noise (the checkpoints hold rule weights, see shared/reference/README.md); what is tested
is shapes, durations, streaming, determinism, option handling and the exact bookkeeping of the
coefficients. The face renderer costs seconds per 256 x 256 frame on a 2-core CPU, so the clips
are short: 10 frames for the CLI run, 2 x 4 frames for streaming/determinism, 2 frames in full
mode: 20 frames in all plus the one-off loading of the renderer (about 3 min for the whole file on
2 idle cores, about 8 min on 2 heavily shared ones).
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.errors import CheckpointError, OptionError
from sadtalker_ext.face import align3d
from sadtalker_ext.options import GenerateOptions

torch = pytest.importorskip("torch")

from sadtalker_ext.engines import get_engine, resolve_engine_name  # noqa: E402
from sadtalker_ext.engines.base import RunContext  # noqa: E402
from sadtalker_ext.engines.sadtalker import (MAPPING_CROP, MAPPING_FULL, SadTalkerEngine,  # noqa: E402
                                             SadTalkerMotion)
from sadtalker_ext.models import locate  # noqa: E402


@pytest.fixture(autouse=True)
def _threads(monkeypatch):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    monkeypatch.delenv(locate.ENV_VAR, raising=False)


def _clip(arctic_wav: Path, start: float, seconds: float) -> AudioClip:
    full = load_audio(arctic_wav)
    a = int(start * full.sample_rate)
    return AudioClip(samples=full.samples[a:a + int(round(seconds * full.sample_rate))].copy(),
                     sample_rate=full.sample_rate)


def _write_wav(path: Path, clip: AudioClip) -> Path:
    pcm = np.clip(clip.samples * 32767.0, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def _opts(ckpt_dir, **kw) -> GenerateOptions:
    base = dict(engine="sadtalker", size=256, checkpoints=str(ckpt_dir), seed=7, batch_size=2,
                chunk_size=2)
    base.update(kw)
    return GenerateOptions(**base).validate()


@pytest.fixture(scope="module")
def engine(synthetic_checkpoints):
    return SadTalkerEngine(checkpoints=str(synthetic_checkpoints))


@pytest.fixture(scope="module")
def crop_source(engine, synthetic_checkpoints, astronaut):
    return engine.prepare(astronaut, _opts(synthetic_checkpoints))


# ------------------------------------------------------------------------------------------------
# preprocessing geometry (numpy only)
# ------------------------------------------------------------------------------------------------

def test_scale_translation_fit_recovers_a_known_projection():
    pts3 = align3d.standard_five_points()
    s, t = 87.5, np.array([131.0, 97.0])
    pts2 = pts3[:, :2] * s + t
    t_fit, s_fit = align3d.fit_scale_translation(pts2, pts3)
    assert s_fit == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(t_fit, t, atol=1e-8)


def test_five_points_order_and_standard_face():
    lm = np.zeros((68, 2))
    lm[36], lm[39], lm[42], lm[45] = (10, 0), (20, 0), (40, 0), (50, 2)
    lm[30], lm[48], lm[54] = (30, 20), (18, 40), (42, 40)
    five = align3d.five_points(lm)
    np.testing.assert_allclose(five, [[15, 0], [45, 1], [30, 20], [18, 40], [42, 40]])
    std = align3d.standard_five_points()
    assert std.shape == (5, 3) and std[0, 0] < std[2, 0] < std[1, 0]  # eyes either side of the nose
    assert std[3, 1] < std[2, 1] < std[0, 1]  # y up: mouth below nose below eyes


def test_crop_boxes_and_recon_alignment_on_the_astronaut(astronaut):
    from sadtalker_ext.face.landmarks import find_face
    face = find_face(astronaut)
    lm = align3d.landmarks68(face.points)
    boxes = align3d.sadtalker_crop(lm, (512, 512))
    sq, ex = boxes.square, boxes.extended
    assert ex[0] <= sq[0] < sq[2] <= ex[2] and ex[1] <= sq[1] < sq[3] <= ex[3]
    assert 0.8 < (sq[2] - sq[0]) / (sq[3] - sq[1]) < 1.25  # the face square is (nearly) square
    for x, y in lm[[36, 45, 48, 54, 8]]:  # eyes, mouth corners, chin inside the square
        assert sq[0] < x < sq[2] and sq[1] < y < sq[3]
    x0, y0, x1, y1 = sq
    import cv2
    pic = cv2.resize(astronaut[y0:y1, x0:x1], (256, 256))
    lm_pic = (lm - [x0, y0]) * [256 / (x1 - x0), 256 / (y1 - y0)]
    rin = align3d.align_for_recon(pic, lm_pic)
    assert rin.image.shape == (224, 224, 3) and rin.image.dtype == np.uint8
    assert rin.crop_params.dtype == np.float32 and np.all(np.isfinite(rin.crop_params))
    # the standard face centre lands inside the 256 crop, the face fills a sane part of 224 px
    assert 0 < rin.crop_params[1] < 256 and 0 < rin.crop_params[2] < 256
    assert 0.5 < rin.crop_params[0] < 2.5
    assert rin.image.std() > 20  # real content, not padding


# ------------------------------------------------------------------------------------------------
# engine selection, options, missing files
# ------------------------------------------------------------------------------------------------

def test_ext_modes_are_sadtalker_only():
    GenerateOptions(engine="sadtalker", preprocess="extfull").validate()
    with pytest.raises(OptionError, match="sadtalker"):
        GenerateOptions(engine="lite", preprocess="extcrop").validate()


def test_auto_picks_sadtalker_only_when_its_files_are_present(synthetic_checkpoints, tmp_path):
    assert resolve_engine_name("auto", checkpoints=str(synthetic_checkpoints)) == "sadtalker"
    assert isinstance(get_engine("auto", checkpoints=str(synthetic_checkpoints)), SadTalkerEngine)
    if locate.engine_available("sadtalker", locate.search_dirs(None, existing_only=True)):
        pytest.skip("this machine has SadTalker files in its default folders")
    assert resolve_engine_name("auto", checkpoints=str(tmp_path)) == "lite"


def test_missing_mapping_file_is_named(synthetic_checkpoints, tmp_path, astronaut):
    if locate.find_file(MAPPING_FULL, locate.search_dirs(None, existing_only=True)):
        pytest.skip("this machine has the mapping file in its default folders")
    for name in ("SadTalker_V0.0.2_256.safetensors", MAPPING_CROP):
        os.symlink(synthetic_checkpoints / name, tmp_path / name)
    eng = SadTalkerEngine(checkpoints=str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        eng.prepare(astronaut, _opts(tmp_path, preprocess="full"))
    msg = str(err.value)
    assert MAPPING_FULL in msg and "download" in msg and "\n" not in msg


def test_checkpoint_choice_by_size(synthetic_checkpoints, tmp_path):
    only256 = tmp_path / "only256"
    only256.mkdir()
    os.symlink(synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors",
               only256 / "SadTalker_V0.0.2_256.safetensors")
    both = SadTalkerEngine(checkpoints=str(synthetic_checkpoints))
    assert both._checkpoint_for(512)[0].name == "SadTalker_V0.0.2_512.safetensors"
    assert both._checkpoint_for(256)[0].name == "SadTalker_V0.0.2_256.safetensors"
    path, render = SadTalkerEngine(checkpoints=str(only256))._checkpoint_for(512)
    assert path.name == "SadTalker_V0.0.2_256.safetensors" and render == 256  # up-scaled output
    if locate.find_file("SadTalker_V0.0.2_256.safetensors", locate.search_dirs(None, existing_only=True)):
        return
    with pytest.raises(CheckpointError, match="SadTalker_V0.0.2_256.safetensors"):
        SadTalkerEngine(checkpoints=str(tmp_path))._checkpoint_for(256)


def test_device_and_precision_choice(synthetic_checkpoints):
    eng = SadTalkerEngine(checkpoints=str(synthetic_checkpoints))
    dev, dtype = eng.resolve_device(_opts(synthetic_checkpoints, device="cpu", precision="fp16"))
    assert dev.type == "cpu" and dtype == torch.float32  # reduced precision is CUDA-only
    if torch.cuda.is_available():
        dev, dtype = eng.resolve_device(_opts(synthetic_checkpoints, device="cuda", precision="fp16"))
        assert dev.type == "cuda" and dtype == torch.float16
    else:
        with pytest.raises(OptionError, match="CUDA"):
            eng.resolve_device(_opts(synthetic_checkpoints, device="cuda"))


# ------------------------------------------------------------------------------------------------
# motion (cheap: no rendering)
# ------------------------------------------------------------------------------------------------

def _motion(engine, source, arctic_wav, seconds=1.0, **kw) -> SadTalkerMotion:
    clip = _clip(arctic_wav, 0.3, seconds)
    opts = _opts(Path(engine.checkpoints), **kw)
    ctx = RunContext(audio=clip, options=opts, num_frames=clip.num_frames(25))
    return engine.motion(source, ctx)


def test_motion_shapes_seed_still_and_expression_scale(engine, crop_source, arctic_wav):
    src = crop_source
    assert src.coeffs.shape == (73,) and src.picture.shape == (256, 256, 3)
    a = _motion(engine, src, arctic_wav)
    assert a.coeffs.shape == (25, 70) and a.coeffs.dtype == np.float32
    b = _motion(engine, src, arctic_wav)
    np.testing.assert_array_equal(a.coeffs, b.coeffs)
    c = _motion(engine, src, arctic_wav, seed=8)
    assert np.abs(a.coeffs[1:, 64:70] - c.coeffs[1:, 64:70]).max() > 1e-4  # PoseVAE noise
    still = _motion(engine, src, arctic_wav, still=True)
    np.testing.assert_array_equal(still.coeffs[:, 64:70], np.repeat(src.coeffs[None, 64:70], 25, 0))
    mute = _motion(engine, src, arctic_wav, expression_scale=0.0)
    assert np.all(mute.coeffs[:, :64] == 0)
    np.testing.assert_array_equal(mute.coeffs[:, 64:], a.coeffs[:, 64:])
    double = _motion(engine, src, arctic_wav, expression_scale=2.0)
    np.testing.assert_allclose(double.coeffs[:, :64], 2 * a.coeffs[:, :64], rtol=1e-6)


@pytest.fixture(scope="module")
def ref_video(tmp_path_factory, astronaut):
    """8 frames of the astronaut sliding right and down, H.264."""
    from sadtalker_ext.io.video_writer import VideoWriter
    path = tmp_path_factory.mktemp("ref") / "ref.mp4"
    with VideoWriter(path, (512, 512), 25) as w:
        for k in range(8):
            w.write(np.roll(astronaut, (3 * k, 4 * k), axis=(0, 1))[None])
        w.commit()
    return path


def test_reference_videos_drive_pose_and_blinks(engine, crop_source, arctic_wav, ref_video):
    ref = engine.video_coeffs(str(ref_video), crop_source.models, "crop", 25)
    assert ref.shape == (8, 73) and np.all(np.isfinite(ref))
    assert np.abs(ref[1:, 64:70] - ref[0, 64:70]).max() > 0  # the head moves in the video
    plain = _motion(engine, crop_source, arctic_wav)
    posed = _motion(engine, crop_source, arctic_wav, ref_pose=str(ref_video))
    tiled = np.concatenate([ref, ref, ref, ref])[:25, 64:70]
    np.testing.assert_allclose(posed.coeffs[:, 64:70],
                               plain.coeffs[:, 64:70] + (tiled - tiled[0]), atol=1e-5)
    np.testing.assert_array_equal(posed.coeffs[:, :64], plain.coeffs[:, :64])
    blink = _motion(engine, crop_source, arctic_wav, ref_eyeblink=str(ref_video))
    assert blink.info["blinks"] == "reference video"
    assert np.abs(blink.coeffs[:, :64] - plain.coeffs[:, :64]).max() > 1e-4
    np.testing.assert_array_equal(blink.coeffs[:, 64:], plain.coeffs[:, 64:])


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

def test_streaming_and_determinism(engine, crop_source, arctic_wav, monkeypatch):
    renderer = crop_source.models.renderer
    # bit-for-bit repeatable with the path pinned (an adaptive run may take either path per frame; they
    # differ by ~2e-5, tests/test_renderer_adaptive.py)
    monkeypatch.setattr(renderer, "pinned", "fast")
    calls = []
    original = type(renderer).render

    def counting(self, kp, *a, **k):
        calls.append(kp.shape[0])
        return original(self, kp, *a, **k)

    monkeypatch.setattr(type(renderer), "render", counting)
    clip = _clip(arctic_wav, 0.5, 0.16)  # 4 frames
    opts = _opts(engine.checkpoints, batch_size=1, chunk_size=2)
    ctx = RunContext(audio=clip, options=opts, num_frames=clip.num_frames(25))
    motion = engine.motion(crop_source, ctx)
    runs = []
    for run in range(2):
        calls.clear()
        chunks = []
        for chunk in engine.frames(crop_source, motion if run == 0 else engine.motion(crop_source, ctx),
                                   ctx):
            if not chunks:
                assert sum(calls) == 2  # the first chunk left before frames 2-3 were rendered
            chunks.append(chunk)
        assert [c.start for c in chunks] == [0, 2] and [len(c) for c in chunks] == [2, 2]
        assert sum(calls) == 4
        frames = np.concatenate([c.frames for c in chunks])
        assert frames.shape == (4, 256, 256, 3) and frames.dtype == np.uint8
        runs.append(frames)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].std() > 1 and np.abs(runs[0][0].astype(int) - runs[0][3]).max() > 0


def test_full_mode_pastes_back_into_the_image(engine, synthetic_checkpoints, astronaut, arctic_wav):
    opts = _opts(synthetic_checkpoints, preprocess="full", batch_size=2, chunk_size=25)
    src = engine.prepare(astronaut, opts)
    assert engine.output_size(src) == (512, 512) and src.num_coeffs == 73
    clip = _clip(arctic_wav, 0.5, 0.08)  # 2 frames
    ctx = RunContext(audio=clip, options=opts, num_frames=clip.num_frames(25))
    motion = engine.motion(src, ctx)
    assert motion.coeffs.shape == (2, 73)
    np.testing.assert_array_equal(motion.coeffs[:, 70:], np.repeat(src.coeffs[None, 70:], 2, 0))
    assert ctx.info["sadtalker"]["mapping"] == MAPPING_FULL
    chunks = list(engine.frames(src, motion, ctx))
    frames = np.concatenate([c.frames for c in chunks])
    assert frames.shape == (2, 512, 512, 3)
    x0, y0, x1, y1 = src.box
    outside = np.ones((512, 512), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(frames[:, outside], np.broadcast_to(astronaut[outside],
                                                                      (2,) + astronaut[outside].shape))
    inside = frames[:, y0 + 20:y1 - 20, x0 + 20:x1 - 20].astype(int)
    assert np.abs(inside - astronaut[y0 + 20:y1 - 20, x0 + 20:x1 - 20]).mean() > 5  # animated


def test_cli_generate_end_to_end(synthetic_checkpoints, astronaut, arctic_wav, tmp_path):
    """``generate --engine sadtalker`` writes a valid H.264 video of the audio's length."""
    from PIL import Image

    from sadtalker_ext.cli.main import main
    from sadtalker_ext.io.probe import probe
    img = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(img)
    clip = _clip(arctic_wav, 0.4, 0.4)  # 10 frames, rendered in batches of 4, 4, 2
    wav = _write_wav(tmp_path / "speech.wav", clip)
    out = tmp_path / "out.mp4"
    rc = main(["--quiet", "generate", "--image", str(img), "--audio", str(wav), "--out", str(out),
               "--engine", "sadtalker", "--checkpoints", str(synthetic_checkpoints), "--size", "256",
               "--batch-size", "4", "--seed", "3"])
    assert rc == 0 and out.is_file()
    info = probe(out)
    assert info.video_codec == "h264" and info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (256, 256)
    assert abs(info.num_frames - 0.4 * 25) <= 1
    assert info.audio_duration == pytest.approx(0.4, abs=0.05)
    assert not list(tmp_path.glob(".*.part*"))
