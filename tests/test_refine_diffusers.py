"""The diffusers backend end to end on 8 frames with a tiny randomly initialised SD pipeline built
from configs offline (tokenizer from a vocabulary written here, CLIP text encoder, UNet, VAE,
scheduler), through the refinement stage in both modes, and loaded back from a diffusers folder."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from sadtalker_ext.errors import CheckpointError, OptionError  # noqa: E402
from sadtalker_ext.host.base import Img2ImgRequest, LocalHost  # noqa: E402
from sadtalker_ext.refine.backends import DiffusersBackend, HostBackend  # noqa: E402
from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule, RefineParams  # noqa: E402
from sadtalker_ext.refine.stage import RefineStage  # noqa: E402
from sadtalker_ext.refine.testing import TINY_NATIVE_SIZE, build_tiny_pipeline  # noqa: E402

from test_refine_stage import ctx_for, chunks_of, soft_masks, synthetic_landmarks  # noqa: E402

FPS = 25


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny pipeline saved as a diffusers folder (what --sd-checkpoint DIR loads)."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    pipe = build_tiny_pipeline(folder / "tok", seed=0)
    pipe.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def backend(tiny_dir):
    b = DiffusersBackend(tiny_dir, device="cpu")
    assert b.native_size() == TINY_NATIVE_SIZE
    return b


@pytest.fixture(scope="module")
def clip8(astronaut):
    base = astronaut[:320, 64:384]
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(8)])
    lms = np.stack([synthetic_landmarks(161 + 2 * i, 124) for i in range(8)])
    return frames, lms


class Counting:
    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, [], "counting"

    def native_size(self):
        return self.inner.native_size()

    def __call__(self, req):
        out = self.inner(req)
        self.calls.append((req, out))
        return out


def test_tokenizer_and_components_are_offline(tiny_dir):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(tiny_dir / "tokenizer"))
    ids = tok("the face and a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and tok.eos_token_id in ids


@pytest.mark.parametrize("mode", ["every", "keyframes"])
def test_stage_end_to_end_on_8_frames(backend, clip8, mode):
    frames, lms = clip8
    counting = Counting(backend)
    sched = KeyframeSchedule([Keyframe(frame=0, denoising_strength=0.6, steps=2, cfg_scale=5.0, seed=42,
                                       prompt="the face", mask_blur=4, padding=8), Keyframe(frame=7)],
                             mode=mode, batch_size=4).validate()
    stage = RefineStage(sched, counting)
    out_chunks = list(stage(chunks_of(frames, lms, 3), ctx_for(8)))
    out = np.concatenate([c.frames for c in out_chunks])
    assert out.shape == frames.shape and out.dtype == np.uint8
    # every: batches [0-3] [4-6] [7] (none straddles the keyframe at 7); keyframes: frames 0 and 7
    assert [r.frame_indices for r, _ in counting.calls] == \
        ([[0, 1, 2, 3], [4, 5, 6], [7]] if mode == "every" else [[0], [7]])
    regions = soft_masks(stage, frames, lms)
    for f_in, f_out, reg in zip(frames, out, regions):
        np.testing.assert_array_equal(f_out[reg.soft == 0], f_in[reg.soft == 0])
        assert np.abs(f_out[reg.soft >= 0.999].astype(int) - f_in[reg.soft >= 0.999]).mean() > 1.0
    for req, res in counting.calls:
        assert req.images.shape[1:] == (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3) and res.shape == req.images.shape


def test_same_seed_same_noise_and_determinism(backend):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3), dtype=np.uint8)
    req = Img2ImgRequest(images=np.stack([img, img, img]), mask=None, seeds=[5, 5, 6],
                         params=RefineParams(prompt="a face", denoising_strength=0.7, steps=4, cfg_scale=4.0, seed=5))
    out = backend(req)
    np.testing.assert_array_equal(out[0], out[1])          # same seed -> same initial noise -> same result
    assert np.abs(out[0].astype(int) - out[2]).mean() > 0.5
    again = backend(req)
    np.testing.assert_array_equal(out, again)              # repeatable
    masked = Img2ImgRequest(images=np.stack([img, img]),
                            mask=np.full((2, TINY_NATIVE_SIZE, TINY_NATIVE_SIZE), 255, np.uint8),
                            params=RefineParams(prompt="a face", denoising_strength=0.7, steps=4, seed=5, sampler="DDIM"))
    m_out = backend(masked)                                 # the inpaint pipeline, sharing the components
    assert m_out.shape == (2, TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3)
    np.testing.assert_array_equal(m_out[0], m_out[1])
    zero = Img2ImgRequest(images=img[None], params=RefineParams(denoising_strength=0.0))
    np.testing.assert_array_equal(backend(zero), img[None])
    tiny_strength = Img2ImgRequest(images=img[None], params=RefineParams(denoising_strength=0.05, steps=4, seed=1))
    assert backend(tiny_strength).shape == (1, TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3)  # steps raised to 20
    with pytest.raises(OptionError, match="sampler 'Restart'"):
        backend(Img2ImgRequest(images=img[None], params=RefineParams(sampler="Restart")))


def test_backend_plugs_into_local_host_and_checks_samplers(backend, clip8):
    host = LocalHost(output_dir="unused", img2img_backend=backend)
    stage = RefineStage(KeyframeSchedule([Keyframe(frame=0, steps=2, denoising_strength=0.5)], mode="every"),
                        HostBackend(host, native=TINY_NATIVE_SIZE))
    out = stage.preview(clip8[0][0], 0, FPS, landmarks=clip8[1][0])
    assert out.shape == clip8[0][0].shape
    with pytest.raises(OptionError, match="not available with the diffusers backend"):
        RefineStage(KeyframeSchedule([Keyframe(frame=3, sampler="Nope")]), backend)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        DiffusersBackend(tmp_path / "none.safetensors")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        DiffusersBackend(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without model_index.json"):
        DiffusersBackend(tmp_path / "empty")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    b = DiffusersBackend(garbage, device="cpu", allow_download=False)
    with pytest.raises(CheckpointError, match="cannot load the SD model garbage.safetensors") as ei:
        b.load()
    assert "\n" not in str(ei.value)


def test_make_backend_keeps_the_last_model(tiny_dir):
    from sadtalker_ext.refine.backends import make_backend
    a = make_backend(sd_checkpoint=tiny_dir, device="cpu")
    assert isinstance(a, DiffusersBackend) and make_backend(sd_checkpoint=str(tiny_dir), device="cpu") is a
    assert make_backend(sd_checkpoint=tiny_dir, device="cpu", precision="fp16") is not a   # another key
    assert make_backend(sd_checkpoint=tiny_dir, device="cpu") is not a                     # only the last is kept
