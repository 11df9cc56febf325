"""The lite engine's motion, measured on its output frames with tools the engine does not use.

The engine places its mesh with mediapipe landmarks; here nothing of it (nor of our audio analysis) is
used to measure:

* **where**: OpenCV's Haar cascades (``cv2.data``: ``haarcascade_frontalface_default``,
  ``haarcascade_eye``) find the face and the two eyes once, on the first frame (the source pose); the
  head's motion is then followed by phase correlation of the upper face against the first frame
  (median of 9 frames, so a blink does not move the estimate);
* **eyes**: the share of dark pixels (below the first frame's 25th percentile of the eye box) in the
  centre of each eye box - iris, pupil and lashes; it dips when the lids close (an eye-aspect proxy
  without landmarks);
* **mouth**: the share of mouth-box pixels that are neither skin nor lips (saturation < 0.22:
  teeth; or max(R, G, B) < 90: the dark inside), minus its value on the first frame (closed mouth);
* **speech / pause**: the audio is built here: ARCTIC a0007 (4 s), 1.5 s of -50 dBFS white noise,
  a0007 again, 1.5 s of noise; speech frames are those whose 40 ms RMS is above -30 dBFS, pause frames
  those inside the noise with 0.3 s of noise on either side.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.ndimage import median_filter

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import iter_frames

FPS = 25
NOISE_S = 1.5


@pytest.fixture(scope="module")
def speech_with_pauses(arctic_wav):
    a = load_audio(arctic_wav).samples.astype(np.float32)
    rng = np.random.default_rng(0)

    def noise():
        x = rng.standard_normal(int(NOISE_S * 16000))
        return (x * 10 ** (-50 / 20) / np.sqrt(np.mean(x ** 2))).astype(np.float32)  # -50 dBFS RMS

    samples = np.concatenate([a, noise(), a, noise()])
    noise_spans = [(len(a), len(a) + int(NOISE_S * 16000)),
                   (2 * len(a) + int(NOISE_S * 16000), len(samples))]
    return AudioClip(samples, 16000, "a0007 + pause + a0007 + pause"), noise_spans


def _frames(image, clip, **opts):
    o = GenerateOptions(engine="lite", size=256, chunk_size=50, **opts)
    return np.concatenate([c.frames for c in iter_frames(image, clip, o)])


@pytest.fixture(scope="module")
def runs(astronaut, speech_with_pauses):
    clip, _ = speech_with_pauses
    return {"seed3": _frames(astronaut, clip, seed=3), "noblinks": _frames(astronaut, clip, seed=3, blinks=False)}


class Measure:
    """Face, eyes and mouth boxes from Haar cascades on frame 0; head shift by phase correlation."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
        face_c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        eye_c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
        g0 = gray[0].astype(np.uint8)
        faces = face_c.detectMultiScale(g0, 1.1, 5)
        assert len(faces), "the Haar face cascade finds no face on the first frame"
        self.face = x, y, w, h = tuple(int(v) for v in max(faces, key=lambda r: r[2] * r[3]))
        eyes = eye_c.detectMultiScale(g0[y:y + h // 2, x:x + w], 1.05, 3)
        assert len(eyes) >= 2, f"the Haar eye cascade finds {len(eyes)} eyes"
        self.eyes = [tuple(int(v) for v in e) for e in sorted(eyes.tolist(), key=lambda e: e[0])[:2]]
        y1 = y + int(0.75 * h)
        win = cv2.createHanningWindow((w, y1 - y), cv2.CV_32F)
        ref = gray[0][y:y1, x:x + w]
        shifts = np.array([cv2.phaseCorrelate(ref, g[y:y1, x:x + w], win)[0] for g in gray])
        self.shift = median_filter(shifts, size=(9, 1), mode="nearest")  # [T, 2] (dx, dy) pixels
        self.gray = gray

    def _roi(self, img, x0, y0, w, h, d):
        m = np.float32([[1, 0, -(x0 + d[0])], [0, 1, -(y0 + d[1])]])
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)

    def eye_openness(self) -> np.ndarray:
        x, y, _, _ = self.face
        boxes = [(x + ex, y + ey, ew, eh) for ex, ey, ew, eh in self.eyes]
        thr = [np.percentile(self._roi(self.gray[0], *b, (0, 0)), 25) for b in boxes]
        out = []
        for g, d in zip(self.gray, self.shift):
            vals = []
            for b, t in zip(boxes, thr):
                r = self._roi(g, *b, d)
                eh, ew = r.shape
                vals.append(float((r[eh // 4:3 * eh // 4, ew // 4:3 * ew // 4] < t).mean()))
            out.append(np.mean(vals))
        return np.array(out)

    def mouth_opening(self) -> np.ndarray:
        x, y, w, h = self.face
        box = (x + w / 4, y + 0.62 * h, w // 2, int(0.3 * h))
        out = []
        for f, d in zip(self.frames, self.shift):
            r = self._roi(f, *box, d).astype(np.float32)
            mx, mn = r.max(axis=2), r.min(axis=2)
            sat = (mx - mn) / np.maximum(mx, 1.0)
            out.append(float(((sat < 0.22) | (mx < 90)).mean()))
        out = np.array(out)
        return out - out[0]


def _frame_rms_db(samples: np.ndarray, n: int) -> np.ndarray:
    half = int(0.02 * 16000)
    centres = (np.arange(n) + 0.5) * 16000 / FPS
    out = []
    for c in centres.astype(int):
        seg = samples[max(0, c - half):c + half].astype(np.float64)
        out.append(10 * np.log10(np.mean(seg ** 2) + 1e-20))
    return np.array(out)


def _dips(x: np.ndarray, frac: float) -> list:
    """Start frames of the runs where ``x`` < frac * median(x)."""
    low = x < frac * np.median(x)
    return [i for i in range(len(x)) if low[i] and (i == 0 or not low[i - 1])]


def test_blinks_at_least_once_every_5_s_by_default(runs):
    eyes = Measure(runs["seed3"]).eye_openness()
    starts = _dips(eyes, 0.85)
    n = len(eyes)
    print(f"eye openness dips (blinks) start at frames {starts} of {n}; min {eyes.min() / np.median(eyes):.2f} x median")
    assert starts, "no blink in the video"
    gaps = np.diff([0] + starts + [n]) / FPS
    assert gaps.max() <= 5.0, f"{gaps.max():.2f} s without a blink"


def test_no_blinks_never_closes_the_eyes(runs):
    eyes = Measure(runs["noblinks"]).eye_openness()
    ratio = eyes.min() / np.median(eyes)
    print(f"--no-blinks: minimum eye openness {ratio:.3f} x median")
    assert ratio > 0.92 and not _dips(eyes, 0.85)


def test_mouth_stays_closed_in_noise_pauses(runs, speech_with_pauses):
    clip, spans = speech_with_pauses
    frames = runs["seed3"]
    opening = Measure(frames).mouth_opening()
    n = len(frames)
    rms = _frame_rms_db(clip.samples, n)
    t = (np.arange(n) + 0.5) / FPS
    margin = 0.3
    pause = np.zeros(n, bool)
    for a, b in spans:
        pause |= (t > a / 16000 + margin) & (t < b / 16000 - margin)
    speech = rms > -30
    assert pause.sum() >= 40 and speech.sum() >= 100
    assert rms[pause].max() < -45  # the pauses hold the noise only
    med = np.median(opening[speech])
    print(f"mouth opening: speech median {med:.4f}, pause max {opening[pause].max():.4f} "
          f"({opening[pause].max() / med:.2f} x)")
    assert med > 0.02  # the mouth does open when she speaks
    assert opening[pause].max() <= 0.3 * med


def test_seeds_change_the_head_pose_and_a_seed_repeats_exactly(astronaut, runs, speech_with_pauses):
    clip, _ = speech_with_pauses
    short = AudioClip(clip.samples[:4 * 16000].copy(), 16000)
    a = _frames(astronaut, short, seed=3)
    np.testing.assert_array_equal(a, _frames(astronaut, short, seed=3))  # same seed: the same frames
    b = _frames(astronaut, short, seed=8)
    sa, sb = Measure(a).shift, Measure(b).shift
    diff = np.abs(sa - sb).max()
    travel = np.abs(sa - sa[0]).max()
    print(f"head shift, seed 3 vs 8: max difference {diff:.1f} px (seed 3 travels {travel:.1f} px)")
    assert travel > 2.0 and diff > 2.0


def test_blink_schedule_never_leaves_5_s_without_a_blink():
    """Over 200 seeds and 60 s each, the schedule itself (what the renderer closes the lids by)."""
    from sadtalker_ext.motion.lite.track import blink_track
    worst = 0.0
    for seed in range(200):
        b = blink_track(60 * FPS, float(FPS), np.random.default_rng([seed, 11]))
        closed = b > 0.5
        starts = [i for i in range(len(b)) if closed[i] and (i == 0 or not closed[i - 1])]
        gaps = np.diff([0] + starts + [len(b)]) / FPS
        worst = max(worst, float(gaps.max()))
    print(f"longest time without a blink over 200 seeds: {worst:.2f} s")
    assert worst <= 5.0
