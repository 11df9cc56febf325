"""Values of the lite motion (``sadtalker_ext.motion.lite``), against references built here.

The lite engine tests measure the motion on rendered frames (ranges, determinism); mutation testing
(bench/mutation-report.md) showed those let through changed constants and formulas. These tests pin what
the modules document, with expected values that do not come from the code under test:

* hand-derived frame averages of timed phonemes (``smoothing=0``: no coarticulation filter),
  closed-form loudness-to-jaw mappings on step inputs (interior frames of constant blocks, where the
  smoothing filters are exact identities), phonetic facts (bilabials close, /i/ spreads, /u/ rounds);
* an independent Gaussian filter (explicit kernel, edge padding) for ``_gauss_smooth``;
* the head pose and blink schedule with a *stub* random generator whose ``uniform(lo, hi)`` returns
  ``lo + q * (hi - lo)`` and ``gamma(k, theta)`` the distribution's mean ``k * theta``: the pose is then
  a closed-form sum of sinusoids, written out below from the documented model and its design ranges
  (yaw 2-6 deg, pitch 1.5-4 deg, roll 0.8-2.5 deg, tempo x0.6-1.4, nod gain 0.5-2 deg per unit of
  speech energy, three frequencies 0.09/0.17/0.31 Hz x tempo each jittered x0.8-1.25, ease-in 0.5 s).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from sadtalker_ext.audio.events import PhonemeEvent
from sadtalker_ext.motion.lite import track as T
from sadtalker_ext.motion.lite import visemes as V

FPS = 25.0


# ---------------------------------------------------------------- independent references

def ref_gauss(x, sigma):
    """Gaussian of ``sigma`` frames, kernel radius round(4 sigma), edges extended ("nearest")."""
    x = np.asarray(x, np.float64)
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.full(r, x[0]), x, np.full(r, x[-1])])
    return np.convolve(pad, k, mode="valid")


class StubRng:
    """uniform(lo, hi) -> lo + q (hi - lo); with size n: fractions 0, 1/(n-1), ..., 1; gamma -> its mean."""

    def __init__(self, q, gamma=None):
        self.q, self.gamma_value = q, gamma

    def uniform(self, low=0.0, high=1.0, size=None):
        if size is None:
            return low + self.q * (high - low)
        return low + np.linspace(0.0, 1.0, size) * (high - low)

    def gamma(self, shape, scale=1.0, size=None):
        return shape * scale if self.gamma_value is None else self.gamma_value


def smoothstep(u):
    return u * u * (3 - 2 * u)


def ref_pose(num_frames, fps, q, energy):
    """The documented head model with every random draw at fraction q of its range."""
    t = np.arange(num_frames) / fps
    phase, weight = 2 * np.pi * q, 0.5 + 0.5 * q
    tempo = 0.6 + 0.8 * q
    base = np.array([0.09, 0.17, 0.31]) * tempo
    jitter = np.array([0.8, 1.025, 1.25])  # x0.8..1.25, independently per component (stub: 0, 1/2, 1)

    def noise(freqs):
        s = sum(np.sin(2 * np.pi * f * t + phase) * weight for f in freqs)
        return s / max(1.0, np.sqrt(len(freqs)))

    amp = {"yaw": 2.0 + 4.0 * q, "pitch": 1.5 + 2.5 * q, "roll": 0.8 + 1.7 * q}
    out = {k: amp[k] * noise(base * jitter) for k in ("yaw", "pitch", "roll")}
    nod = 0.5 + 1.5 * q
    emph = gaussian_filter1d(np.asarray(energy, np.float64), 3.0)
    out["pitch"] = out["pitch"] + nod * (emph - emph.mean())
    out["tx"] = 0.012 * noise(base[:2] * 0.7)
    out["ty"] = 0.008 * noise(base[:2] * 0.9)
    ease = smoothstep(np.clip(np.arange(num_frames) / max(1.0, 0.5 * fps), 0, 1))
    return {k: (v - v[0]) * ease for k, v in out.items()}


@pytest.fixture
def stub_rng(monkeypatch):
    """Every np.random.default_rng(...) the lite motion makes returns a StubRng(q)."""
    def install(q):
        monkeypatch.setattr(np.random, "default_rng", lambda *a, **k: StubRng(q))
    return install


# ---------------------------------------------------------------- visemes

def test_gauss_smooth_is_a_gaussian_with_edges_extended():
    x = np.zeros(11, np.float32)
    x[5], x[0] = 1.0, 0.5
    for sigma in (0.4, 0.6, 0.8, 1.2, 2.0):
        got = V._gauss_smooth(x, sigma)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref_gauss(x, sigma), atol=1e-6, err_msg=f"sigma {sigma}")
    np.testing.assert_array_equal(V._gauss_smooth(x, 0.0), x)  # sigma 0: no filter
    np.testing.assert_array_equal(V._gauss_smooth(np.array([0.7]), 2.0), [np.float32(0.7)])


def test_phoneme_shapes_follow_phonetics():
    for ph in ("P", "B", "M", "m"):
        o, w, p = V.phoneme_shape(ph)
        assert (o, p) == (0.0, 1.0), ph  # bilabials shut the lips
    assert V.phoneme_shape("AA")[0] == 1.0  # the module's unit: 1 = a wide "aa"
    assert V.phoneme_shape("IY")[1] > 0.3 and V.phoneme_shape("UW")[1] < -0.3  # /i/ spreads, /u/ rounds
    assert V.phoneme_shape("F")[2] > 0 and V.phoneme_shape("F")[0] < 0.2  # labiodental: lip on teeth


def test_phoneme_shape_ignores_stress_and_length_and_falls_back_to_the_first_letter():
    assert V.phoneme_shape("AA1") == V.phoneme_shape("AA0") == V.phoneme_shape("AA")
    assert V.phoneme_shape("IY2") == V.phoneme_shape("IY")
    assert V.phoneme_shape("ˈa") == V.phoneme_shape("a") and V.phoneme_shape("a:") == V.phoneme_shape("a")
    assert V.phoneme_shape("aa") == V.phoneme_shape("AA")  # lower-case ARPAbet
    # palatalized m (IPA modifier letter, in no table): still a bilabial closure, by its first letter
    assert V.phoneme_shape("mʲ") == V.phoneme_shape("m")
    assert V.phoneme_shape("Q9") == V.DEFAULT_SHAPE  # unknown: a neutral half-open mouth


def test_espeak_alphabet_reads_espeak_mnemonics():
    # espeak's "V" is the STRUT vowel (ARPAbet AH); in ARPAbet V is the labiodental fricative
    assert V.phoneme_shape("V", "espeak") == V.phoneme_shape("AH")
    assert V.phoneme_shape("V") == V.phoneme_shape("F")
    assert V.phoneme_shape("S", "espeak") == V.phoneme_shape("SH")


def test_phoneme_frames_take_the_overlap_weighted_mean_and_silence_elsewhere():
    aa = np.array(V.phoneme_shape("AA"))
    tr = V.visemes_from_phonemes([PhonemeEvent("AA", 0.0, 0.1)], 6, FPS, smoothing=0.0)  # 2.5 frames
    frac = np.array([1.0, 1.0, 0.5, 0, 0, 0])  # frame 2 half covered, the rest of it silence
    np.testing.assert_allclose(tr.open, frac * aa[0], atol=1e-6)
    np.testing.assert_allclose(tr.width, frac * aa[1], atol=1e-6)
    np.testing.assert_array_equal(tr.press, np.zeros(6))
    assert tr.source == "phonemes" and all(a.dtype == np.float32 for a in (tr.open, tr.width, tr.press))
    # two phonemes over the same frame: their mean (not their sum)
    iy = np.array(V.phoneme_shape("IY"))
    both = V.visemes_from_phonemes([PhonemeEvent("AA", 0.0, 0.04), PhonemeEvent("IY", 0.0, 0.04)], 2, FPS,
                                   smoothing=0.0)
    np.testing.assert_allclose([both.open[0], both.width[0]], ((aa + iy) / 2)[:2], atol=1e-6)
    assert both.open[1] == 0.0
    # rounding is negative width, kept (the width clip is -1..1)
    uw = V.visemes_from_phonemes([PhonemeEvent("UW", 0.0, 0.08)], 2, FPS, smoothing=0.0)
    np.testing.assert_allclose(uw.width, [V.phoneme_shape("UW")[1]] * 2, atol=1e-6)


def test_phoneme_events_use_their_alphabet():
    espeak = V.visemes_from_phonemes([PhonemeEvent("V", 0.0, 0.04, alphabet="espeak")], 1, FPS, smoothing=0.0)
    arpa = V.visemes_from_phonemes([PhonemeEvent("V", 0.0, 0.04)], 1, FPS, smoothing=0.0)
    np.testing.assert_allclose(espeak.open, [V.phoneme_shape("AH")[0]], atol=1e-6)
    assert arpa.press[0] == pytest.approx(V.phoneme_shape("F")[2]) and arpa.open[0] < 0.2


def test_a_bilabial_shuts_the_lips_for_its_whole_span_even_half_a_frame():
    # "M" over the second half of frame 0 only, with the default coarticulation smoothing
    tr = V.visemes_from_phonemes([PhonemeEvent("AA", 0.0, 0.02), PhonemeEvent("M", 0.02, 0.04),
                                  PhonemeEvent("AA", 0.04, 0.2)], 5, FPS)
    assert tr.press[0] == 1.0 and tr.open[0] == 0.0
    assert tr.press[3] < 0.05 and tr.open[3] > 0.5  # away from it the vowel opens again


def _blocks(*parts):
    return np.concatenate([np.full(n, v, np.float64) for n, v in parts])


def test_acoustic_jaw_opening_maps_loudness_between_floor_and_loud_end_of_speech():
    # 30 silent frames at -60 dBFS, 60 speech frames (57 at -30, 3 at -10), 30 silent
    L = _blocks((30, -60.0), (57, -30.0), (3, -10.0), (30, -60.0))
    sp = _blocks((30, 0), (60, 1), (30, 0)).astype(bool)
    tr = V.visemes_from_acoustics(L, sp.astype(np.float32), sp)
    # floor = max(noise median -60, 5th percentile of speech -30 minus 3 dB) = -33; loud end = 95th
    # percentile of speech = -30 + 0.05 * 20 = -29 (linear interpolation at rank 56.05 of 60); span =
    # max(4, 6 dB) = 6: a -30 dBFS frame opens ((-30 + 33) / 6) ** 0.9
    np.testing.assert_allclose(tr.open[36:80], 0.5 ** 0.9, atol=1e-5)
    assert np.all(tr.open[:25] == 0) and np.all(tr.open[96:] == 0)  # shut in silence (and finite)
    assert np.all(np.isfinite(tr.open)) and tr.open.max() <= 1.0
    np.testing.assert_array_equal(tr.width, np.zeros(120))  # no formants: no lip width
    assert tr.source == "acoustic" and tr.open.dtype == tr.width.dtype == np.float32


def test_acoustic_all_speech_uses_percentiles_of_the_whole_clip():
    L = _blocks((50, -40.0), (50, -20.0))
    sp = np.ones(100, bool)
    tr = V.visemes_from_acoustics(L, np.ones(100, np.float32), sp)
    # floor = 5th percentile = -40, loud end = 95th = -20: 0 and 1 inside the blocks
    np.testing.assert_allclose(tr.open[:45], 0.0, atol=1e-6)
    np.testing.assert_allclose(tr.open[55:], 1.0, atol=1e-6)


def test_speech_probability_scales_the_opening():
    L = _blocks((20, -60.0), (60, -20.0), (20, -60.0))
    sp = _blocks((20, 0), (60, 1), (20, 0)).astype(bool)
    half = V.visemes_from_acoustics(L, np.full(100, 0.5, np.float32), sp)
    # floor max(-60, -23) = -23, peak -20, span 6: (3 / 6) ** 0.9, times the probability 0.5
    np.testing.assert_allclose(half.open[30:70], 0.5 * 0.5 ** 0.9, atol=1e-5)


def test_acoustic_lip_width_follows_f2_in_speech_only():
    L = _blocks((30, -60.0), (60, -20.0), (30, -60.0))
    sp = _blocks((30, 0), (60, 1), (30, 0)).astype(bool)
    # speech: F1 700, F2 700 -> (700 - 1500) / 600 = -1.33, clipped to -1, times 0.8; silence: formant-like
    # values (F1 500, F2 2400) that must not move the lips
    f1 = _blocks((30, 500.0), (60, 700.0), (30, 500.0))
    f2 = _blocks((30, 2400.0), (60, 700.0), (30, 2400.0))
    tr = V.visemes_from_acoustics(L, sp.astype(np.float32), sp, f1, f2)
    np.testing.assert_allclose(tr.width[40:80], -0.8, atol=1e-5)
    np.testing.assert_allclose(tr.width[:20], 0.0, atol=1e-6)
    np.testing.assert_allclose(tr.width[100:], 0.0, atol=1e-6)
    # spread: F2 2400 -> +1.5 clipped to 1, times 0.8; rounded (F2 < 1100 with F1 < 550): -0.8 * 0.8
    spread = V.visemes_from_acoustics(L, sp.astype(np.float32), sp, np.full(120, 500.0), np.full(120, 2400.0))
    np.testing.assert_allclose(spread.width[40:80], 0.8, atol=1e-5)
    rounded = V.visemes_from_acoustics(L, sp.astype(np.float32), sp, np.full(120, 400.0), np.full(120, 900.0))
    np.testing.assert_allclose(rounded.width[40:80], -0.64, atol=1e-5)


def test_merge_vad_passes_speech_and_shuts_silence():
    tr = V.VisemeTrack(open=np.full(40, 0.6, np.float32), width=np.full(40, -0.5, np.float32),
                       press=np.full(40, 0.2, np.float32), source="phonemes")
    on = V.merge_vad(tr, [True] * 40)
    np.testing.assert_allclose(on.open, 0.6, atol=1e-6)
    np.testing.assert_allclose(on.width, -0.5, atol=1e-6)
    off = V.merge_vad(tr, [False] * 40)
    np.testing.assert_array_equal(off.open, np.zeros(40))
    np.testing.assert_array_equal(off.width, np.zeros(40))
    np.testing.assert_array_equal(off.press, tr.press)  # closures are kept
    assert on.source == "phonemes"
    # a 0/255 mask (cv2 style) is read as truth values: the gate stays within 0..1
    mask = np.zeros(40, np.uint8)
    mask[10:30] = 255
    gated = V.merge_vad(tr, mask)
    np.testing.assert_allclose(gated.open[14:26], 0.6, atol=1e-6)
    assert gated.open.max() <= 0.6 + 1e-6


# ---------------------------------------------------------------- blinks

def _blink_onsets(b):
    return [i for i in range(len(b)) if b[i] > 0 and (i == 0 or b[i - 1] == 0)]


def test_each_blink_closes_fully_fast_and_opens_slower():
    b = T.blink_track(int(60 * FPS), FPS, np.random.default_rng(5))
    assert b.dtype == np.float32 and 0.0 <= b.min() and b.max() <= 1.0
    onsets = _blink_onsets(b)
    assert len(onsets) >= 12
    for f in onsets[:-1]:
        seg = b[f:f + 12]
        n = int(np.argmax(seg == 0))  # the blink's length in frames
        seg = seg[:n]
        assert 0.25 <= n / FPS <= 0.32  # ~0.3 s
        peak = int(np.argmax(seg))
        assert seg[peak] == 1.0  # the lids close fully
        assert np.all(np.diff(seg[:peak + 1]) > 0) and np.all(np.diff(seg[peak:]) < 0)
        assert peak < n - 1 - peak  # closing is faster than opening


@pytest.mark.parametrize("fps", [30.0, 50.0, 12.5])
def test_blink_lasts_about_0_3_s_at_other_frame_rates(fps):
    b = T.blink_track(int(20 * fps), fps, np.random.default_rng(2))
    onsets = _blink_onsets(b)
    assert len(onsets) >= 4
    for f in onsets[:-1]:
        seg = b[f:f + int(fps)]
        n = int(np.argmax(seg == 0))
        assert 0.24 <= n / fps <= 0.34, (fps, n)
        assert 0.9 <= seg.max() <= 1.0


def test_blink_gaps_have_the_documented_mean_and_bounds():
    # the stub's gamma returns the distribution's mean (shape * scale): 3.5 s per the docstring;
    # its uniform the middle of the first blink's 0.8..2 s window: 1.4 s
    b = T.blink_track(int(30 * FPS), FPS, StubRng(0.5))
    on = np.array(_blink_onsets(b)) / FPS
    assert on[0] == pytest.approx(1.4, abs=1 / FPS)
    np.testing.assert_allclose(np.diff(on), 3.5, atol=1.01 / FPS)
    # gaps are kept within 1.5..4.5 s whatever the draw
    for drawn, gap in ((0.2, 1.5), (30.0, 4.5)):
        on = np.array(_blink_onsets(T.blink_track(int(30 * FPS), FPS, StubRng(0.0, gamma=drawn)))) / FPS
        assert on[0] == pytest.approx(0.8, abs=1 / FPS)
        np.testing.assert_allclose(np.diff(on), gap, atol=1.01 / FPS)


def test_blink_draws_vary_gaps_around_3_5_s():
    # the real generator: gaps of a gamma(4, 3.5/4) clipped to 1.5..4.5 s; the clipped mean by quadrature
    from scipy import stats
    g = stats.gamma(4.0, scale=3.5 / 4.0)
    x = np.linspace(1.5, 4.5, 30001)
    clipped_mean = 1.5 * g.cdf(1.5) + 4.5 * g.sf(4.5) + np.trapz(x * g.pdf(x), x)
    b = T.blink_track(int(4000 * FPS), FPS, np.random.default_rng(123))
    gaps = np.diff(_blink_onsets(b)) / FPS
    assert gaps.min() >= 1.5 - 1.01 / FPS and gaps.max() <= 4.5 + 1.01 / FPS
    assert abs(gaps.mean() - clipped_mean) < 0.06, (gaps.mean(), clipped_mean)


# ---------------------------------------------------------------- head pose

def test_smooth_noise_is_a_normalized_sum_of_sinusoids():
    rng = StubRng(0.25)  # phase 2 pi / 4, weight 0.625
    t = np.arange(200) / FPS
    one = T._smooth_noise(200, FPS, rng, np.array([0.3]))
    np.testing.assert_allclose(one, 0.625 * np.cos(2 * np.pi * 0.3 * t), atol=1e-9)
    four = T._smooth_noise(200, FPS, rng, np.array([0.1, 0.2, 0.3, 0.5]))
    want = sum(0.625 * np.cos(2 * np.pi * f * t) for f in (0.1, 0.2, 0.3, 0.5)) / 2.0  # / sqrt(4)
    np.testing.assert_allclose(four, want, atol=1e-9)


def test_smooth_noise_phases_cover_the_whole_circle():
    # one sinusoid of the real generator: a sin + b cos fit gives its phase; over 300 draws the
    # phases spread over the circle and the weights over 0.5..1
    t = np.arange(100) / FPS
    basis = np.stack([np.sin(2 * np.pi * 0.4 * t), np.cos(2 * np.pi * 0.4 * t)], 1)
    rng = np.random.default_rng(9)
    phases, weights = [], []
    for _ in range(300):
        x = T._smooth_noise(100, FPS, rng, np.array([0.4]))
        (a, c), res, *_ = np.linalg.lstsq(basis, x, rcond=None)
        assert np.abs(basis @ [a, c] - x).max() < 1e-9
        phases.append(np.arctan2(c, a) % (2 * np.pi))
        weights.append(np.hypot(a, c))
    hist = np.histogram(phases, bins=4, range=(0, 2 * np.pi))[0]
    assert hist.min() > 40, hist  # every quarter of the circle (75 expected each)
    assert 0.5 - 1e-9 <= min(weights) < 0.55 and 0.95 < max(weights) <= 1.0 + 1e-9


@pytest.mark.parametrize("q", [0.0, 0.75, 1.0])
def test_pose_track_is_the_documented_model(stub_rng, q):
    stub_rng(q)
    n = 150
    energy = np.zeros(n)
    energy[40:60], energy[90:95] = 1.0, 0.6  # two accents
    got = T.pose_track(n, FPS, 5, 3, energy)
    want = ref_pose(n, FPS, q, energy)
    assert set(got) == {"yaw", "pitch", "roll", "tx", "ty"}
    for k in want:
        assert got[k].dtype == np.float32 and got[k].shape == (n,)
        np.testing.assert_allclose(got[k], want[k], atol=2e-5 * max(1.0, np.abs(want[k]).max()), err_msg=k)


def test_pose_eases_in_over_half_a_second_at_any_frame_rate(stub_rng):
    stub_rng(0.5)
    for fps in (2.0, 10.0, 25.0):
        n = int(4 * fps)
        got = T.pose_track(n, fps, 0, 0, np.zeros(n))
        want = ref_pose(n, fps, 0.5, np.zeros(n))
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=2e-5 * max(1.0, np.abs(want[k]).max()),
                                       err_msg=f"{k} at {fps} fps")
    # at 2 fps half a second is one frame: frame 1 already moves by its full amount
    got = T.pose_track(8, 2.0, 0, 0, np.zeros(8))
    raw = ref_pose(8, 2.0, 0.5, np.zeros(8))
    assert got["yaw"][0] == 0.0 and got["yaw"][1] == pytest.approx(raw["yaw"][1], rel=1e-5)


def test_head_nods_down_on_speech_emphasis(stub_rng):
    # pitch difference between speech with and without an accent: + nod gain x smoothed accent
    stub_rng(0.5)
    n = 100
    e = np.zeros(n)
    e[50:56] = 1.0
    d = T.pose_track(n, FPS, 0, 0, e)["pitch"] - T.pose_track(n, FPS, 0, 0, np.zeros(n))["pitch"]
    g = gaussian_filter1d(e, 3.0)
    nod = 0.5 + 1.5 * 0.5
    np.testing.assert_allclose(d[20:], nod * (g - g[0])[20:], atol=1e-5)
    assert d[53] > 0.3


# ---------------------------------------------------------------- make_motion

def _vis(open_, width=None):
    open_ = np.asarray(open_, np.float32)
    width = np.zeros_like(open_) if width is None else np.asarray(width, np.float32)
    return V.VisemeTrack(open=open_, width=width, press=np.zeros_like(open_), source="phonemes")


def test_make_motion_fields_types_and_info():
    vis = _vis(np.linspace(0, 1, 60), np.linspace(-0.5, 0.5, 60))
    m = T.make_motion(vis, FPS, seed=4, pose_style=7)
    assert m.fps == FPS and len(m) == 60
    assert m.info == {"viseme_source": "phonemes", "seed": 4, "pose_style": 7, "still": False}
    for k in ("open", "width", "press", "blink", "brow", "yaw", "pitch", "roll", "tx", "ty"):
        a = getattr(m, k)
        assert a.dtype == np.float32 and a.shape == (60,), k
    np.testing.assert_allclose(m.open, vis.open, atol=1e-7)  # expression_scale defaults to 1
    np.testing.assert_allclose(m.width, vis.width, atol=1e-7)
    fr = m.frame(30)
    assert set(fr) == {"open", "width", "press", "blink", "brow", "yaw", "pitch", "roll", "tx", "ty"}
    assert fr["open"] == pytest.approx(float(vis.open[30])) and fr["pitch"] == pytest.approx(float(m.pitch[30]))
    assert all(isinstance(v, float) for v in fr.values())


def test_expression_scale_scales_and_clips():
    vis = _vis(np.linspace(0, 1, 50), np.linspace(-0.6, 0.6, 50))
    m = T.make_motion(vis, FPS, expression_scale=2.0, still=True, blinks=False)
    np.testing.assert_allclose(m.open, np.clip(2 * vis.open, 0, 1.3), atol=1e-6)
    np.testing.assert_allclose(m.width, np.clip(2 * vis.width, -1, 1), atol=1e-6)
    for k in ("yaw", "pitch", "roll", "tx", "ty", "blink"):
        np.testing.assert_array_equal(getattr(m, k), np.zeros(50))
    assert m.info["still"] is True


def test_brows_rise_on_accents_only_and_stay_within_0_1():
    flat = T.make_motion(_vis(np.full(80, 0.5)), FPS)
    np.testing.assert_allclose(flat.brow, 0.0, atol=1e-6)  # steady speech: no accent
    acc = np.zeros(80)
    acc[38:43] = 1.0
    m = T.make_motion(_vis(acc), FPS, expression_scale=3.0)
    assert m.brow.max() == 1.0 and m.brow.min() >= 0.0 and m.brow[:20].max() == 0.0
    assert 36 <= int(np.argmax(m.brow)) <= 44
    # the brow reads the jaw opening capped at 1: a 1.2 accent raises them as a 1.0 accent does
    hi = acc * 1.2
    np.testing.assert_allclose(T.make_motion(_vis(hi), FPS, expression_scale=0.5).brow,
                               T.make_motion(_vis(acc), FPS, expression_scale=0.5).brow, atol=1e-6)


def test_one_frame_motion():
    m = T.make_motion(_vis([0.4]), FPS, seed=1)
    assert len(m) == 1 and m.brow.tolist() == [0.0] and m.yaw.tolist() == [0.0]
