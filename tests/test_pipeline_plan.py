"""The run plan (pipeline.plan_run): the frame iterator tests and benches use is the run generate encodes."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.audio.events import PhonemeEvent
from sadtalker_ext.errors import GenerationInterrupted
from sadtalker_ext.frames import FrameChunk
from sadtalker_ext.io.probe import read_frames
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import Callbacks, generate, iter_frames, plan_run

LITE = dict(engine="lite", size=256, phonemes="acoustic", chunk_size=8)


@pytest.fixture(scope="module")
def speech(arctic_wav) -> AudioClip:
    clip = load_audio(arctic_wav)
    n = int(1.6 * clip.sample_rate)  # 40 frames at 25 fps: five chunks of 8
    return AudioClip(clip.samples[:n].copy(), clip.sample_rate, clip.source)


def _negative(chunks, ctx):
    for c in chunks:
        yield FrameChunk(c.start, 255 - c.frames, c.landmarks)


def test_a_stage_and_a_stop_request_take_effect_in_the_frame_iterator(astronaut, speech):
    opts = GenerateOptions(**LITE)
    plain = list(iter_frames(astronaut, speech, opts))
    assert sum(len(c) for c in plain) == 40 and [c.start for c in plain] == [0, 8, 16, 24, 32]
    staged = list(iter_frames(astronaut, speech, opts, stages=[_negative]))
    assert all(np.array_equal(s.frames, 255 - p.frames) for s, p in zip(staged, plain, strict=True))

    # a stop request after the second chunk: the iterator raises before a third chunk is rendered
    seen = []
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return len(seen) >= 2

    with pytest.raises(GenerationInterrupted):
        for chunk in iter_frames(astronaut, speech, opts, callbacks=Callbacks(should_stop=stop)):
            seen.append(chunk.start)
    assert seen == [0, 8] and calls["n"] >= 3  # polled before the face, before the motion, between chunks


def test_the_iterator_yields_the_frames_generate_encodes(tmp_path, astronaut, speech):
    opts = GenerateOptions(**LITE, crf=0)
    texts_iter, texts_gen = [], []
    frames = np.concatenate([c.frames for c in iter_frames(
        astronaut, speech, opts, callbacks=Callbacks(progress=lambda d, t, text, p: texts_iter.append(text)))])
    res = generate(astronaut, speech, tmp_path / "o.mp4", opts,
                   callbacks=Callbacks(progress=lambda d, t, text, p: texts_gen.append(text)))
    assert texts_iter == texts_gen and texts_gen[-1] == "lite: frame 40/40"
    decoded = np.stack(list(read_frames(res.path)))
    assert decoded.shape == frames.shape and res.num_frames == 40
    # crf 0 is lossless in yuv420p: only the colour conversion differs (a few levels)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3.0


class _Engine:
    """An engine double that records what the plan hands it."""

    name = "double"
    fps = 30

    def __init__(self):
        self.ctx = None

    def prepare(self, image, options):
        return image

    def output_size(self, source):
        return source.shape[1], source.shape[0]

    def motion(self, source, ctx):
        self.ctx = ctx
        return None

    def frames(self, source, motion, ctx):
        for s in range(0, ctx.num_frames, 10):
            yield FrameChunk(s, np.repeat(source[None], min(10, ctx.num_frames - s), 0))


class _Host:
    def __init__(self, engine):
        self.engine, self.progressed, self.asked = engine, [], 0

    def engine_for(self, options):
        return self.engine

    def models_dir(self):
        return None

    def progress(self, done, total, text="", preview=None):
        self.progressed.append((done, total))

    def interrupted(self):
        self.asked += 1
        return False


def test_the_plan_takes_engine_fps_callbacks_and_phoneme_events_from_the_host():
    eng = _Engine()
    host = _Host(eng)
    events = [PhonemeEvent("AA", 0.1, 0.3)]
    image = np.full((16, 24, 3), 7, np.uint8)
    clip = AudioClip(np.zeros(16000, np.float32), 16000)
    plan = plan_run(host, GenerateOptions(), image, clip, phoneme_events=events, stages=[_negative])
    assert plan.engine is eng and plan.fps == 30 and plan.num_frames == 30 and plan.stages == [_negative]
    out = list(plan.frames())
    assert eng.ctx.phoneme_events == events and "phoneme_events" not in eng.ctx.info
    assert [c.start for c in out] == [0, 10, 20] and int(out[0].frames[0, 0, 0, 0]) == 248
    assert host.progressed[-1] == (30, 30) and host.asked >= 3  # the host's progress and interrupt


def test_the_cli_writes_the_sidecar_the_tab_writes(tmp_path, astronaut, speech):
    import hashlib
    import json

    import soundfile as sf
    from PIL import Image

    from sadtalker_ext.cli.main import main

    img, wav, out = tmp_path / "face.png", tmp_path / "speech.wav", tmp_path / "talk.mp4"
    Image.fromarray(astronaut).save(img)
    sf.write(wav, speech.samples, speech.sample_rate)
    rc = main(["--quiet", "generate", "--image", str(img), "--audio", str(wav), "--out", str(out),
               "--engine", "lite", "--size", "256", "--phonemes", "acoustic", "--seed", "5"])
    assert rc == 0 and out.exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["engine"] == "lite" and meta["frames"] == 40 and meta["seed"] == 5
    assert meta["source"]["image"] == {"file": "face.png", "sha256": hashlib.sha256(img.read_bytes()).hexdigest(),
                                       "bytes": img.stat().st_size}
    assert meta["source"]["audio"]["sha256"] == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert meta["options"]["size"] == 256 and meta["info"]["viseme_source"] == "acoustic"


def test_out_of_memory_in_the_frame_iterator_becomes_one_line(monkeypatch):
    from sadtalker_ext import memory
    from sadtalker_ext.errors import OutOfMemory

    released = []
    monkeypatch.setattr(memory, "release_accelerator_memory", lambda: released.append(1))

    def oom_stage(chunks, ctx):
        for c in chunks:
            if c.start >= 10:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            yield c

    seen = []
    image = np.full((16, 24, 3), 7, np.uint8)
    clip = AudioClip(np.zeros(16000, np.float32), 16000)
    with pytest.raises(OutOfMemory, match="out of GPU memory"):
        for chunk in iter_frames(image, clip, GenerateOptions(), engine=_Engine(), stages=[oom_stage]):
            seen.append(chunk.start)
    assert seen == [0] and released == [1]  # memory released before the one-line error
