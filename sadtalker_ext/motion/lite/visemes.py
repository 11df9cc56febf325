"""Viseme layer: mouth shape per video frame from phoneme timings or from acoustic features.

A viseme is described by three numbers per frame:
  open  in [0, 1.2]: jaw opening (1 = a wide "aa"),
  width in [-1, 1]: lip spreading (+, "ee") vs rounding (-, "oo"),
  press in [0, 1]: bilabial closure (p/b/m) that forces the lips together.
Phoneme timings may come from any source (forced alignment, TTS events); phonemes are ARPAbet
(CMUdict, stress digits ignored) or espeak/IPA-like symbols, mapped through ``VISEME_TABLE``.
Coarticulation: targets are blended over each frame's time span, then smoothed with a short
zero-phase Gaussian (anticipation and carry-over), except that closures keep their full depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ...audio.events import PhonemeEvent  # noqa: F401 - re-exported: the input of visemes_from_phonemes

# (open, width, press) per phoneme class; values follow the usual Disney/Preston-Blair viseme groups.
_GROUPS = {
    "sil": ((0.0, 0.0, 0.0), ["sil", "sp", "spn", "_", "", "pau", "SIL", "+BREATH+", "+NOISE+"]),
    "pbm": ((0.0, 0.0, 1.0), ["P", "B", "M", "p", "b", "m"]),
    "fv": ((0.12, 0.1, 0.4), ["F", "V", "f", "v"]),
    "th": ((0.2, 0.1, 0.0), ["TH", "DH", "T", "D", "N", "L", "θ", "ð", "t", "d", "n", "l", "t^", "d^", "n^", "l^"]),
    "sz": ((0.12, 0.5, 0.0), ["S", "Z", "s", "z", "ts", "dz", "s^", "z^"]),
    "sh": ((0.2, -0.4, 0.0), ["SH", "ZH", "CH", "JH", "S2", "Z2", "tS", "dZ", "ʃ", "ʒ", "tʃ", "dʒ", "S;", "Z;", "tS;",
                               "s.", "z.", "ts.", "tsh", "ts.h", "tsh;", "s;", "ts;"]),
    "kg": ((0.3, 0.1, 0.0), ["K", "G", "NG", "HH", "Y", "k", "g", "N", "h", "x", "j", "kh", "ph", "th_"]),
    "r": ((0.22, -0.3, 0.0), ["R", "ER", "r", "3:", "r-", "3", "R2", "r/"]),
    "w": ((0.15, -0.85, 0.0), ["W", "w", "UW", "u:", "u", "U", "UH", "y", "Y:", "v#"]),
    "oo": ((0.45, -0.7, 0.0), ["OW", "OY", "AO", "oU", "o", "O", "O:", "o:", "OI", "O@", "ɔ"]),
    "aa": ((1.0, 0.05, 0.0), ["AA", "AH", "AY", "AW", "a", "A:", "aI", "aU", "A", "a#", "a:", "V", "ɑ", "ʌ"]),
    "ae": ((0.8, 0.45, 0.0), ["AE", "EH", "EY", "e", "E", "eI", "e@", "ɛ", "æ", "e:", "E2", "a2"]),
    "ih": ((0.45, 0.7, 0.0), ["IH", "IY", "i", "I", "i:", "I2", "I#", "i.", "ɪ"]),
    "schwa": ((0.5, 0.1, 0.0), ["@", "@2", "@5", "ə", "3:", "@L", "y#", "i#"]),
}
VISEME_TABLE: dict[str, tuple[float, float, float]] = {}
for _shape, _names in _GROUPS.values():
    for _n in _names:
        VISEME_TABLE.setdefault(_n, _shape)

DEFAULT_SHAPE = (0.45, 0.0, 0.0)  # unknown voiced phoneme: a neutral half-open mouth

# espeak-ng mnemonics that mean something else in ARPAbet (V = the STRUT vowel, S/Z = sh/zh,
# Y = a rounded front vowel) or are missing above; used for events with alphabet="espeak".
_ESPEAK = {"V": "aa", "S": "sh", "Z": "sh", "Y": "oo", "0": "aa", "8": "oo", "X": "kg", ";": "kg",
           "ph": "pbm", "tS;h": "sh", "ts.h": "sh", "tsh": "sh"}
ESPEAK_TABLE: dict[str, tuple[float, float, float]] = {k: _GROUPS[g][0] for k, g in _ESPEAK.items()}
_STRESS = "'ˈˌ,%="


def phoneme_shape(ph: str, alphabet: str = "") -> tuple[float, float, float]:
    """(open, width, press) of one phoneme symbol; stress marks, stress digits and length marks
    are ignored. alphabet "espeak": espeak-ng mnemonics (``ESPEAK_TABLE`` is consulted first)."""
    ph = ph.lstrip(_STRESS) or ph
    if alphabet == "espeak":
        key = ph.rstrip(":")
        if key in ESPEAK_TABLE:
            return ESPEAK_TABLE[key]
    if ph in VISEME_TABLE:
        return VISEME_TABLE[ph]
    base = ph.rstrip("012'ˈˌ,:")
    if base in VISEME_TABLE:
        return VISEME_TABLE[base]
    if base.upper() in VISEME_TABLE:
        return VISEME_TABLE[base.upper()]
    if base[:1] and base[:1] in VISEME_TABLE:
        return VISEME_TABLE[base[:1]]
    return DEFAULT_SHAPE


@dataclass
class VisemeTrack:
    """Mouth parameters per video frame, float32 [T] each (see module docstring)."""

    open: np.ndarray
    width: np.ndarray
    press: np.ndarray
    source: str = "acoustic"

    def __len__(self) -> int:
        return len(self.open)


def _gauss_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(x) < 2:
        return x.astype(np.float32)
    from scipy.ndimage import gaussian_filter1d
    return gaussian_filter1d(x.astype(np.float64), sigma, mode="nearest").astype(np.float32)


def visemes_from_phonemes(events: Iterable[PhonemeEvent], num_frames: int, fps: float = 25.0,
                          *, smoothing: float = 0.8) -> VisemeTrack:
    """Viseme track from timed phonemes.

    Each frame [i/fps, (i+1)/fps) takes the overlap-weighted mean of the shapes of the phonemes that
    cover it (uncovered time counts as silence). ``smoothing`` is the coarticulation Gaussian's sigma
    in frames. A bilabial keeps the lips shut for its whole span (press stays at its peak).
    """
    shapes = np.zeros((num_frames, 3), np.float64)
    covered = np.zeros(num_frames, np.float64)
    press_peak = np.zeros(num_frames, np.float64)
    for ev in events:
        if ev.end <= ev.start:
            continue
        shape = np.array(phoneme_shape(ev.phoneme, getattr(ev, "alphabet", "")), np.float64)
        f0 = max(0, int(np.floor(ev.start * fps)))
        f1 = min(num_frames - 1, int(np.ceil(ev.end * fps)))
        for f in range(f0, f1 + 1):
            lo, hi = f / fps, (f + 1) / fps
            ov = max(0.0, min(hi, ev.end) - max(lo, ev.start))
            if ov <= 0:
                continue
            shapes[f] += ov * fps * shape
            covered[f] += ov * fps
            if shape[2] > 0:
                press_peak[f] = max(press_peak[f], shape[2] * min(1.0, ov * fps * 2))
    # uncovered time in a frame is silence (0, 0, 0): dividing by max(1, covered) does that
    shapes /= np.maximum(1.0, covered)[:, None]
    open_ = _gauss_smooth(shapes[:, 0], smoothing)
    width = _gauss_smooth(shapes[:, 1], smoothing * 1.5)
    press = np.maximum(_gauss_smooth(shapes[:, 2], smoothing * 0.5), press_peak.astype(np.float32))
    open_ = open_ * (1.0 - np.clip(press, 0, 1))
    return VisemeTrack(open=open_.astype(np.float32), width=np.clip(width, -1, 1).astype(np.float32),
                       press=np.clip(press, 0, 1).astype(np.float32), source="phonemes")


def visemes_from_acoustics(loudness_db: np.ndarray, speech_prob: np.ndarray, speech: np.ndarray,
                           f1: np.ndarray | None = None, f2: np.ndarray | None = None) -> VisemeTrack:
    """Viseme track from per-frame loudness (dBFS), VAD and optional formants (Hz).

    Jaw opening follows the loudness between the noise floor and the loud end of speech
    (5th/95th percentiles), gated by voice activity, so the mouth is shut in silence. Lip width
    follows F2 (spread above ~1.9 kHz, rounded below ~1.1 kHz with a low F1).
    """
    T = len(loudness_db)
    L = np.asarray(loudness_db, np.float64)
    sp = np.asarray(speech, bool)
    if sp.any():
        floor = np.percentile(L[~sp], 50) if (~sp).any() else np.percentile(L, 5)
        floor = max(floor, np.percentile(L[sp], 5) - 3.0)
        peak = np.percentile(L[sp], 95)
    else:
        floor, peak = np.percentile(L, 50), np.percentile(L, 95)
    span = max(peak - floor, 6.0)
    open_ = np.clip((L - floor) / span, 0.0, 1.0) ** 0.9
    gate = np.clip(_gauss_smooth(np.asarray(speech_prob, np.float32) * sp, 0.7), 0, 1)
    open_ = open_ * gate
    open_ = _gauss_smooth(open_, 0.6)
    width = np.zeros(T, np.float32)
    if f1 is not None and f2 is not None:
        f1a, f2a = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
        valid = (f1a > 250) & (f1a < 1000) & (f2a > 600) & sp
        w = np.zeros(T)
        w[valid] = np.clip((f2a[valid] - 1500.0) / 600.0, -1, 1)
        w[valid & (f2a < 1100) & (f1a < 550)] = -0.8
        width = np.clip(_gauss_smooth(w, 2.0) * 0.8, -1, 1)
    return VisemeTrack(open=np.clip(open_, 0, 1.2).astype(np.float32), width=width.astype(np.float32),
                       press=np.zeros(T, np.float32), source="acoustic")


def merge_vad(track: VisemeTrack, speech: Sequence[bool]) -> VisemeTrack:
    """Force the mouth shut where voice activity says silence (used for phoneme tracks too)."""
    sp = np.asarray(speech, bool)
    gate = _gauss_smooth(sp.astype(np.float32), 0.7)
    return VisemeTrack(open=(track.open * gate).astype(np.float32), width=(track.width * gate).astype(np.float32),
                       press=track.press, source=track.source)
