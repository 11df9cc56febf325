"""Text to speech (audio/tts): espeak-ng phoneme events, silent pauses, viseme track, streaming, errors."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker_ext.audio import tts
from sadtalker_ext.audio.tts.base import MAX_CHUNK_CHARS, concat_chunks, split_sentences
from sadtalker_ext.errors import DependencyError, InputError, OptionError
from sadtalker_ext.motion.lite.visemes import phoneme_shape, visemes_from_phonemes

TEXTS = {
    "en": "Bob bought a big map. My mum makes apple pie, but Pam bakes bread.",
    "ru": "Привет, мир. Мама мыла раму, а папа читал книгу.",
    "zh": "你好，世界。我爱北京。妈妈买了很多苹果。",
}
FPS = 25.0


@pytest.fixture(scope="module")
def engine():
    return tts.get_engine()


@pytest.fixture(scope="module")
def speech(engine):
    return {lang: engine.synthesize(text, lang) for lang, text in TEXTS.items()}


def _names(events, stress=True):
    """Phoneme names without pauses (and without stress marks when stress=False)."""
    return [e.phoneme if stress else e.phoneme.lstrip("',") for e in events if not e.phoneme.startswith("_")]


@pytest.mark.parametrize("lang", list(TEXTS))
def test_events_tile_the_audio_at_sample_positions(speech, lang):
    clip, events = speech[lang]
    sr = clip.sample_rate
    assert clip.samples.dtype == np.float32 and sr == 22050
    assert np.abs(clip.samples).max() > 0.1
    assert len(events) >= 20 and all(e.alphabet == "espeak" and e.phoneme for e in events)
    assert 0.0 <= events[0].start <= 0.06
    assert np.abs(clip.samples[: int(events[0].start * sr)]).max(initial=0) < 1e-3  # nothing before the first
    assert events[-1].end == pytest.approx(clip.duration, abs=1e-9)
    for a, b in zip(events, events[1:]):
        assert b.start == pytest.approx(a.end, abs=1e-9)  # contiguous: one phoneme ends where the next starts
        assert a.end > a.start
    # times come from the engine's sample counter: whole samples
    pos = np.array([e.start for e in events] + [events[-1].end]) * sr
    assert np.abs(pos - np.round(pos)).max() < 1e-6


def test_pauses_in_events_are_silent(speech):
    """Every pause phoneme (espeak "_...") is silent in the audio, allowing 10 ms at either end."""
    checked, worst, edge_ms = 0, 0.0, []
    for lang, (clip, events) in speech.items():
        x, sr = clip.samples, clip.sample_rate
        loud = np.abs(x) > 1e-3  # -60 dBFS
        for e in events:
            if not e.phoneme.startswith("_") or e.end - e.start <= 0.02:
                continue
            a, b = int(round((e.start + 0.010) * sr)), int(round((e.end - 0.010) * sr))
            worst = max(worst, float(np.abs(x[a:b]).max()))
            checked += 1
            # how far the silent stretch extends beyond the event's edges (0 = it starts at the event)
            s0 = int(round(e.start * sr))
            before = np.nonzero(loud[:s0])[0]
            edge_ms.append(1000 * (s0 - (before[-1] + 1 if len(before) else 0)) / sr)
    print(f"{checked} pauses, max |sample| inside {worst:.2e}, silence starts up to {max(edge_ms):.1f} ms "
          f"before the pause event (median {np.median(edge_ms):.1f} ms)")
    assert checked >= 6
    assert worst < 1e-3
    # the speech stops at the pause event (a stop's closure may start the silence a little earlier)
    assert np.median(edge_ms) <= 10.0


def test_viseme_track_follows_events(speech):
    for lang, (clip, events) in speech.items():
        T = clip.num_frames(FPS)
        raw = visemes_from_phonemes(events, T, FPS, smoothing=0.0)
        inside = 0
        for f in range(T):
            lo, hi = f / FPS, (f + 1) / FPS
            ev = [e for e in events if e.start <= lo and hi <= e.end]
            if not ev:
                continue
            inside += 1
            o, w, p = phoneme_shape(ev[0].phoneme, "espeak")
            assert raw.press[f] == pytest.approx(p, abs=1e-6), (lang, f, ev[0])
            assert raw.open[f] == pytest.approx(o * (1 - p), abs=1e-6), (lang, f, ev[0])
            assert raw.width[f] == pytest.approx(w, abs=1e-6), (lang, f, ev[0])
        assert inside >= T // 4
        # with coarticulation smoothing: closures stay shut, long pauses stay closed
        smooth = visemes_from_phonemes(events, T, FPS)
        for e in events:
            f0, f1 = int(np.ceil(e.start * FPS)), int(np.floor(e.end * FPS)) - 1
            if phoneme_shape(e.phoneme, "espeak")[2] >= 1.0:
                for f in range(f0, f1 + 1):
                    assert smooth.press[f] == 1.0 and smooth.open[f] == 0.0
            if e.phoneme.startswith("_") and f1 - f0 >= 2:
                assert smooth.open[f0 + 1:f1].max() < 0.1, (lang, e)
        assert np.corrcoef(smooth.open, raw.open)[0, 1] > 0.85


def test_bilabials_and_open_vowels_are_recognised(speech):
    """Phoneme names of all three languages map to the right mouth shapes (no stress-mark misses)."""
    for lang, (_, events) in speech.items():
        shapes = [phoneme_shape(e.phoneme, "espeak") for e in events if not e.phoneme.startswith("_")]
        assert any(s[2] == 1.0 for s in shapes), lang  # p/b/m present
        assert any(s[0] >= 0.8 for s in shapes), lang  # open vowels present
        assert sum(s == (0.45, 0.0, 0.0) for s in shapes) <= len(shapes) // 10, lang  # few unknown phonemes
    assert phoneme_shape("'V", "espeak")[0] == 1.0  # espeak V = the vowel in "mum", not ARPAbet's v
    assert phoneme_shape("V")[2] > 0  # ARPAbet V (consonant) keeps its labiodental shape


def test_chinese_characters_are_read_as_mandarin(engine):
    """Characters go through espeak's Mandarin dictionary: same phonemes as the pinyin voice."""
    _, han = engine.synthesize("你好，世界。我爱北京。", "zh")
    _, pinyin = engine.synthesize("ni3 hao3, shi4 jie4. wo3 ai4 bei3 jing1.", "zh", voice="cmn-latn-pinyin")
    assert _names(han, stress=False) == _names(pinyin, stress=False)
    assert _names(han)[:4] == ["n", "i", "X", "'Au"]


