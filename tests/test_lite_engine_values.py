"""The lite engine's own logic (``sadtalker_ext.engines.lite``) without the face model: the phoneme/acoustic
combination, when pocketsphinx's alignment runs and what it is given, the wiring of the speech analysis
into the motion, and how frames and landmarks are chunked and mapped back onto the full picture.

References: hand-derived values (combine_tracks' documented rule on chosen inputs; landmark mapping of a
stand-in renderer and paste), the options' documented meaning, and - for motion() - the data flow of
the module docstring assembled here from the audio modules (VAD, loudness, formants), which are not the
code under test. pocketsphinx itself is replaced by a recording stand-in (its own tests:
test_lite_early_alignment.py, test_alignment.py).
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from sadtalker_ext.audio import phonemes as ph
from sadtalker_ext.audio.decode import ANALYSIS_RATE, load_audio
from sadtalker_ext.audio.events import PhonemeEvent
from sadtalker_ext.audio.features import formants, loudness_envelope
from sadtalker_ext.audio.vad import detect_voice
from sadtalker_ext.engines import lite as L
from sadtalker_ext.errors import AudioError
from sadtalker_ext.frames import RunContext
from sadtalker_ext.motion.lite import make_motion
from sadtalker_ext.motion.lite.visemes import VisemeTrack, visemes_from_acoustics
from sadtalker_ext.options import GenerateOptions

FPS = 25


def _track(open_, press=None, width=None, source="phonemes"):
    open_ = np.asarray(open_, np.float32)
    z = np.zeros_like(open_)
    return VisemeTrack(open=open_, width=z if width is None else np.asarray(width, np.float32),
                       press=z if press is None else np.asarray(press, np.float32), source=source)


# ---------------------------------------------------------------- combine_tracks

def test_combined_jaw_is_the_loudness_scaled_by_the_phonemes_openness_and_shut_by_closures():
    phon = _track([0.0, 0.4, 0.8, 1.2, 0.8, 0.8], press=[0, 0, 0, 0, 1.0, 0.5], width=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    acoustic = _track(np.full(6, 0.6), source="acoustic")
    got = L.combine_tracks(phon, acoustic)
    # scale = 0.35 + 0.65 * min(open / 0.8, 1.25): a closed phoneme keeps 35 % of the loudness-driven jaw,
    # an open one (>= 0.8) all of it, at most x1.1625; a bilabial (press 1) shuts it, press 0.5 halves it
    want = 0.6 * np.array([0.35, 0.35 + 0.65 * 0.5, 1.0, 0.35 + 0.65 * 1.25, 0.0, 0.5])
    np.testing.assert_allclose(got.open, want, atol=1e-6)
    assert got.open.dtype == np.float32
    np.testing.assert_array_equal(got.width, phon.width)
    np.testing.assert_array_equal(got.press, phon.press)
    assert got.source == "phonemes+acoustic"


# ---------------------------------------------------------------- when the alignment runs

def _ctx(language="en", phonemes="auto", events=None, should_stop=None, audio=None, num_frames=10):
    opts = GenerateOptions(engine="lite", language=language, phonemes=phonemes)
    return SimpleNamespace(options=opts, phoneme_events=events, should_stop=should_stop, audio=audio,
                           early_alignment=None, num_frames=num_frames, fps=FPS, info={})


@pytest.mark.parametrize("language,phonemes,want", [
    ("en", "auto", True), ("en-US", "auto", True), ("en_GB", "auto", True), ("de", "auto", False),
    ("eng", "auto", False), ("de", "pocketsphinx", True), ("en", "acoustic", False)])
def test_alignment_is_wanted_for_english_or_when_asked(language, phonemes, want):
    assert L.LiteEngine._wants_alignment(_ctx(language, phonemes)) is want


def test_no_alignment_when_the_caller_gave_phonemes():
    assert L.LiteEngine._wants_alignment(_ctx("en", "pocketsphinx", events=[PhonemeEvent("AA", 0, 0.1)])) is False


class FakeAlign:
    """Stands in for align_phonemes: records its arguments and what should_stop() said."""

    def __init__(self, result=None, raises=None, wait=None):
        self.calls, self.result, self.raises, self.wait = [], result, raises, wait

    def __call__(self, x16, *, transcript=None, required=False, should_stop=None, in_process=False):
        if self.wait is not None:
            self.wait.wait(10)
        self.calls.append({"n": len(x16), "transcript": transcript, "required": required,
                           "stop": None if should_stop is None else bool(should_stop())})
        if self.raises is not None:
            raise self.raises
        return self.result


class Clip:
    def __init__(self, n=16000):
        self.x = np.zeros(n, np.float32)

    def resampled(self, rate=ANALYSIS_RATE):
        assert rate == ANALYSIS_RATE
        return self.x


def test_begin_starts_the_alignment_only_when_wanted(monkeypatch):
    fake = FakeAlign(result=[PhonemeEvent("AA", 0.0, 0.2)])
    monkeypatch.setattr(ph, "align_phonemes", fake)
    eng = L.LiteEngine()
    ctx = _ctx("de", "auto", audio=Clip())
    assert eng.begin(ctx) is None and ctx.early_alignment is None
    ctx = _ctx("en", "auto", audio=Clip(8000))
    ctx.options.transcript = "hello"
    job = eng.begin(ctx)
    assert job is not None and ctx.early_alignment is job
    assert job.result() == [PhonemeEvent("AA", 0.0, 0.2)]
    job.close()
    assert fake.calls == [{"n": 8000, "transcript": "hello", "required": False, "stop": False}]


def test_begin_passes_the_callers_stop_and_required(monkeypatch):
    fake = FakeAlign(result=None)
    monkeypatch.setattr(ph, "align_phonemes", fake)
    job = L.LiteEngine().begin(_ctx("de", "pocketsphinx", audio=Clip(), should_stop=lambda: True))
    assert job.result() is None
    job.close()
    assert fake.calls[0]["required"] is True and fake.calls[0]["stop"] is True


def test_asked_for_pocketsphinx_without_it_still_runs_the_alignment_to_report_it(monkeypatch):
    # with phonemes="pocketsphinx" and the package missing, begin() must not fall back silently: the
    # alignment runs (required) and raises the one-line DependencyError there
    fake = FakeAlign(result=None)
    monkeypatch.setattr(ph, "align_phonemes", fake)
    monkeypatch.setattr(ph, "_find_spec", lambda name: None)
    assert L.LiteEngine().begin(_ctx("en", "auto", audio=Clip())) is None  # auto: quietly acoustic
    job = L.LiteEngine().begin(_ctx("en", "pocketsphinx", audio=Clip()))
    assert job is not None
    job.result()
    job.close()
    assert fake.calls[0]["required"] is True


def test_early_alignment_reraises_and_names_its_thread(monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(ph, "align_phonemes", FakeAlign(raises=AudioError("nothing aligned"), wait=gate))
    job = L.EarlyAlignment(np.zeros(100, np.float32), None, True)
    assert [t for t in threading.enumerate() if t.name == "lite-alignment"]  # what runs find leftovers by
    gate.set()
    with pytest.raises(AudioError, match="nothing aligned"):
        job.result()
    job.close()
    assert not [t for t in threading.enumerate() if t.name == "lite-alignment"]


# ---------------------------------------------------------------- motion(): the data flow

@pytest.fixture(scope="module")
def speech(arctic_wav):
    return load_audio(arctic_wav)


def _run_ctx(speech, events=None, **opts):
    x16 = speech.resampled(ANALYSIS_RATE)
    T = int(len(x16) / ANALYSIS_RATE * FPS)
    o = GenerateOptions(engine="lite", **opts)
    return RunContext(audio=speech, options=o, num_frames=T, fps=FPS, phoneme_events=events), x16, T


def test_acoustic_motion_is_the_documented_chain_of_the_audio_analyses(speech, monkeypatch):
    monkeypatch.setattr(ph, "align_phonemes", FakeAlign(raises=AssertionError("no alignment for acoustic")))
    ctx, x16, T = _run_ctx(speech, phonemes="acoustic", seed=5, pose_style=3, expression_scale=1.0)
    m = L.LiteEngine().motion(None, ctx)
    vad = detect_voice(x16, T, FPS)
    fm = formants(x16, T, FPS)
    track = visemes_from_acoustics(loudness_envelope(x16, T, FPS), vad.prob, vad.speech, fm.f1, fm.f2)
    want = make_motion(track, FPS, seed=5, pose_style=3)
    assert len(m) == T
    for k in ("open", "width", "press", "blink", "brow", "yaw", "pitch", "roll", "tx", "ty"):
        np.testing.assert_array_equal(getattr(m, k), getattr(want, k), err_msg=k)
    assert np.abs(m.width).max() > 0.05  # the lips follow F2 in speech
    assert ctx.info == {"vad": vad.method, "viseme_source": "acoustic"}


def test_motion_options_reach_the_motion(speech):
    ctx, _, T = _run_ctx(speech, phonemes="acoustic", still=True, blinks=False)
    m = L.LiteEngine().motion(None, ctx)
    for k in ("yaw", "pitch", "roll", "tx", "ty", "blink"):
        np.testing.assert_array_equal(getattr(m, k), np.zeros(T), err_msg=k)
    assert m.info["still"] is True
    ctx2, _, _ = _run_ctx(speech, phonemes="acoustic")
    m2 = L.LiteEngine().motion(None, ctx2)
    assert m2.blink.max() == 1.0 and np.abs(m2.yaw).max() > 0.1  # defaults: blinks and head motion


def test_motion_uses_the_early_alignment_and_not_a_second_one(speech, monkeypatch):
    monkeypatch.setattr(ph, "align_phonemes", FakeAlign(raises=AssertionError("aligned twice")))
    ctx, x16, T = _run_ctx(speech, phonemes="pocketsphinx")
    events = [PhonemeEvent("M", 0.5, 0.7), PhonemeEvent("AA", 0.7, 1.2)]
    ctx.early_alignment = SimpleNamespace(x16=x16, result=lambda: events)
    m = L.LiteEngine().motion(None, ctx)
    assert ctx.early_alignment is None
    assert ctx.info["phoneme_source"] == "pocketsphinx" and ctx.info["viseme_source"] == "phonemes+acoustic"
    assert m.press[15] == 1.0  # the "M" at 0.5..0.7 s shuts the lips


def test_motion_aligns_itself_when_nothing_started_it(speech, monkeypatch):
    events = [PhonemeEvent("AA", 0.3, 1.0)]
    fake = FakeAlign(result=events)
    monkeypatch.setattr(ph, "align_phonemes", fake)
    ctx, x16, T = _run_ctx(speech, phonemes="pocketsphinx")
    ctx.should_stop = lambda: False
    m = L.LiteEngine().motion(None, ctx)
    assert fake.calls == [{"n": len(x16), "transcript": None, "required": True, "stop": False}]
    assert ctx.info["viseme_source"] == "phonemes+acoustic" and len(m) == T
    # auto on English: not required (a missing pocketsphinx falls back to acoustics)
    fake.calls.clear()
    ctx, _, _ = _run_ctx(speech, phonemes="auto")
    L.LiteEngine().motion(None, ctx)
    assert fake.calls[0]["required"] is False


def test_caller_phonemes_are_combined_with_the_acoustics(speech, monkeypatch):
    monkeypatch.setattr(ph, "align_phonemes", FakeAlign(raises=AssertionError("caller gave phonemes")))
    events = [PhonemeEvent("IY", 0.2, 1.4), PhonemeEvent("P", 1.4, 1.5)]
    ctx, x16, T = _run_ctx(speech, events=events)
    m = L.LiteEngine().motion(None, ctx)
    assert ctx.info["viseme_source"] == "phonemes+acoustic" and "phoneme_source" not in ctx.info
    assert m.press[36] == 1.0 and m.open[36] == 0.0  # the "P" (frames 35..37)
    assert m.width[20] > 0.2  # /i/ spreads the lips


# ---------------------------------------------------------------- frames(): chunks and landmarks

class StandInRenderer:
    """render_frame(m) -> (an 8x10 RGB frame whose pixels hold the frame's 'open' value, 478 points)."""

    def render_frame(self, m):
        i = int(round(m["open"]))
        frame = np.full((8, 10, 3), i, np.uint8)
        pts = np.stack([np.arange(478, dtype=np.float32), np.full(478, i, np.float32)], 1)
        return frame, pts


class StandInPaste:
    box = (30, 40, 50, 56)  # a 20 x 16 box: the 10-wide crop is scaled by 2

    def apply(self, frame, out):
        out[...] = 200
        out[:frame.shape[0], :frame.shape[1]] = frame


class StandInMotion:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def frame(self, i):
        return {"open": float(i)}


def _source(paste):
    size = (64, 48) if paste else (10, 8)
    return SimpleNamespace(renderer=StandInRenderer(),
                           prepared=SimpleNamespace(paste=StandInPaste() if paste else None, output_size=size))


@pytest.mark.parametrize("paste", [False, True])
def test_frames_come_in_chunks_with_landmarks_on_the_output_picture(paste):
    ctx = SimpleNamespace(options=SimpleNamespace(chunk_size=4))
    chunks = list(L.LiteEngine().frames(_source(paste), StandInMotion(10), ctx))
    assert [c.start for c in chunks] == [0, 4, 8] and [len(c) for c in chunks] == [4, 4, 2]
    for c in chunks:
        assert c.frames.dtype == np.uint8 and c.landmarks.dtype == np.float32
        assert c.frames.shape[1:] == ((48, 64, 3) if paste else (8, 10, 3))
        for j in range(len(c)):
            i = c.start + j
            assert c.frames[j, 0, 0, 0] == i
            if paste:
                assert c.frames[j, 47, 63, 0] == 200  # pasted into the full picture
                # crop point (x, y) -> box corner + 2 (x, y)
                np.testing.assert_allclose(c.landmarks[j, :, 0], 30 + 2 * np.arange(478))
                np.testing.assert_allclose(c.landmarks[j, :, 1], 40 + 2 * i)
            else:
                np.testing.assert_allclose(c.landmarks[j, :, 0], np.arange(478))
                np.testing.assert_allclose(c.landmarks[j, :, 1], i)
