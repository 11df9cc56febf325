"""Regenerate tests/goldens/wav2lip_e2e_*.npz by running the official Wav2Lip ``inference.py``.

Rudrabha/Wav2Lip at 5c90fa9b4a2c2a37d0b4ebf7633ac41534eb9941 is imported from a checkout (nothing
copied) and its ``main()`` runs as ``python inference.py --checkpoint_path wav2lip_gan.pth --face
face.mp4 --audio arctic_a0007.wav --box 45 130 85 170 --wav2lip_batch_size 16`` with the synthetic
weights of ``shared/reference/synth_ckpt.py``. Its mel chunking (``mel_idx_multiplier = 80/fps``,
the last-chunk rule), ``datagen``'s masked/reference batches, the model and the paste of each
predicted crop all run as written. Only its I/O is replaced, around it:

* ``cv2.VideoCapture`` hands out the input frames below (BGR, 25 fps) instead of decoding a file;
* ``cv2.VideoWriter`` keeps every frame ``out.write`` receives (the full-resolution frames before
  encoding) instead of writing an AVI; ``subprocess.call`` (the ffmpeg mux) is not run;
* librosa >= 0.10 takes ``librosa.filters.mel``'s ``sr`` and ``n_fft`` by keyword only; the call in
  ``audio.py`` passes them by position, so the function is wrapped to accept that (same values).
  librosa >= 0.9.2 centres the STFT with zero padding, as our mel code and the reference goldens do.

Input frames: ``base`` (astronaut() resized to 256 x 256 with PIL bicubic) plus per-frame noise
``default_rng(7).integers(-30, 31, (100, 256, 256, 3))``, clipped to uint8 (RGB; handed to the
official code as BGR). The audio is the 4.0 s ARCTIC a0007 (97 mel chunks -> 97 output frames).

Stored (each file < 2 MB): the mel chunks, the network inputs of frames 0, 47 and 96, the output's
box region of every frame (outside the box the official frame is the input frame, checked here), and
three whole output frames.

Usage::

    /work/scratch/official-venv/bin/python tests/goldens/make_wav2lip_e2e.py \\
        --wav2lip /path/to/Wav2Lip-checkout --checkpoints /path/to/synthetic-ckpts
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COMMIT = "5c90fa9b4a2c2a37d0b4ebf7633ac41534eb9941"
BOX = (45, 130, 85, 170)  # top, bottom, left, right (Wav2Lip --box order)
BATCH = 16
NUM_INPUT_FRAMES = 100
KEPT_INPUTS = (0, 47, 96)
KEPT_FRAMES = (0, 48, 96)


def input_frames() -> np.ndarray:
    """uint8 RGB ``[100, 256, 256, 3]`` (see the module docstring)."""
    from PIL import Image
    from skimage import data
    base = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256), Image.BICUBIC)).astype(np.int16)
    noise = np.random.default_rng(7).integers(-30, 31, (NUM_INPUT_FRAMES, 256, 256, 3))
    return np.clip(base[None] + noise, 0, 255).astype(np.uint8), base.astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wav2lip", required=True, type=Path, help=f"Wav2Lip checkout at {COMMIT}")
    ap.add_argument("--checkpoints", required=True, type=Path, help="synth_ckpt.py output folder")
    ap.add_argument("--audio", type=Path, default=HERE.parents[1] / "sadtalker_ext" / "assets" / "arctic_a0007.wav")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()

    import cv2
    import librosa.filters
    import torch

    torch.set_num_threads(1)
    frames_rgb, base = input_frames()
    tmp = Path(tempfile.mkdtemp(prefix="wav2lipe2e"))
    face = tmp / "face.mp4"
    face.write_bytes(b"")  # inference.py checks that the file exists; the frames come from the fake capture

    class Capture:
        def __init__(self, path):
            self.i = 0

        def get(self, prop):
            assert prop == cv2.CAP_PROP_FPS
            return 25.0

        def read(self):
            if self.i >= len(frames_rgb):
                return False, None
            f = np.ascontiguousarray(frames_rgb[self.i][:, :, ::-1])  # BGR, as cv2 decodes
            self.i += 1
            return True, f

        def release(self):
            pass

    written = []

    class Writer:
        def __init__(self, *a, **k):
            pass

        def write(self, f):
            written.append(np.array(f, copy=True))

        def release(self):
            pass

    seen = {"mel": [], "img": []}
    mel_fn = librosa.filters.mel

    def mel_compat(*a, **k):  # librosa >= 0.10: sr and n_fft are keyword-only
        if a:
            k.update(dict(zip(("sr", "n_fft"), a)))
        return mel_fn(**k)

    librosa.filters.mel = mel_compat
    sys.argv = ["inference.py", "--checkpoint_path", str(args.checkpoints / "wav2lip_gan.pth"),
                "--face", str(face), "--audio", str(args.audio), "--box", *map(str, BOX),
                "--wav2lip_batch_size", str(BATCH), "--outfile", str(tmp / "result.mp4")]
    cwd = os.getcwd()
    os.chdir(tmp)
    sys.path.insert(0, str(args.wav2lip))
    try:
        import inference
        inference.cv2.VideoCapture = Capture
        inference.cv2.VideoWriter = Writer
        inference.subprocess.call = lambda *a, **k: 0
        original_model = inference.load_model

        def load_model(path):
            model = original_model(path)
            forward = model.forward

            def recording(mel, face):
                seen["mel"].extend(mel[:, 0].numpy().copy())
                seen["img"].extend(face.permute(0, 2, 3, 1).numpy().copy())
                return forward(mel, face)
            model.forward = recording
            return model

        inference.load_model = load_model
        inference.main()
    finally:
        os.chdir(cwd)

    out = np.stack(written)[:, :, :, ::-1]  # back to RGB
    n = len(out)
    top, bottom, left, right = BOX
    outside = np.ones((256, 256), bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(out[:, outside], frames_rgb[:n][:, outside]), "the official paste changed pixels outside the box"
    mel = np.stack(seen["mel"]).astype(np.float32)
    img = np.stack(seen["img"]).astype(np.float32)
    assert len(mel) == len(img) == n
    meta = {
        "official": f"Rudrabha/Wav2Lip@{COMMIT} inference.main() with --box {' '.join(map(str, BOX))} "
                    f"--wav2lip_batch_size {BATCH}",
        "weights": "shared/reference/synth_ckpt.py rule (wav2lip_gan.pth)",
        "inputs": "frames: see input_frames() (base stored); audio: ARCTIC a0007 4.0 s, 16 kHz",
        "box_top_bottom_left_right": list(BOX), "frames_out": n, "fps": 25.0,
        "kept_inputs": list(KEPT_INPUTS), "kept_frames": list(KEPT_FRAMES),
        "notes": "output frames RGB uint8 (the official BGR frames channel-reversed); outside the box they "
                 "equal the input frames (asserted when generated); mel_chunks [n,80,16] and net_face "
                 "[k,96,96,6] (BGR, masked|reference, [0,1]) as the network received them",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "librosa": __import__("librosa").__version__, "cv2": cv2.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "wav2lip_e2e_inputs.npz", meta=json.dumps(meta), base=base,
                        mel_chunks=mel, net_face=img[list(KEPT_INPUTS)], net_face_indices=np.array(KEPT_INPUTS))
    np.savez_compressed(args.out / "wav2lip_e2e_boxes.npz", meta=json.dumps(meta),
                        box_region=out[:, top:bottom, left:right])
    np.savez_compressed(args.out / "wav2lip_e2e_frames.npz", meta=json.dumps(meta),
                        frame_indices=np.array(KEPT_FRAMES), frames=out[list(KEPT_FRAMES)])
    for p in sorted(args.out.glob("wav2lip_e2e_*.npz")):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
