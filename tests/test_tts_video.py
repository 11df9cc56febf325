"""Text -> talking head end to end (lite engine, size 256): English through the CLI, Russian and
Chinese through pipeline.generate; measured on the written MP4 (decoded audio, landmarks on frames)."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker_ext.audio import tts
from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.audio.features import loudness_envelope
from sadtalker_ext.audio.vad import detect_voice
from sadtalker_ext.cli.main import main as cli_main
from sadtalker_ext.face.landmarks import detect_faces
from sadtalker_ext.face.measure import mouth_opening
from sadtalker_ext.io.probe import probe, read_frames
from sadtalker_ext.motion.lite.visemes import phoneme_shape
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import generate

FPS = 25.0
EN_TEXT = "My mother bought a new map. Please help me move the big box. My father bought a new car last week."
RU_TEXT = "Мама мыла раму, а папа читал книгу. Завтра мы поедем в большой парк."
ZH_TEXT = "我们今天去北京。妈妈买了很多苹果和面包。"


@pytest.fixture(scope="module")
def en_video(tmp_path_factory, astronaut):
    from PIL import Image
    d = tmp_path_factory.mktemp("tts_en")
    img = d / "portrait.png"
    Image.fromarray(astronaut).save(img)
    out = d / "en.mp4"
    rc = cli_main(["--quiet", "generate", "--image", str(img), "--text", EN_TEXT, "--lang", "en",
                   "--size", "256", "--seed", "2", "--out", str(out)])
    assert rc == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def other_videos(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("tts_other")
    out = {}
    for lang, text in (("ru", RU_TEXT), ("zh", ZH_TEXT)):
        clip, events = tts.synthesize(text, lang)
        path = d / f"{lang}.mp4"
        res = generate(astronaut, clip, path, GenerateOptions(engine="lite", size=256, seed=2),
                       phoneme_events=events)
        out[lang] = (path, res, clip, events)
    return out


def _expected(text, lang, rate=175):
    chunks = list(tts.get_engine().stream(text, lang, rate=rate))
    words = sum(c.words for c in chunks)
    return sum(c.duration for c in chunks), words * 60.0 / rate


def _check_length(path, text, lang):
    info = probe(path)
    dur, nominal = _expected(text, lang)
    print(f"{lang}: video audio {info.audio_duration:.2f} s, synthesised {dur:.2f} s, espeak estimate "
          f"{nominal:.2f} s (words x 60 / rate), {info.num_frames} frames")
    assert info.audio_codec == "aac" and info.sample_rate == 22050
    assert abs(info.audio_duration - dur) <= 0.05
    assert abs(info.num_frames - round(dur * FPS)) <= 1
    assert abs(info.audio_duration / nominal - 1.0) <= 0.20
    return info


def _speech_matches(path, clip, events):
    """The video's audio is the synthesised speech: same loudness contour, voice activity in the
    phonemes and none in the long pauses."""
    got = load_audio(path).resampled(16000)
    ref = clip.resampled(16000)
    T = clip.num_frames(FPS)
    n = min(len(got), len(ref))
    a, b = loudness_envelope(got[:n], T), loudness_envelope(ref[:n], T)
    r = float(np.corrcoef(a, b)[0, 1])
    vad = detect_voice(got, T)
    phon = np.zeros(T, bool)
    pause = np.zeros(T, bool)
    for e in events:
        f0, f1 = int(np.ceil(e.start * FPS)), int(np.floor(e.end * FPS))
        (pause if e.phoneme.startswith("_") else phon)[f0:f1] = True
    speech_in_phon = vad.speech[phon & ~pause].mean()
    return r, speech_in_phon


def test_english_video_length_and_lite_wiring(en_video):
    _check_length(en_video, EN_TEXT, "en")


def test_english_is_intelligible(en_video):
    """pocketsphinx (open vocabulary, its default language model) on the MP4's decoded audio."""
    from pocketsphinx import Decoder
    x = load_audio(en_video).resampled(16000)
    dec = Decoder(samprate=16000, loglevel="FATAL")
    dec.start_utt()
    dec.process_raw((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    dec.end_utt()
    hyp = dec.hyp().hypstr.split() if dec.hyp() is not None else []
    ref = [w.strip(".,").lower() for w in EN_TEXT.split()]
    rate = sum(w in hyp for w in ref) / len(ref)
    print(f"pocketsphinx heard: {' '.join(hyp)!r}; {rate:.0%} of the {len(ref)} words")
    assert rate > 0.5


def test_bilabials_close_the_mouth_on_output_frames(en_video):
    """Frames centred in p/b/m: mouth opening <= 0.3 x the median opening of open-vowel frames."""
    _, events = tts.synthesize(EN_TEXT, "en")  # deterministic: the events the CLI used
    kind = {}
    for f in range(probe(en_video).num_frames):
        t = (f + 0.5) / FPS
        ev = next((e for e in events if e.start <= t < e.end), None)
        if ev is None:
            continue
        o, _, p = phoneme_shape(ev.phoneme, ev.alphabet)
        if p >= 1.0:
            kind[f] = "bilabial"
        elif o >= 0.8:
            kind[f] = "open"
    opening = {}
    for f, frame in enumerate(read_frames(en_video)):
        if f in kind:
            faces = detect_faces(frame)
            assert faces, f"no face on output frame {f}"
            opening[f] = mouth_opening(faces[0].points)
    bil = np.array([opening[f] for f in kind if kind[f] == "bilabial"])
    vow = np.array([opening[f] for f in kind if kind[f] == "open"])
    ratio = bil.max() / np.median(vow)
    print(f"{len(bil)} bilabial frames: max opening {bil.max():.3f}, mean {bil.mean():.3f}; {len(vow)} open-vowel "
          f"frames: median {np.median(vow):.3f}; max/median = {ratio:.2f}")
    assert len(bil) >= 8 and len(vow) >= 8
    assert np.median(vow) > 0.08  # the mouth really opens on vowels
    assert ratio <= 0.3


@pytest.mark.parametrize("lang,text", [("ru", RU_TEXT), ("zh", ZH_TEXT)])
def test_russian_and_chinese_videos(other_videos, lang, text):
    path, res, clip, events = other_videos[lang]
    _check_length(path, text, lang)
    assert res.info.get("viseme_source") == "phonemes+acoustic"
    assert res.info.get("phoneme_source") != "pocketsphinx"  # the TTS events were used, not recognition
    r, speech = _speech_matches(path, clip, events)
    print(f"{lang}: loudness r={r:.3f} vs synthesised, voice activity in {speech:.0%} of phoneme frames")
    assert r > 0.9 and speech > 0.8


def test_cli_text_errors(tmp_path, astronaut, capsys):
    from PIL import Image
    img = tmp_path / "p.png"
    Image.fromarray(astronaut).save(img)
    out = tmp_path / "x.mp4"
    for args, msg in ((["--text", "  "], "empty"), (["--text", "Bonjour", "--lang", "fr"], "not supported"),
                      (["--text", "Hi", "--rate", "1000"], "rate")):
        rc = cli_main(["generate", "--image", str(img), "--out", str(out)] + args)
        assert rc == 2 and msg in capsys.readouterr().err
        assert not out.exists()
    with pytest.raises(SystemExit):  # --audio and --text together
        cli_main(["generate", "--image", str(img), "--out", str(out), "--text", "Hi", "--audio", "a.wav"])
