"""Voice activity detection with silero-vad's bundled ONNX model, run by onnxruntime (no torch).

Model: ``silero_vad/data/silero_vad.onnx`` from the ``silero-vad`` pip package (MIT licence),
installed with ``--no-deps`` so it does not pull torch. Inputs follow the package's own ONNX
wrapper: 512-sample windows at 16 kHz with the previous 64 samples prepended as context, a
recurrent state [2, 1, 128] and the sample rate. When the model or onnxruntime is missing, an
energy-based detector is used instead (``method`` tells which ran).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

VAD_RATE = 16000
WINDOW = 512        # samples at 16 kHz = 32 ms
CONTEXT = 64


@dataclass(frozen=True)
class VoiceActivity:
    """Speech probability per video frame.

    prob: float32 [T] in [0, 1]; speech: bool [T] (prob after hysteresis); method: "silero" or "energy".
    """

    prob: np.ndarray
    speech: np.ndarray
    method: str


@lru_cache(maxsize=1)
def _silero_session():
    try:
        import onnxruntime as ort
        from importlib.util import find_spec
        from pathlib import Path
        # the package's folder without running its __init__ (which imports torch: 2 s of start-up)
        spec = find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("silero_vad is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        if not path.is_file():
            raise FileNotFoundError(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except (ImportError, ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        log.warning("silero-vad unavailable (%s); using the energy detector", exc)
        return None


def _silero_window_probs(x16: np.ndarray) -> np.ndarray | None:
    sess = _silero_session()
    if sess is None:
        return None
    n = int(np.ceil(len(x16) / WINDOW)) if len(x16) else 0
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    sr = np.array(VAD_RATE, dtype=np.int64)
    probs = np.empty(n, np.float32)
    block = 1024  # windows read at a time: x16 may be file-backed (SpooledSamples), read by slices only
    for b in range(0, n, block):
        part = x16[b * WINDOW:(b + block) * WINDOW]
        for i in range(b, min(n, b + block)):  # the last window zero-padded
            chunk = part[(i - b) * WINDOW:(i - b + 1) * WINDOW]
            x = np.zeros((1, CONTEXT + WINDOW), np.float32)
            x[0, :CONTEXT] = context
            x[0, CONTEXT:CONTEXT + len(chunk)] = chunk
            out, state = sess.run(None, {"input": x, "state": state, "sr": sr})
            probs[i] = float(out.reshape(-1)[0])
            context = x[:, -CONTEXT:]
    return probs


def _energy_window_probs(x16: np.ndarray) -> np.ndarray:
    n = max(1, int(np.ceil(len(x16) / WINDOW)))
    rms = np.empty(n, np.float32)
    step = 4096  # windows per block: no whole-length temporaries
    for b in range(0, n, step):
        block = np.zeros((min(step, n - b) * WINDOW), np.float32)
        part = x16[b * WINDOW:(b + step) * WINDOW]
        block[:len(part)] = part
        rms[b:b + step] = np.sqrt(np.mean(block.reshape(-1, WINDOW) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms + 1e-9)
    floor = np.percentile(db, 10)
    return np.clip((db - floor - 10.0) / 10.0, 0.0, 1.0).astype(np.float32)


def detect_voice(x16: np.ndarray, num_frames: int, fps: float = 25.0, *,
                 on: float = 0.5, off: float = 0.35, method: str = "auto") -> VoiceActivity:
    """Speech probability for each video frame.

    x16: float32 [n] mono at 16 kHz: an array, or anything with ``len()``, contiguous slices and
    ``min()``/``max()`` (:class:`~sadtalker_ext.audio.decode.SpooledSamples`, read block by block).
    num_frames: T video frames at ``fps``.
    The window probabilities (32 ms) are averaged into each frame's time span, then a hysteresis
    (``on``/``off`` thresholds) and a 3-frame hangover give the boolean track.
    """
    probs = None
    used = "energy"
    peak = max(float(x16.max()), -float(x16.min())) if len(x16) else 0.0  # no |x| temporary
    if method in ("auto", "silero") and len(x16) > 0 and peak > 1e-4:
        probs = _silero_window_probs(x16)
        if probs is not None:
            used = "silero"
    if probs is None:
        probs = _energy_window_probs(x16) if peak > 1e-4 else \
            np.zeros(max(1, int(np.ceil(len(x16) / WINDOW))), np.float32)
    # each 32 ms window belongs to the video frame that holds its centre; a frame takes its max
    t_win = (np.arange(len(probs)) + 0.5) * WINDOW / VAD_RATE
    idx = np.minimum((t_win * fps).astype(np.int64), num_frames - 1)
    frame_prob = np.full(num_frames, -1.0, np.float32)
    np.maximum.at(frame_prob, idx, probs)
    if np.any(frame_prob < 0):  # frames with no window centre (only when fps > 31.25) take the nearest
        have = np.flatnonzero(frame_prob >= 0)
        miss = np.flatnonzero(frame_prob < 0)
        nearest = have[np.clip(np.searchsorted(have, miss), 0, len(have) - 1)]
        frame_prob[miss] = frame_prob[nearest]
    speech = np.zeros(num_frames, bool)
    active = False
    for f in range(num_frames):
        p = frame_prob[f]
        active = p >= on if not active else p >= off
        speech[f] = active
    # hangover: keep speech on for 3 frames after it ends (lips close after the last phone)
    hang = speech.copy()
    for k in range(1, 4):
        hang[k:] |= speech[:-k]
    return VoiceActivity(prob=frame_prob, speech=hang, method=used)
