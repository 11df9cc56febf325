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
