"""SadTalker audio side against the official goldens: mel front end, ExpNet (Audio2Exp.test),
PoseVAE (Audio2Pose.test with the recorded latents), the Audio2Coeff glue and MappingNet 70/73.

Every network is loaded through the public loaders from the synthetic official files.
"""
from __future__ import annotations

import random
import wave

import numpy as np
import pytest

from conftest import golden_tol
from sadtalker_ext.audio.mel import (audio_num_frames, crop_pad_audio, mel_filterbank,
                                     melspectrogram, prepare_sadtalker_audio,
                                     sadtalker_mel_windows, wav2lip_mel_chunks)
from sadtalker_ext.errors import AudioError, OptionError
from sadtalker_ext.motion.sadtalker.blink import random_blink_ratio

MEL_TOL = 1e-6


def _load(reference_dir, name):
    with np.load(reference_dir / "goldens" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _assert_close(ours, golden, name, tol=None):
    ours = np.asarray(ours)
    assert ours.shape == golden.shape, f"{name}: shape {ours.shape} vs {golden.shape}"
    tol = golden_tol(golden) if tol is None else tol
    diff = float(np.max(np.abs(ours.astype(np.float64) - golden.astype(np.float64))))
    assert diff <= tol, f"{name}: max|diff| {diff:.3g} > {tol:.3g}"
    return diff


# ------------------------------------------------------------------------------------------
# mel front end (numpy only)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mel_golden(reference_dir):
    return _load(reference_dir, "mel_sadtalker")


def _read_pcm16(path):
    with wave.open(str(path), "rb") as f:
        assert f.getsampwidth() == 2 and f.getnchannels() == 1
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2"), f.getframerate()


def test_mel_matches_golden_from_wav_file(arctic_wav, mel_golden):
    pcm, sr = _read_pcm16(arctic_wav)
    assert sr == 16000
    out = prepare_sadtalker_audio(pcm, sr)  # integer PCM is scaled like librosa.load
    np.testing.assert_array_equal(out.wav, mel_golden["wav_cropped"])
    assert out.num_frames == int(mel_golden["num_frames"]) == 100
    assert out.mel.dtype == np.float64 and out.indiv_mels.dtype == np.float32
    _assert_close(out.mel, mel_golden["mel"], "mel", MEL_TOL)
    _assert_close(out.indiv_mels, mel_golden["indiv_mels"], "indiv_mels", MEL_TOL)


def test_mel_pieces_match_golden(mel_golden):
    wav = mel_golden["wav"]
    assert audio_num_frames(len(wav)) == 100
    mel = melspectrogram(wav)
    _assert_close(mel, mel_golden["mel"], "mel", MEL_TOL)
    # the first two windows look back before the start and are clamped to column 0
    win = sadtalker_mel_windows(mel_golden["mel"], 100)
    np.testing.assert_array_equal(win, mel_golden["indiv_mels"])
    np.testing.assert_array_equal(
        win[0, :, :7], np.repeat(mel_golden["mel"][:, :1], 7, axis=1).astype(np.float32))
    assert mel_filterbank().dtype == np.float32 and mel_filterbank().shape == (80, 401)


def test_crop_pad_audio_lengths():
    wav = np.ones(1000, np.float32)
    assert crop_pad_audio(wav, 1).shape == (640,)
    padded = crop_pad_audio(wav, 3)
    assert padded.shape == (1920,) and padded[999] == 1 and padded[1000] == 0
    assert crop_pad_audio(wav, 3, fps=30).shape == (int(3 * 16000 / 30),)


def test_resampled_input_gives_nearly_the_same_features(mel_golden):
    soxr = pytest.importorskip("soxr")
    up = soxr.resample(mel_golden["wav"], 16000, 44100, quality="VHQ").astype(np.float32)
    out = prepare_sadtalker_audio(up, 44100)
    assert out.num_frames == 100 and out.mel.shape == (80, 321)
    diff = np.abs(out.mel - mel_golden["mel"])
    assert float(np.median(diff)) < 1e-4 and float(diff.mean()) < 5e-3


def test_wav2lip_chunks_match_wav2lip_golden(reference_dir, mel_golden):
    w2l = _load(reference_dir, "wav2lip")
    chunks = wav2lip_mel_chunks(mel_golden["mel"], fps=25)
    # official loop: 97 chunks for 321 columns, the last one is the final 16 columns
    assert chunks.shape == (97, 80, 16)
    np.testing.assert_array_equal(chunks[[10, 50], None], w2l["mel"].astype(np.float32))
    np.testing.assert_array_equal(chunks[-1], mel_golden["mel"][:, -16:].astype(np.float32))
    fixed = wav2lip_mel_chunks(mel_golden["mel"], fps=25, num_frames=100)
    assert fixed.shape == (100, 80, 16)
    np.testing.assert_array_equal(fixed[:97], chunks)
    np.testing.assert_array_equal(fixed[99], chunks[-1])
    short = wav2lip_mel_chunks(mel_golden["mel"][:, :5], num_frames=2)
    assert short.shape == (2, 80, 16) and np.all(short[:, :, 5:] == -4.0)


def test_audio_errors():
    with pytest.raises(AudioError):
        prepare_sadtalker_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError):
        prepare_sadtalker_audio(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(AudioError):
        prepare_sadtalker_audio(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(AudioError):
        prepare_sadtalker_audio(np.zeros(100, np.float32), 16000)  # < one video frame
    with pytest.raises(OptionError):
        prepare_sadtalker_audio(np.zeros(16000, np.float32), 16000, fps=0)


def test_blink_schedule_matches_official_with_seed_0(mel_golden):
    ratio = random_blink_ratio(100, random.Random(0))
    np.testing.assert_array_equal(ratio.astype(np.float32), mel_golden["ratio_gt"])
    assert not np.any(random_blink_ratio(20, random.Random(0)))


# ------------------------------------------------------------------------------------------
# networks (torch)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_mod():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return torch


@pytest.fixture(scope="module")
def sadtalker_file(torch_mod, synthetic_checkpoints):
    from sadtalker_ext.models.loading import SafetensorsCheckpoint
    return SafetensorsCheckpoint(synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors")


@pytest.fixture(scope="module")
def audio2coeff(sadtalker_file):
    from sadtalker_ext.motion.sadtalker import load_audio2coeff
    return load_audio2coeff(sadtalker_file)


@pytest.fixture(scope="module")
def exp_golden(reference_dir):
    return _load(reference_dir, "audio2exp")


@pytest.fixture(scope="module")
def pose_golden(reference_dir):
    return _load(reference_dir, "audio2pose")


@pytest.fixture(scope="module")
def pose_run(torch_mod, audio2coeff, pose_golden):
    """One Audio2Pose.test run on the golden inputs, recording the audio-encoder outputs."""
    from sadtalker_ext.motion.sadtalker import predict_pose, recorded_noise
    torch = torch_mod
    net = audio2coeff.pose_net
    chunks = []
    hook = net.audio_encoder.register_forward_hook(lambda m, i, o: chunks.append(o.clone()))
    try:
        with torch.no_grad():
            motion, pose = predict_pose(
                net, torch.from_numpy(pose_golden["indiv_mels"]),
                torch.from_numpy(pose_golden["ref"][:, 0, 64:70]),
                torch.from_numpy(pose_golden["class_id"]),
                noise_fn=recorded_noise(torch.from_numpy(pose_golden["z"])),
                num_frames=int(pose_golden["num_frames"]))
    finally:
        hook.remove()
    return {"pose_motion_pred": motion.numpy(), "pose_pred": pose.numpy(),
            "audio_emb_chunks": torch.stack(chunks).numpy()}


@pytest.fixture(scope="module")
def coeff_run(torch_mod, audio2coeff, reference_dir, exp_golden):
    """One Audio2Coeff.generate run on the golden inputs (the recorded latents, pose style 3)."""
    from sadtalker_ext.motion.sadtalker import recorded_noise
    g = _load(reference_dir, "audio2coeff")
    out = audio2coeff.generate(exp_golden["indiv_mels"][0], exp_golden["ref"][0],
                               exp_golden["ratio_gt"][0], int(g["class_id"][0]),
                               noise_fn=recorded_noise(torch_mod.from_numpy(g["z"])))
    return out, g


def test_audio2exp_matches_golden(coeff_run, exp_golden, audio2coeff, torch_mod):
    coeffs, _ = coeff_run  # generate() runs predict_expression in 10-frame chunks
    _assert_close(coeffs[None, :, :64], exp_golden["exp_coeff_pred"], "exp_coeff_pred")
    with torch_mod.no_grad():
        emb = audio2coeff.exp_net.encode_audio(
            torch_mod.from_numpy(exp_golden["indiv_mels"][0, :3]))
    _assert_close(emb.numpy(), exp_golden["audio_emb_first3"], "audio_emb_first3")


def test_audio2exp_chunking_and_ref_forms_agree(audio2coeff, exp_golden, torch_mod):
    from sadtalker_ext.motion.sadtalker import predict_expression
    torch = torch_mod
    mels = torch.from_numpy(exp_golden["indiv_mels"][:, :13])
    ratio = torch.from_numpy(exp_golden["ratio_gt"][:, :13])
    ref = torch.from_numpy(exp_golden["ref"][:, :13])
    with torch.no_grad():
        a = predict_expression(audio2coeff.exp_net, mels, ref, ratio)
        b = predict_expression(audio2coeff.exp_net, mels, ref[:, 0, :64], ratio, chunk=13)
        c = predict_expression(audio2coeff.exp_net, mels, ref, None)
    _assert_close(b.numpy(), a.numpy(), "exp chunk 13 vs 10")
    _assert_close(a.numpy(), exp_golden["exp_coeff_pred"][:, :13], "exp first 13 frames")
    # the blink ratio matters on frames where it is non-zero, and only there
    blink = exp_golden["ratio_gt"][0, :13, 0] > 0
    diff = np.abs(a.numpy() - c.numpy()).max(axis=-1)[0]
    assert np.all(diff[~blink] < 1e-6)
    if blink.any():
        assert np.all(diff[blink] > 1e-4)


@pytest.mark.parametrize("name", ["pose_motion_pred", "pose_pred", "audio_emb_chunks"])
def test_audio2pose_matches_golden(pose_run, pose_golden, name):
    _assert_close(pose_run[name], pose_golden[name], name)


def test_audio2pose_first_frame_is_reference(pose_run, pose_golden):
    assert np.all(pose_run["pose_motion_pred"][:, 0] == 0)
    np.testing.assert_array_equal(pose_run["pose_pred"][:, 0], pose_golden["ref"][:, 0, 64:70])


def test_audio2coeff_matches_golden(coeff_run):
    coeffs, g = coeff_run
    assert coeffs.dtype == np.float32
    _assert_close(coeffs, g["coeff_3dmm"], "coeff_3dmm")
    _assert_close(coeffs[:, :64], g["exp_coeff_pred"], "exp part")


def test_pose_noise_seed_is_deterministic(audio2coeff, pose_golden, torch_mod):
    from sadtalker_ext.motion.sadtalker import predict_pose
    torch = torch_mod
    mels = torch.from_numpy(pose_golden["indiv_mels"][:, :40])
    ref = torch.from_numpy(pose_golden["ref"][:, 0, 64:70])
    with torch.no_grad():
        a = predict_pose(audio2coeff.pose_net, mels, ref, 3, seed=7)[0]
        b = predict_pose(audio2coeff.pose_net, mels, ref, 3, seed=7)[0]
        c = predict_pose(audio2coeff.pose_net, mels, ref, 3, seed=8)[0]
        d = predict_pose(audio2coeff.pose_net, mels, ref, 3,
                         generator=torch.Generator().manual_seed(7))[0]
        e = predict_pose(audio2coeff.pose_net, mels, ref, 4, seed=7)[0]
    assert a.shape == (1, 40, 6)
    assert torch.equal(a, b) and torch.equal(a, d)
    assert float((a - c).abs().max()) > 1e-4
    assert float((a - e).abs().max()) > 1e-4  # the pose style changes the motion
    with pytest.raises(ValueError):
        predict_pose(audio2coeff.pose_net, mels, ref, 46, seed=0)


def test_short_audio_pose_and_coeffs(audio2coeff, pose_golden, exp_golden):
    """Fewer than 33 frames (where the official code fails) still gives one pose per frame."""
    t = 9
    out = audio2coeff.generate(exp_golden["indiv_mels"][0, :t], exp_golden["first_coeff"][0],
                               None, 0, seed=1)
    assert out.shape == (t, 70) and np.all(np.isfinite(out))
    one = audio2coeff.generate(exp_golden["indiv_mels"][0, :1], exp_golden["first_coeff"][0],
                               None, 0, seed=1)
    np.testing.assert_array_equal(one[0, 64:70], exp_golden["first_coeff"][0, 64:70])


def test_smoothing_and_reference_pose():
    from sadtalker_ext.motion.sadtalker import apply_reference_pose, smooth_pose
    rng = np.random.default_rng(0)
    track = rng.standard_normal((1, 30, 6)).astype(np.float32)
    smooth = smooth_pose(track, axis=1)
    assert smooth.dtype == np.float32 and smooth.shape == track.shape
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(track, axis=1)).mean()
    line = np.linspace(0, 1, 30, dtype=np.float32)[None, :, None].repeat(6, axis=2)
    np.testing.assert_allclose(smooth_pose(line, axis=1), line, atol=1e-6)  # order 2 keeps lines
    assert smooth_pose(track[:, :5], axis=1).shape == (1, 5, 6)
    coeffs = np.zeros((5, 70), np.float32)
    ref = np.arange(2 * 70, dtype=np.float32).reshape(2, 70)
    moved = apply_reference_pose(coeffs, ref)
    np.testing.assert_array_equal(moved[:, 64:70], np.array([0, 70, 0, 70, 0])[:, None]
                                  * np.ones((1, 6)))
    assert np.all(moved[:, :64] == 0)


# ------------------------------------------------------------------------------------------
# MappingNet
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mapping_golden(reference_dir):
    return _load(reference_dir, "mapping")


def test_semantic_windows_match_golden(mapping_golden):
    from sadtalker_ext.motion.sadtalker import semantic_windows, source_window
    g = mapping_golden
    win = semantic_windows(g["generated_3dmm"])
    assert win.shape == (100, 70, 27)
    np.testing.assert_array_equal(win[g["frame_indices"]], g["crop70_target_semantics"])
    np.testing.assert_array_equal(source_window(g["first_coeff"][0, :70]),
                                  g["crop70_source_semantics"])
    full = np.concatenate([g["generated_3dmm"], np.repeat(g["first_coeff"][:, 70:73], 100, 0)], 1)
    np.testing.assert_array_equal(semantic_windows(full)[g["frame_indices"]],
                                  g["full73_target_semantics"])


@pytest.mark.parametrize("variant,filename,coeff_nc", [
    ("crop70", "mapping_00229-model.pth.tar", 70), ("full73", "mapping_00109-model.pth.tar", 73)])
def test_mapping_matches_golden(torch_mod, synthetic_checkpoints, mapping_golden, variant,
                                filename, coeff_nc):
    from sadtalker_ext.motion.sadtalker import load_mapping
    net = load_mapping(synthetic_checkpoints / filename)
    assert net.coeff_nc == coeff_nc and not net.training
    g = mapping_golden
    with torch_mod.no_grad():
        for role, key in (("source", "source_semantics"), ("driving", "target_semantics")):
            out = net(torch_mod.from_numpy(g[f"{variant}_{key}"]))
            for head in ("yaw", "pitch", "roll", "t", "exp"):
                name = f"{variant}_{role}_{head}"
                _assert_close(out[head].numpy(), g[name], name)