def test_russian_is_read_as_russian(engine):
    _, events = engine.synthesize("Мама мыла раму.", "ru")
    assert _names(events)[:4] == ["m", "'A", "m", "a#"]


def test_duration_matches_espeak_estimate(engine):
    """Speech length vs espeak's own numbers: its end-event times and its words at the chosen rate."""
    for lang, text in TEXTS.items():
        for rate in (130, 175, 260):
            chunks = list(engine.stream(text * 3, lang, rate=rate))
            dur = sum(c.duration for c in chunks)
            reported = sum(c.engine_seconds for c in chunks)
            words = sum(c.words for c in chunks)
            nominal = words * 60.0 / rate
            print(f"{lang} rate {rate}: {dur:.2f} s, espeak says {reported:.2f} s, {words} words -> {nominal:.2f} s")
            assert abs(dur - reported) <= 0.002 * len(chunks)
            assert 0.75 <= dur / nominal <= 1.35
        # faster rate -> shorter speech
        d = [sum(c.duration for c in engine.stream(text, lang, rate=r)) for r in (100, 300)]
        assert d[1] < 0.6 * d[0]


def test_voice_rate_pitch_change_the_sound(engine):
    base, ev = engine.synthesize("Hello there.", "en")
    other, ev2 = engine.synthesize("Hello there.", "en", voice="en-gb")
    high, _ = engine.synthesize("Hello there.", "en", pitch=90)
    assert _names(ev) != _names(ev2) or len(base.samples) != len(other.samples)

    def f0(x, sr):  # autocorrelation pitch of the loudest 100 ms
        i = int(np.argmax(np.convolve(x ** 2, np.ones(2205), "same")))
        seg = x[max(0, i - 1102): i + 1102]
        ac = np.correlate(seg, seg, "full")[len(seg) - 1:]
        lo, hi = sr // 400, sr // 60
        return sr / (lo + int(np.argmax(ac[lo:hi])))
    assert f0(high.samples, high.sample_rate) > 1.15 * f0(base.samples, base.sample_rate)


