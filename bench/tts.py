"""Text-to-speech speed on this machine (espeak-ng through ctypes).

Prints, for en/ru/zh: seconds of speech synthesised per second of wall time (a long text,
streamed sentence by sentence), phonemes per second of speech, the largest sentence chunk, and
peak RSS growth during synthesis; then the end-to-end time of ``generate --text`` (lite, 256) for
a ~10 s English text.

    python bench/tts.py [--minutes 2] [--skip-video]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENTENCES = {
    "en": "The talking head reads a script aloud, one sentence after another, with its lips in time. ",
    "ru": "Говорящая голова читает текст вслух, предложение за предложением, и губы двигаются вовремя. ",
    "zh": "这个会说话的头像一句一句地朗读文本，嘴唇和声音同步。",
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synth(minutes: float) -> None:
    from sadtalker_ext.audio import tts

    eng = tts.get_engine()
    for lang, sent in SENTENCES.items():
        one = sum(c.duration for c in eng.stream(sent, lang))
        text = sent * max(1, int(minutes * 60 / one))
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        speech, phonemes, biggest, n = 0.0, 0, 0.0, 0
        for chunk in eng.stream(text, lang):
            speech += chunk.duration
            phonemes += len(chunk.events)
            biggest = max(biggest, chunk.duration)
            n += 1
        wall = time.perf_counter() - t0
        print(f"{lang}: {speech:.0f} s of speech in {wall:.2f} s ({speech / wall:.0f}x real time), {n} chunks "
              f"(largest {biggest:.1f} s), {phonemes / speech:.1f} phonemes/s, peak RSS +{_rss_mb() - rss0:.0f} MB")


def video() -> None:
    from skimage import data

    from sadtalker_ext.audio import tts
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate

    text = ("Good morning. Today we will look at how a talking head is made from a single photo. "
            "The speech is synthesised offline, and every phoneme tells the mouth what to do.")
    t0 = time.perf_counter()
    clip, events = tts.synthesize(text, "en")
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = generate(data.astronaut(), clip, Path(d) / "tts.mp4", GenerateOptions(engine="lite", size=256),
                       phoneme_events=events)
    t2 = time.perf_counter()
    print(f"generate --text (lite, 256): {clip.duration:.1f} s of speech, synthesis {t1 - t0:.2f} s, "
          f"video {t2 - t1:.1f} s ({res.num_frames} frames, RTF {(t2 - t0) / clip.duration:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="speech per language for the speed test")
    ap.add_argument("--skip-video", action="store_true")
    args = ap.parse_args()
    synth(args.minutes)
    if not args.skip_video:
        video()


if __name__ == "__main__":
    main()
