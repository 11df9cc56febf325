"""The talking-head pipeline, top to bottom.

    audio  = load_audio(path)                        # any format -> mono float32, original rate
    image  = load_image(path)                        # any format -> uint8 RGB
    engine = get_engine(options.engine)              # lite | sadtalker
    source = engine.prepare(image, options)          # face, crop, per-portrait model (once)
    motion = engine.motion(source, ctx)              # per-frame motion at 25 fps
    chunks = engine.frames(source, motion, ctx)      # rendered in chunks
    chunks = stage(chunks, ctx) for each post stage  # Wav2Lip, img2img refinement
    VideoWriter(out).write(chunk) ... commit()       # encoded as they come, renamed on success

Memory stays flat in the audio length: only the current chunk of frames is alive at any time.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .audio.decode import AudioClip, checked_clip, iter_audio, load_audio
from .engines import get_engine
from .engines.base import FrameChunk, RunContext, Stage
from .errors import GenerationInterrupted
from .io.image import load_image, to_rgb8
from .io.video_writer import AAC_RATES, AudioBlocks, VideoWriter, check_output_path
from .memory import oom_guard
from .options import GenerateOptions

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str, "np.ndarray | None"], None]


@dataclass
class Callbacks:
    """Hooks for the caller (CLI, WebUI host, HTTP API).

    progress(done_frames, total_frames, text, preview_frame_or_None) is called after each chunk;
    should_stop() is polled between chunks: returning True aborts the run (no output is left).
    """

    progress: ProgressFn | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class Result:
    """What a finished run produced."""

    path: Path
    num_frames: int
    duration: float
    size: tuple[int, int]
    engine: str
    seconds: float
    info: dict = field(default_factory=dict)


def _as_image(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return to_rgb8(image)


def _as_audio(audio) -> AudioClip:
    if isinstance(audio, AudioClip):
        return checked_clip(audio)  # a caller's clip: mono, finite, in [-1, 1] (else AudioError)
    return load_audio(audio)


@oom_guard
def generate(image, audio, out: str | os.PathLike, options: GenerateOptions | None = None, *,
             callbacks: Callbacks | None = None, engine=None, stages: Sequence[Stage] = (),
             phoneme_events=None, video=None, host_dir=None, restorer=None) -> Result:
    """Make a talking-head video.

    image: path or numpy image (any dtype/channels, see :func:`to_rgb8`). audio: path or AudioClip.
    video: path of a video to lip-sync instead of an image (``image`` is then ignored, may be None):
        its frames are looped forward-backward to the audio's length, its frame rate is kept and
        its audio replaced (:class:`~sadtalker_ext.engines.video.VideoSourceEngine`).
    The Wav2Lip lip-sync stage is appended to ``stages`` when ``options.lipsync`` asks for it, then
    the img2img refinement stage (a RefineStage given in ``stages``, else the one ``options.refine``
    asks for, with ``options.sd_checkpoint``), always last.
    out: the .mp4 to write (written to a temporary name, renamed only on success).
    host_dir: the host's models folder (searched for checkpoints after --checkpoints and the env var).
    restorer: face restoration for the lip-sync stage (e.g. the WebUI's), instead of a standalone one.
    Raises TalkingHeadError subclasses (ImageError, AudioError, NoFaceError, OptionError,
    GenerationInterrupted, OutputError, CheckpointError, ...). Never leaves a partial file at ``out``.
    Out-of-memory errors (GPU or RAM) become OutOfMemory after the run's memory is released
    (:func:`~sadtalker_ext.memory.oom_guard`).
    """
    t0 = time.perf_counter()
    options = (options or GenerateOptions()).validate()
    check_output_path(out)  # a folder, device or .avi as --out fails now, not after the render
    callbacks = callbacks or Callbacks()
    clip = _as_audio(audio)
    if video is not None:
        from .engines.video import VideoSourceEngine
        img = None
        eng = engine or VideoSourceEngine(video)
    else:
        img = _as_image(image)
        eng = engine or get_engine(options.engine, checkpoints=options.checkpoints, host_dir=host_dir)
    fps = getattr(eng, "fps", None) or options.fps  # a video source keeps its own frame rate
    num_frames = clip.num_frames(fps)
    ctx = RunContext(audio=clip, options=options, num_frames=num_frames, fps=fps,
                     should_stop=callbacks.should_stop, progress=callbacks.progress)
    stages = list(stages)
    if options.lipsync != "none":
        from .lipsync.stage import lipsync_stage_for
        lip = lipsync_stage_for(options, host_dir=host_dir, restore=restorer)
        if lip is not None:
            stages.append(lip)
    # img2img refinement runs last (after lip-sync): the caller's RefineStage, else options.refine's
    refine_stages = [s for s in stages if getattr(s, "is_refine_stage", False)]
    stages = [s for s in stages if not getattr(s, "is_refine_stage", False)]
    if not refine_stages and getattr(options, "refine", None) is not None:
        from .refine.stage import refine_stage_for
        refine = refine_stage_for(options, portrait=image if isinstance(image, (str, os.PathLike)) else None,
                                  should_stop=callbacks.should_stop)
        refine_stages = [refine] if refine is not None else []
    stages += refine_stages
    if phoneme_events is not None:
        ctx.info["phoneme_events"] = phoneme_events
    _check_stop(callbacks)
    # speech analysis that needs no face starts first and overlaps with the face (an engine's begin())
    early = eng.begin(ctx) if hasattr(eng, "begin") else None
    try:
        _report(callbacks, num_frames, f"{eng.name}: finding the face")
        source = eng.prepare(img, options)
        _check_stop(callbacks)
        _report(callbacks, num_frames, f"{eng.name}: analysing the speech")
        motion = eng.motion(source, ctx)
    finally:
        if early is not None:
            early.close()  # stops the analysis worker if the run failed before motion
    _check_stop(callbacks)
    chunks = eng.frames(source, motion, ctx)
    for stage in stages:
        chunks = stage(chunks, ctx)
    size = eng.output_size(source)
    done = 0
    writer_audio = clip.samples
    duration = clip.duration
    if (isinstance(audio, (str, os.PathLike)) and not stages and not getattr(eng, "audio_in_frames", True)
            and clip.sample_rate in AAC_RATES):
        # The engine is done with the audio (motion holds per-frame values): the writer decodes
        # the file again as it muxes, so memory does not grow with the speech's length.
        src, rate = audio, clip.sample_rate
        writer_audio = AudioBlocks(lambda: iter_audio(src, rate))
        ctx.audio = clip = AudioClip(np.zeros(1, np.float32), rate, clip.source)
    with VideoWriter(out, size, fps, audio=writer_audio, sample_rate=clip.sample_rate,
                     crf=options.crf, background=True) as writer:
        for chunk in chunks:
            writer.write(chunk.frames)
            done += len(chunk)
            if callbacks.progress is not None:
                text = f"{eng.name}: frame {done}/{num_frames}" + (f" - {ctx.status}" if ctx.status else "")
                callbacks.progress(done, num_frames, text, chunk.frames[-1])
            _check_stop(callbacks)
        path = writer.commit()
    ctx.info.pop("phoneme_events", None)
    return Result(path=path, num_frames=done, duration=duration, size=size, engine=eng.name,
                  seconds=time.perf_counter() - t0, info=dict(ctx.info))


def _report(callbacks: Callbacks, total: int, text: str) -> None:
    """Progress before the first frame (which step runs), frames done 0 of ``total``."""
    if callbacks.progress is not None:
        callbacks.progress(0, total, text, None)


def _check_stop(callbacks: Callbacks) -> None:
    if callbacks.should_stop is not None and callbacks.should_stop():
        raise GenerationInterrupted("generation was interrupted; no video was written")


def iter_frames(image, audio, options: GenerateOptions | None = None, *, engine=None):
    """Rendered chunks without encoding (for tests and other front ends). Yields FrameChunk."""
    options = (options or GenerateOptions()).validate()
    clip = _as_audio(audio)
    img = _as_image(image)
    eng = engine or get_engine(options.engine, checkpoints=options.checkpoints)
    ctx = RunContext(audio=clip, options=options, num_frames=clip.num_frames(options.fps), fps=options.fps)
    source = eng.prepare(img, options)
    motion = eng.motion(source, ctx)
    yield from eng.frames(source, motion, ctx)


__all__ = ["Callbacks", "FrameChunk", "Result", "generate", "iter_frames"]