def test_long_text_is_streamed_sentence_by_sentence(engine):
    sentences = [f"This is sentence number {i}, spoken on its own." for i in range(60)]
    run_on = " ".join(["and then it went on"] * 150)  # 3000 characters without a full stop
    text = " ".join(sentences) + " " + run_on + "."
    chunks = []
    for ch in engine.stream(text, "en", rate=300):
        assert len(ch.text) <= MAX_CHUNK_CHARS
        assert ch.duration < 40.0  # a chunk is a sentence, never the whole text
        chunks.append(ch)
    assert len(chunks) >= 60 + 3000 // MAX_CHUNK_CHARS
    assert [c.text for c in chunks[:60]] == sentences
    total = 0.0
    for c in chunks:  # offsets accumulate and events stay within their own chunk
        assert c.offset == pytest.approx(total, abs=1e-9)
        assert all(total - 1e-9 <= e.start < e.end <= total + c.duration + 1e-9 for e in c.events)
        total += c.duration
    clip, events = concat_chunks(iter(chunks))
    assert clip.duration == pytest.approx(total) and total > 120
    assert len(events) == sum(len(c.events) for c in chunks)
    with pytest.raises(InputError, match="minutes of speech"):
        concat_chunks(engine.stream(text, "en", rate=300), max_seconds=60)


def test_split_sentences():
    assert split_sentences("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("你好。我爱北京！好吗？") == ["你好。", "我爱北京！", "好吗？"]
    assert split_sentences("Привет, мир. Как дела?") == ["Привет, мир.", "Как дела?"]
    assert split_sentences("  ...  ") == []
    long = "word " * 300
    parts = split_sentences(long)
    assert all(len(p) <= MAX_CHUNK_CHARS for p in parts) and " ".join(parts).split() == long.split()


@pytest.mark.parametrize("text", ["", "   ", "...!?", None])
def test_empty_text_is_an_input_error(engine, text):
    with pytest.raises(InputError, match="empty|must be a string"):
        engine.synthesize(text, "en")


@pytest.mark.parametrize("lang", ["fr", "de", "", "klingon"])
def test_unsupported_language_is_an_option_error(engine, lang):
    with pytest.raises(OptionError, match="not supported; use one of en .*ru .*zh"):
        engine.synthesize("Bonjour.", lang)


def test_bad_voice_rate_pitch_engine(engine):
    with pytest.raises(OptionError, match="no voice"):
        engine.synthesize("Hello.", "en", voice="en-xx-nonexistent")
    with pytest.raises(OptionError, match="not en"):
        engine.synthesize("Hello.", "en", voice="ru")
    with pytest.raises(OptionError, match="not an espeak-ng voice name"):
        engine.synthesize("Hello.", "en", voice="../../etc/passwd;")
    with pytest.raises(OptionError, match="rate"):
        engine.synthesize("Hello.", "en", rate=20)
    with pytest.raises(OptionError, match="pitch"):
        engine.synthesize("Hello.", "en", pitch=150)
    with pytest.raises(OptionError, match="unknown speech engine"):
        tts.get_engine("nope")
    assert {"espeak-ng", "piper"} <= set(tts.available_engines())
    assert tts.is_available()


def test_piper_plugin_point():
    try:
        import piper  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    eng = tts.get_engine("piper")
    assert eng.gives_phonemes is False
    if installed:
        with pytest.raises(OptionError, match="voice"):
            eng.synthesize("Hello.", "en")
    else:
        with pytest.raises(DependencyError, match="pip install piper-tts"):
            eng.synthesize("Hello.", "en", voice="voice.onnx")
        assert not tts.is_available("piper")


def test_registry_accepts_other_engines():
    class Beep(tts.TTSEngine):
        name = "beep"

        def stream(self, text, lang="en", voice=None, rate=None, pitch=None):
            tts.check_text(text)
            self.check_language(lang)
            yield tts.SpeechChunk(samples=np.full(1600, 0.1, np.float32), sample_rate=16000, text=text)

    tts.register_engine("beep", Beep)
    clip, events = tts.synthesize("hi", "ru", engine="beep")
    assert clip.duration == pytest.approx(0.1) and events == []
    with pytest.raises(InputError):
        tts.synthesize(" ", "en", engine="beep")
