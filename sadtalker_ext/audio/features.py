"""Acoustic features per video frame: loudness envelope and formant-based lip shape cues.

Used by the lite engine when no phoneme timings are available, and by the lip-sync measurements.
All functions take float32 mono audio at 16 kHz and return one value per video frame (25 fps:
640 samples per frame), analysed over a 50 ms window centred on the frame's centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000


def _frame_windows(x16: np.ndarray, num_frames: int, fps: float, win: int) -> np.ndarray:
    """[T, win] windows centred on each frame centre (zero padded at the ends)."""
    hop = RATE / fps
    centres = ((np.arange(num_frames) + 0.5) * hop).astype(np.int64)
    pad = win
    xp = np.concatenate([np.zeros(pad, np.float32), x16.astype(np.float32), np.zeros(pad + win, np.float32)])
    starts = centres - win // 2 + pad
    idx = starts[:, None] + np.arange(win)[None, :]
    return xp[idx]


def loudness_envelope(x16: np.ndarray, num_frames: int, fps: float = 25.0) -> np.ndarray:
    """RMS level in dBFS per frame, float32 [T] (silence is about -100 dB)."""
    w = _frame_windows(x16, num_frames, fps, int(0.05 * RATE))
    rms = np.sqrt(np.mean(w.astype(np.float64) ** 2, axis=1))
    return (20.0 * np.log10(rms + 1e-5)).astype(np.float32)


@dataclass(frozen=True)
class Formants:
    """F1 and F2 estimates in Hz per frame (float32 [T]); 0 where the frame is unvoiced/silent."""

    f1: np.ndarray
    f2: np.ndarray


def formants(x16: np.ndarray, num_frames: int, fps: float = 25.0, order: int = 12) -> Formants:
    """Linear-prediction formant estimates: autocorrelation LPC (Levinson via
    ``scipy.linalg.solve_toeplitz``), formants = angles of the LPC polynomial's roots with bandwidth
    below 500 Hz, as in the classic textbook method (Rabiner & Schafer, ch. 8).

    F1 correlates with jaw opening, F2 with lip spreading (high) vs rounding (low).
    """
    from scipy.linalg import solve_toeplitz

    win = int(0.03 * RATE)
    w = _frame_windows(x16, num_frames, fps, win).astype(np.float64)
    w = w * np.hamming(win)[None, :]
    # pre-emphasis to flatten the spectral tilt before LPC
    w[:, 1:] -= 0.63 * w[:, :-1]
    energy = np.mean(w ** 2, axis=1)
    f1 = np.zeros(num_frames, np.float32)
    f2 = np.zeros(num_frames, np.float32)
    voiced = energy > max(1e-7, np.percentile(energy, 20) * 2.0)
    for i in np.flatnonzero(voiced):
        r = np.correlate(w[i], w[i], mode="full")[win - 1:win + order]
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
