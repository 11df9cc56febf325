"""Per-frame motion of the lite engine: visemes + blinks + brows + head pose, deterministic per seed."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .visemes import VisemeTrack

NUM_POSE_STYLES = 46
MAX_BLINK_GAP_S = 4.5  #: longest time between two blinks (people blink every 2-10 s; at most 5 s looks alive)


@dataclass
class MotionTrack:
    """Everything the lite renderer needs for T frames at ``fps``; float32 [T] arrays.

    open/width/press: see :mod:`.visemes`. blink: eyelid closure in [0, 1]. brow: brow raise in
    [0, 1]. yaw/pitch/roll: head rotation in degrees. tx/ty: head translation as a fraction of the
    face size.
    """

    fps: float
    open: np.ndarray
    width: np.ndarray
    press: np.ndarray
    blink: np.ndarray
    brow: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.open)

    def frame(self, i: int) -> dict[str, float]:
        return {k: float(getattr(self, k)[i]) for k in
                ("open", "width", "press", "blink", "brow", "yaw", "pitch", "roll", "tx", "ty")}


def blink_track(num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Blinks at gamma-distributed gaps (mean ~3.5 s) kept within 1.5..4.5 s, the first after 0.8..2 s, so
    every 5 s of video holds a blink; each ~0.3 s: fast close, slower open."""
    shape = np.array([0.35, 0.8, 1.0, 0.95, 0.7, 0.4, 0.15], np.float32)  # at 25 fps
    if fps != 25.0:
        shape = np.interp(np.linspace(0, len(shape) - 1, max(2, int(round(len(shape) * fps / 25.0)))),
                          np.arange(len(shape)), shape).astype(np.float32)
    out = np.zeros(num_frames, np.float32)
    t = rng.uniform(0.8, 2.0)
    while True:
        f = int(t * fps)
        if f >= num_frames:
            break
        seg = shape[: num_frames - f]
        out[f:f + len(seg)] = np.maximum(out[f:f + len(seg)], seg)
        t += min(MAX_BLINK_GAP_S, max(1.5, rng.gamma(4.0, 3.5 / 4.0)))
    return out


def _smooth_noise(num_frames: int, fps: float, rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    t = np.arange(num_frames) / fps
    x = np.zeros(num_frames)
    for f in freqs:
        x += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
    return x / max(1.0, np.sqrt(len(freqs)))


def pose_track(num_frames: int, fps: float, pose_style: int, seed: int, energy: np.ndarray) -> dict[str, np.ndarray]:
    """Head motion of one of 46 styles: style sets amplitudes/tempo, ``seed`` the phases.

    Nods (pitch) and small turns follow speech emphasis (``energy``, [T] in [0, 1]). The head
    starts at the source pose and eases in over 0.5 s.
    """
    style_rng = np.random.default_rng(1000 + pose_style)
    amp = {"yaw": style_rng.uniform(2.0, 6.0), "pitch": style_rng.uniform(1.5, 4.0),
           "roll": style_rng.uniform(0.8, 2.5)}
    tempo = style_rng.uniform(0.6, 1.4)
    nod = style_rng.uniform(0.5, 2.0)
    rng = np.random.default_rng([seed, pose_style, 7])
    base = np.array([0.09, 0.17, 0.31]) * tempo
    out = {}
    for k in ("yaw", "pitch", "roll"):
        out[k] = amp[k] * _smooth_noise(num_frames, fps, rng, base * rng.uniform(0.8, 1.25, 3))
    from scipy.ndimage import gaussian_filter1d
    emph = gaussian_filter1d(np.asarray(energy, np.float64), 3.0) if num_frames > 1 else np.zeros(num_frames)
    out["pitch"] = out["pitch"] + nod * (emph - emph.mean())
    out["tx"] = 0.012 * _smooth_noise(num_frames, fps, rng, base[:2] * 0.7)
    out["ty"] = 0.008 * _smooth_noise(num_frames, fps, rng, base[:2] * 0.9)
    ease = np.clip(np.arange(num_frames) / max(1.0, 0.5 * fps), 0, 1)
    ease = ease * ease * (3 - 2 * ease)
    for k in out:
        out[k] = ((out[k] - out[k][0]) * ease).astype(np.float32)
    return out


def make_motion(visemes: VisemeTrack, fps: float, *, seed: int = 0, pose_style: int = 0, still: bool = False,
                expression_scale: float = 1.0, blinks: bool = True) -> MotionTrack:
    """Combine a viseme track with blinks, brows and head pose into a :class:`MotionTrack`."""
    T = len(visemes)
    rng = np.random.default_rng([seed, 11])
    blink = blink_track(T, fps, rng) if blinks else np.zeros(T, np.float32)
    energy = np.clip(visemes.open, 0, 1)
    from scipy.ndimage import gaussian_filter1d
    # brows rise on accents only: the fast loudness envelope above its slow trend
    if T > 1:
        e = energy.astype(np.float64)
        accent = gaussian_filter1d(e, 2.0) - gaussian_filter1d(e, 12.0)
        brow = np.clip(accent * 1.5, 0, 1).astype(np.float32)
    else:
        brow = np.zeros(T, np.float32)
    zeros = np.zeros(T, np.float32)
    if still:
        pose = {k: zeros for k in ("yaw", "pitch", "roll", "tx", "ty")}
    else:
        pose = pose_track(T, fps, pose_style, seed, energy)
    s = float(expression_scale)
    return MotionTrack(
        fps=fps, open=np.clip(visemes.open * s, 0, 1.3).astype(np.float32),
        width=np.clip(visemes.width * s, -1, 1).astype(np.float32), press=visemes.press.astype(np.float32),
        blink=blink, brow=np.clip(brow * s, 0, 1).astype(np.float32), **pose,
        info={"viseme_source": visemes.source, "seed": seed, "pose_style": pose_style, "still": still},
    )
