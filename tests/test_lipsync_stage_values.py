"""Values and contracts of the Wav2Lip stage (``sadtalker_ext.lipsync.stage``) that the golden tests do
not reach: the network input of a known picture, box clipping, the short-clip mel padding (against
``audio.mel.wav2lip_mel_chunks``, the whole-clip helper that follows the official ``inference.py``), the
option checks' exact bounds and messages, checkpoint lookup, the debug images of one chosen frame, what a
landmark-aware restorer receives, and the chunk's landmarks passing through.

The network is a stand-in module that returns its reference input (channels 3-5, BGR): every value it
produces is then known here without the code under test.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sadtalker_ext.audio.decode import load_audio  # noqa: E402
from sadtalker_ext.audio.mel import melspectrogram, wav2lip_mel_chunks  # noqa: E402
from sadtalker_ext.errors import CheckpointError, NoFaceError, OptionError, OutputError  # noqa: E402
from sadtalker_ext.frames import FrameChunk, RunContext  # noqa: E402
from sadtalker_ext.lipsync import restore as R  # noqa: E402
from sadtalker_ext.lipsync import stage as S  # noqa: E402
from sadtalker_ext.models.cache import MODELS  # noqa: E402
from sadtalker_ext.options import GenerateOptions  # noqa: E402


class ReferenceNet(torch.nn.Module):
    """forward(mel [B,1,80,16], face [B,6,96,96]) -> the unmasked reference half, [B,3,96,96] in [0, 1]."""

    def forward(self, mel, face):
        assert mel.shape[1:] == (1, 80, 16) and face.shape[1:] == (6, 96, 96)
        return face[:, 3:]


@pytest.fixture(scope="module")
def face(astronaut):
    from sadtalker_ext.face.landmarks import detect_faces
    return detect_faces(astronaut)[0].points[:, :2].astype(np.float32)


@pytest.fixture(scope="module")
def clip(arctic_wav):
    return load_audio(arctic_wav)


def _run(stage, astronaut, face, clip, n=4, landmarks=True):
    frames = np.stack([astronaut] * n)
    lms = np.stack([face] * n) if landmarks else None
    ctx = RunContext(audio=clip, options=GenerateOptions(), num_frames=n, fps=25)
    chunks = [FrameChunk(start=0, frames=frames[:2], landmarks=None if lms is None else lms[:2]),
              FrameChunk(start=2, frames=frames[2:], landmarks=None if lms is None else lms[2:])]
    return list(stage(iter(chunks), ctx)), chunks, ctx


# ---------------------------------------------------------------- pure helpers

def test_network_input_of_a_flat_colour_is_bgr_with_the_lower_half_of_the_masked_copy_zeroed():
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[10:50, 20:70] = (10, 20, 30)  # RGB
    x = S._network_input(frame, (20, 10, 70, 50))
    assert x.dtype == np.uint8 and x.shape == (96, 96, 6)
    np.testing.assert_array_equal(x[:48, :, :3], np.broadcast_to([30, 20, 10], (48, 96, 3)))
    np.testing.assert_array_equal(x[48:, :, :3], 0)
    np.testing.assert_array_equal(x[:, :, 3:], np.broadcast_to([30, 20, 10], (96, 96, 3)))


def test_clip_keeps_the_box_inside_the_frame():
    assert S._clip((-5, -3, 50, 40), (30, 45, 3)) == (0, 0, 45, 30)
    assert S._clip((4, 6, 10, 12), (30, 45)) == (4, 6, 10, 12)
    for box in ((0, 0, 1, 10), (0, 29, 10, 40), (50, 0, 60, 10)):  # under 2 pixels inside
        with pytest.raises(NoFaceError):
            S._clip(box, (30, 45, 3))


def test_short_clip_mel_windows_are_the_official_padded_chunks():
    wav = np.random.default_rng(1).standard_normal(1000).astype(np.float32) * 0.1  # 6 mel columns < 16
    mw = S.MelWindows(wav, 25.0)
    want = wav2lip_mel_chunks(melspectrogram(wav), 25.0, 6)
    np.testing.assert_allclose(mw.windows([0, 1, 5]), want[[0, 1, 5]], atol=1e-6)
    assert want[0][:, -1].max() == -4.0  # padded at the end with -max_abs_value


def test_mel_windows_refuse_a_bad_fps_with_its_value():
    with pytest.raises(OptionError, match=r"^fps must be a positive number, got 0\.0\.$"):
        S.MelWindows(np.zeros(1600, np.float32), 0)


def test_stage_option_bounds():
    S.Wav2LipStage(model=ReferenceNet(), batch_size=1024)  # the documented upper end
    with pytest.raises(OptionError, match="1..1024, got 1025"):
        S.Wav2LipStage(model=ReferenceNet(), batch_size=1025)
    S.Wav2LipStage(model=ReferenceNet(), box=(0, 10, 5, 6))
    for box in ((0, 10, 5, 5), (10, 10, 0, 5)):  # left == right, top == bottom: no pixels
        with pytest.raises(OptionError, match="top < bottom and left < right"):
            S.Wav2LipStage(model=ReferenceNet(), box=box)


def test_checkpoint_lookup_starts_in_the_given_folder_and_prefers_the_gan_weights(tmp_path):
    (tmp_path / "wav2lip.pth").write_bytes(b"x")
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    assert S.find_wav2lip_checkpoint(checkpoints=str(tmp_path)) == tmp_path / "wav2lip_gan.pth"


def test_missing_checkpoint_names_the_folder_searched(tmp_path):
    with pytest.raises(CheckpointError) as err:
        S.lipsync_stage_for(GenerateOptions(lipsync="wav2lip", checkpoints=str(tmp_path)))
    assert str(tmp_path) in str(err.value)


def test_lipsync_stage_for_builds_and_loads_the_stage_with_the_options(synthetic_checkpoints, monkeypatch):
    MODELS.release()  # load() must build the network from the checkpoint here
    real = S.resolve_dtype
    # as on a CUDA device (this machine may have none): fp16 is the network's reduced precision
    monkeypatch.setattr(S, "resolve_dtype", lambda prec, dev, supported: real(prec, "cuda", supported))
    made = []

    def fake_restorer(name, **kw):
        made.append(name)
        return lambda img: img

    monkeypatch.setattr(R, "find_restorer_file", lambda *a, **k: None)
    monkeypatch.setattr(R, "load_restorer", fake_restorer)
    o = GenerateOptions(lipsync="wav2lip", checkpoints=str(synthetic_checkpoints), pads=[1, 12, 3, 4],
                        precision="fp16", restore="gfpgan", wav2lip_batch_size=7)
    st = S.lipsync_stage_for(o, device="cpu")
    assert st.pads == (1, 12, 3, 4) and st.batch_size == 7 and st.half is True
    assert st.checkpoint_path == synthetic_checkpoints / "wav2lip_gan.pth"
    assert isinstance(st._model, torch.nn.Module)
    assert made == ["gfpgan"] and MODELS.kinds().get("restorer") == 1  # cached under its kind
    MODELS.release()


# ---------------------------------------------------------------- running the stage

def test_box_paste_is_the_official_bilinear_resize_of_the_prediction(astronaut, face, clip):
    st = S.Wav2LipStage(model=ReferenceNet(), box=(150, 330, 160, 350), paste="box", batch_size=3)
    out, chunks, ctx = _run(st, astronaut, face, clip, landmarks=False)
    x0, y0, x1, y1 = 160, 150, 350, 330
    crop = cv2.resize(astronaut[y0:y1, x0:x1], (96, 96), interpolation=cv2.INTER_LINEAR)
    pred = crop.astype(np.float32) / np.float32(255.0)  # the reference half, back in RGB
    want = cv2.resize((pred * np.float32(255.0)).astype(np.uint8), (x1 - x0, y1 - y0),
                      interpolation=cv2.INTER_LINEAR)
    for c in out:
        for f in c.frames:
            np.testing.assert_array_equal(f[y0:y1, x0:x1], want)
            np.testing.assert_array_equal(f[:y0], astronaut[:y0])
    assert ctx.info["lipsync"]["refined"] == 4 and ctx.info["lipsync"]["frames"] == 4


def test_output_chunks_keep_start_length_and_landmarks(astronaut, face, clip):
    out, chunks, ctx = _run(S.Wav2LipStage(model=ReferenceNet(), batch_size=3), astronaut, face, clip)
    assert [c.start for c in out] == [0, 2] and [len(c) for c in out] == [2, 2]
    for o, c in zip(out, chunks):
        assert o.landmarks is c.landmarks
    assert ctx.info["lipsync"] == {"frames": 4, "refined": 4, "no_face": 0, "batch_size": 3, "checkpoint": None}


def test_a_landmark_aware_restorer_gets_the_box_local_float32_landmarks(astronaut, face, clip):
    seen = []

    class Restorer:
        accepts_landmarks = True

        def __call__(self, img, landmarks):
            seen.append(landmarks)
            return img

    st = S.Wav2LipStage(model=ReferenceNet(), restore=Restorer(), batch_size=2)
    out, chunks, ctx = _run(st, astronaut, face, clip, n=2)
    from sadtalker_ext.lipsync.compositing import face_box
    x0, y0, x1, y1 = S._clip(face_box(face, astronaut.shape, (0, 10, 0, 0)), astronaut.shape)
    assert len(seen) == 2
    for lm in seen:
        assert lm is not None and lm.dtype == np.float32
        np.testing.assert_allclose(lm, face - np.array([x0, y0], np.float32), atol=1e-4)


def test_debug_images_of_the_chosen_frame_only(astronaut, face, clip, tmp_path):
    st = S.Wav2LipStage(model=ReferenceNet(), debug_dir=tmp_path, debug_frame=2, batch_size=4)
    _run(st, astronaut, face, clip)
    names = sorted(p.name for p in tmp_path.iterdir())
    want = sorted(f"frame00002_{k}.png" for k in ("frame", "generated", "mask", "composite", "overlay",
                                                   "crop_frame", "crop_generated", "net_masked",
                                                   "net_reference", "net_output"))
    assert names == want
    mask = cv2.imread(str(tmp_path / "frame00002_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == astronaut.shape[:2] and mask.max() == 255 and mask[0, 0] == 0
    net_in = cv2.imread(str(tmp_path / "frame00002_net_masked.png"))
    assert net_in.shape == (96, 96, 3) and net_in[48:].max() == 0


def test_no_debug_folder_writes_nothing(astronaut, face, clip, tmp_path, monkeypatch):
    writes = []
    monkeypatch.setattr(S, "write_debug_images", lambda *a, **k: writes.append(a) or [])
    out, _, _ = _run(S.Wav2LipStage(model=ReferenceNet(), batch_size=4), astronaut, face, clip)
    assert writes == [] and len(out) == 2


def test_unwritable_debug_image_is_a_one_line_output_error(astronaut, face, clip, tmp_path, monkeypatch):
    real = cv2.imwrite
    monkeypatch.setattr(cv2, "imwrite", lambda path, img, *a: False if "_net_" in path else real(path, img, *a))
    st = S.Wav2LipStage(model=ReferenceNet(), debug_dir=tmp_path, batch_size=4)
    with pytest.raises(OutputError, match=r"cannot write debug image .*frame00000_net_masked\.png; check the "):
        _run(st, astronaut, face, clip)
