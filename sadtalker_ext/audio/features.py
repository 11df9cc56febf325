"""Acoustic features per video frame: loudness envelope and formant-based lip shape cues.

Used by the lite engine when no phoneme timings are available, and by the lip-sync measurements.
All functions take float32 mono audio at 16 kHz (an array, or a file-backed
:class:`~sadtalker_ext.audio.decode.SpooledSamples`: only ``len()`` and contiguous slices are used) and
return one value per video frame (25 fps: 640 samples per frame), analysed over a 50 ms window centred
on the frame's centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000


#: Frames analysed at a time: the [frames, window] working arrays stay ~10 MB whatever the audio's length.
BLOCK_FRAMES = 1500


def _frame_windows(x16: np.ndarray, frames: np.ndarray, fps: float, win: int) -> np.ndarray:
    """[len(frames), win] float32 windows centred on those frames' centres (zeros beyond the audio)."""
    hop = RATE / fps
    starts = ((frames + 0.5) * hop).astype(np.int64) - win // 2
    if len(starts) == 0:
        return np.zeros((0, win), np.float32)
    lo, hi = int(starts[0]), int(starts[-1]) + win
    seg = np.zeros(hi - lo, np.float32)
    a, b = max(lo, 0), min(hi, len(x16))
    if b > a:
        seg[a - lo:b - lo] = x16[a:b]
    return seg[(starts - lo)[:, None] + np.arange(win)[None, :]]


def _blocks(num_frames: int):
    for f0 in range(0, num_frames, BLOCK_FRAMES):
        yield np.arange(f0, min(num_frames, f0 + BLOCK_FRAMES))


def loudness_envelope(x16: np.ndarray, num_frames: int, fps: float = 25.0) -> np.ndarray:
    """RMS level in dBFS per frame, float32 [T] (silence is about -100 dB)."""
    out = np.empty(num_frames, np.float32)
    for frames in _blocks(num_frames):
        w = _frame_windows(x16, frames, fps, int(0.05 * RATE))
        rms = np.sqrt(np.mean(w.astype(np.float64) ** 2, axis=1))
        out[frames] = 20.0 * np.log10(rms + 1e-5)
    return out


@dataclass(frozen=True)
class Formants:
    """F1 and F2 estimates in Hz per frame (float32 [T]); 0 where the frame is unvoiced/silent."""

    f1: np.ndarray
    f2: np.ndarray


def _lpc_windows(x16: np.ndarray, frames: np.ndarray, fps: float, win: int) -> np.ndarray:
    w = _frame_windows(x16, frames, fps, win).astype(np.float64)
    w = w * np.hamming(win)[None, :]
    # pre-emphasis to flatten the spectral tilt before LPC
    w[:, 1:] -= 0.63 * w[:, :-1]
    return w


def formants(x16: np.ndarray, num_frames: int, fps: float = 25.0, order: int = 12) -> Formants:
    """Linear-prediction formant estimates: autocorrelation LPC (Levinson via
    ``scipy.linalg.solve_toeplitz``), formants = angles of the LPC polynomial's roots with bandwidth
    below 500 Hz, as in the classic textbook method (Rabiner & Schafer, ch. 8).

    F1 correlates with jaw opening, F2 with lip spreading (high) vs rounding (low). Frames are
    analysed in blocks of BLOCK_FRAMES (two passes: energy, then LPC of the voiced frames).
    """
    from scipy.linalg import solve_toeplitz

    win = int(0.03 * RATE)
    energy = np.empty(num_frames, np.float64)
    for frames in _blocks(num_frames):
        energy[frames] = np.mean(_lpc_windows(x16, frames, fps, win) ** 2, axis=1)
    f1 = np.zeros(num_frames, np.float32)
    f2 = np.zeros(num_frames, np.float32)
    voiced = energy > max(1e-7, np.percentile(energy, 20) * 2.0) if num_frames else energy > 0
    for frames in _blocks(num_frames):
        if not voiced[frames].any():
            continue
        w = _lpc_windows(x16, frames, fps, win)
        for j in np.flatnonzero(voiced[frames]):
            i = frames[j]
            r = np.correlate(w[j], w[j], mode="full")[win - 1:win + order]
            if r[0] <= 0:
                continue
            r = r.copy()
            r[0] *= 1.0 + 1e-9  # white-noise correction keeps the Toeplitz system well conditioned
            try:
                coef = solve_toeplitz(r[:order], r[1:order + 1])
            except np.linalg.LinAlgError:  # singular frame: leave F1/F2 at 0 (unvoiced)
                continue
            a = np.concatenate([[1.0], -coef])
            roots = np.roots(a)
            roots = roots[np.imag(roots) > 0.01]
            if roots.size == 0:
                continue
            freqs = np.angle(roots) * RATE / (2 * np.pi)
            bw = -0.5 * RATE / np.pi * np.log(np.abs(roots) + 1e-12)
            cand = np.sort(freqs[(freqs > 200) & (freqs < 4000) & (bw < 500)])
            if cand.size >= 2:
                f1[i], f2[i] = cand[0], cand[1]
            elif cand.size == 1:
                f1[i] = cand[0]
    return Formants(f1=f1, f2=f2)
