"""The lite engine starts pocketsphinx's alignment before the face is prepared (issue 16), and a run that fails
or is interrupted before motion stops that worker."""
import os
import threading
import time

import numpy as np
import pytest

from sadtalker_ext.audio.decode import ANALYSIS_RATE, load_audio
from sadtalker_ext.audio.phonemes import align_phonemes
from sadtalker_ext.errors import GenerationInterrupted, NoFaceError
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import Callbacks, generate

pytest.importorskip("pocketsphinx")


def _children() -> set:
    """PIDs of this process's live child processes (from /proc)."""
    me, kids = os.getpid(), set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                if int(parts[1]) == me and parts[0] != "Z":
                    kids.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _no_alignment_left(before: set) -> bool:
    """Right after the run ended (no waiting: the worker would still be decoding 16 s of speech)."""
    return not [t for t in threading.enumerate() if t.name == "lite-alignment"] and not (_children() - before)


@pytest.fixture
def long_speech(arctic_wav):
    """16 s of speech (a0007 four times): its alignment takes seconds, longer than the failing runs below."""
    from sadtalker_ext.audio.decode import AudioClip
    clip = load_audio(arctic_wav)
    return AudioClip(np.tile(clip.samples, 4), clip.sample_rate)


def test_the_early_alignment_gives_the_events_a_direct_alignment_gives(tmp_path, astronaut, arctic_wav, monkeypatch):
    """The events the engine's motion uses are the ones align_phonemes gives on the same 16 kHz speech, and the
    alignment was started before prepare() (the face) ran."""
    from sadtalker_ext.engines import lite

    order, seen = [], {}
    real_prepare, real_visemes = lite.LiteEngine.prepare, lite.visemes_from_phonemes
    real_begin = lite.LiteEngine.begin

    def begin(self, ctx):
        job = real_begin(self, ctx)
        order.append("begin" if job is not None else "begin (none)")
        return job

    def prepare(self, image, options):
        order.append("prepare")
        return real_prepare(self, image, options)

    def visemes(events, T, fps):
        seen["events"] = events
        return real_visemes(events, T, fps)

    monkeypatch.setattr(lite.LiteEngine, "begin", begin)
    monkeypatch.setattr(lite.LiteEngine, "prepare", prepare)
    monkeypatch.setattr(lite, "visemes_from_phonemes", visemes)
    res = generate(astronaut, arctic_wav, tmp_path / "a.mp4", GenerateOptions(engine="lite", size=256))
    assert order == ["begin", "prepare"]
    assert res.info["phoneme_source"] == "pocketsphinx" and res.info["viseme_source"] == "phonemes+acoustic"
    want = align_phonemes(load_audio(arctic_wav).resampled(ANALYSIS_RATE))
    assert [(e.phoneme, e.start, e.end) for e in seen["events"]] == [(e.phoneme, e.start, e.end) for e in want]
    assert len(want) > 20


def test_no_face_stops_the_alignment_worker(tmp_path, long_speech):
    before = _children()
    blank = np.full((256, 256, 3), 127, np.uint8)
    with pytest.raises(NoFaceError):
        generate(blank, long_speech, tmp_path / "b.mp4", GenerateOptions(engine="lite", size=256))
    assert _no_alignment_left(before)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_while_the_face_is_prepared_stops_the_alignment(tmp_path, astronaut, long_speech, monkeypatch):
    from sadtalker_ext.engines import lite

    stop = threading.Event()
    real_prepare = lite.LiteEngine.prepare

    def prepare(self, image, options):
        out = real_prepare(self, image, options)
        stop.set()  # the user pressed Interrupt while the face was found
        return out

    monkeypatch.setattr(lite.LiteEngine, "prepare", prepare)
    before = _children()
    with pytest.raises(GenerationInterrupted):
        generate(astronaut, long_speech, tmp_path / "c.mp4", GenerateOptions(engine="lite", size=256),
                 callbacks=Callbacks(should_stop=stop.is_set))
    assert _no_alignment_left(before)
    assert list(tmp_path.iterdir()) == []
