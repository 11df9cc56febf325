"""The talking-head pipeline, top to bottom. :func:`plan_run` builds a run (the first four lines, the
stages and the context); :meth:`RunPlan.frames` runs the rest without the writer, :meth:`RunPlan.write`
with it; :func:`generate` and :func:`iter_frames` are those two.

    audio  = load_audio(path)                        # any format -> mono float32, original rate
                                                     # (lite: spool_audio(path), 16 kHz in a temp file)
    image  = load_image(path)                        # any format -> uint8 RGB
    engine = host.engine_for(options) or get_engine(options.engine)   # lite | sadtalker | video source
    source = engine.prepare(image, options)          # face, crop, per-portrait model (once)
    motion = engine.motion(source, ctx)              # per-frame motion at 25 fps
    chunks = engine.frames(source, motion, ctx)      # rendered in chunks
    chunks = stage(chunks, ctx) for each post stage  # Wav2Lip, img2img refinement
    VideoWriter(out).write(chunk) ... commit()       # encoded as they come, renamed on success

Memory stays flat in the audio length: only the current chunk of frames is alive at any time; for the
lite engine given a speech file (and no stage reading the samples) the speech is analysed from a
temporary file (:func:`~sadtalker_ext.audio.decode.spool_audio`) and muxed from the file again.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .audio.decode import AudioClip, SpooledClip, checked_clip, iter_audio, load_audio, spool_audio
from .engines import get_engine, resolve_engine_name
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


def _as_audio(audio, spooled: bool = False) -> AudioClip | SpooledClip:
    """The run's speech: a caller's clip checked, a file decoded; with ``spooled`` a file is kept at
    16 kHz in a temporary file instead (unless its rate is one AAC cannot hold: the writer then
    resamples the samples in memory; or the temporary folder refuses the file: decoded in memory)."""
    if isinstance(audio, AudioClip):
        return checked_clip(audio)  # a caller's clip: mono, finite, in [-1, 1] (else AudioError)
    if spooled:
        try:
            clip = spool_audio(audio)
        except OSError as exc:  # the temporary folder is full or limited: the run goes on in memory
            log.warning("cannot keep the speech in a temporary file (%s); decoding it in memory", exc)
        else:
            if clip.sample_rate in AAC_RATES:
                return clip
            clip.close()
    return load_audio(audio)


def _spools(engine, options: GenerateOptions, audio, video, stages, host_dir) -> bool:
    """Whether the run may keep its speech in a temporary file: a speech file, an engine that reads
    it by slices only (``spooled_audio``: the lite engine), and no stage that reads the samples."""
    if not isinstance(audio, (str, os.PathLike)) or video is not None or stages:
        return False
    if options.lipsync != "none" or options.refine is not None:
        return False
    if engine is not None:
        return bool(getattr(engine, "spooled_audio", False))
    return resolve_engine_name(options.engine, options.checkpoints, host_dir) == "lite"


@dataclass
class RunPlan:
    """One run, built by :func:`plan_run`: the engine, its post stages in order, the run's context.

    :meth:`frames` yields the chunks every stage has seen (progress reported and stop requests
    honoured between chunks, as in a written run); :meth:`write` encodes the same chunks into an .mp4.
    A plan runs once.
    """

    engine: Any
    #: post stages in the order they run: the caller's, then lip-sync, then the img2img refinement (last)
    stages: list
    ctx: RunContext
    #: the portrait, uint8 RGB [H, W, 3] (None for a video source)
    image: "np.ndarray | None"
    callbacks: Callbacks
    #: the caller's audio as given (a path is re-decoded by the writer when the engine is done with it)
    audio: Any = None
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    size: "tuple[int, int] | None" = None

    @property
    def fps(self) -> int:
        return self.ctx.fps

    @property
    def num_frames(self) -> int:
        return self.ctx.num_frames

    def _chunks(self) -> Iterator[FrameChunk]:
        """Face, motion, then the engine's chunks through every stage (nothing rendered yet)."""
        eng, ctx, callbacks = self.engine, self.ctx, self.callbacks
        _check_stop(callbacks)
        # speech analysis that needs no face starts first and overlaps with the face (an engine's begin())
        early = eng.begin(ctx) if hasattr(eng, "begin") else None
        try:
            _report(callbacks, ctx.num_frames, f"{eng.name}: finding the face")
            source = eng.prepare(self.image, ctx.options)
            _check_stop(callbacks)
            _report(callbacks, ctx.num_frames, f"{eng.name}: analysing the speech")
            motion = eng.motion(source, ctx)
        finally:
            if early is not None:
                early.close()  # stops the analysis worker if the run failed before motion
            if isinstance(ctx.audio, SpooledClip):
                ctx.audio.close()  # motion holds per-frame values; the writer decodes the file again
        _check_stop(callbacks)
        chunks = eng.frames(source, motion, ctx)
        for stage in self.stages:
            chunks = stage(chunks, ctx)
        self.size = eng.output_size(source)
        return chunks

    def _stream(self, chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        callbacks, ctx, name = self.callbacks, self.ctx, self.engine.name
        for chunk in chunks:
            yield chunk
            self.done += len(chunk)
            if callbacks.progress is not None:
                text = f"{name}: frame {self.done}/{ctx.num_frames}" + (f" - {ctx.status}" if ctx.status else "")
                callbacks.progress(self.done, ctx.num_frames, text, chunk.frames[-1])
            _check_stop(callbacks)

    @oom_guard
    def frames(self) -> Iterator[FrameChunk]:
        """The run's chunks without encoding (tests, benches, other front ends). Yields FrameChunk."""
        yield from self._stream(self._chunks())

    @oom_guard
    def write(self, out: "str | os.PathLike") -> Result:
        """Encode the run into ``out`` (.mp4; a temporary name renamed only on success). Returns Result."""
        chunks = self._chunks()
        eng, ctx = self.engine, self.ctx
        clip = ctx.audio
        duration = clip.duration
        audio = self.audio
        if (isinstance(audio, (str, os.PathLike)) and not self.stages and not getattr(eng, "audio_in_frames", True)
                and clip.sample_rate in AAC_RATES):
            # The engine is done with the audio (motion holds per-frame values): the writer decodes
            # the file again as it muxes, so memory does not grow with the speech's length.
            src, rate = audio, clip.sample_rate
            writer_audio = AudioBlocks(lambda: iter_audio(src, rate))
            ctx.audio = clip = AudioClip(np.zeros(1, np.float32), rate, clip.source)
        else:
            writer_audio = clip.samples
        with VideoWriter(out, self.size, ctx.fps, audio=writer_audio, sample_rate=clip.sample_rate,
                         crf=ctx.options.crf, background=True) as writer:
            for chunk in self._stream(chunks):
                writer.write(chunk.frames)
            path = writer.commit()
        return Result(path=path, num_frames=self.done, duration=duration, size=self.size, engine=eng.name,
                      seconds=time.perf_counter() - self.started, info=dict(ctx.info))


def _host_restorer(host, options: GenerateOptions):
    """The host's own face restoration for the lip-sync stage, when the user asked for restoration
    and the host has restorers (the WebUI); None lets the stage load a standalone one."""
    if options.restore == "none" or not getattr(host, "provides_face_restoration", False):
        return None
    return host.restore_faces


def plan_run(host, options: GenerateOptions | None = None, image=None, audio=None, *, video=None,
             stages: Sequence[Stage] = (), phoneme_events=None, engine=None, callbacks: Callbacks | None = None,
             host_dir=None, restorer=None) -> RunPlan:
    """Build one run: the one place that picks the engine, orders the stages and fixes fps and length.

    host: a :class:`~sadtalker_ext.host.base.Host` or None (standalone). With a host, its
        ``engine_for(options)`` (when it has one) gives the engine, its models folder is searched, its
        ``progress`` / ``interrupted`` are the callbacks (unless ``callbacks`` is given), its face
        restoration serves the lip-sync stage and its img2img model the refinement (unless
        ``options.sd_checkpoint`` names one).
    image: path or numpy image (any dtype/channels, see :func:`to_rgb8`); ignored with ``video``.
    audio: path or AudioClip. video: a video to lip-sync instead of an image
        (:class:`~sadtalker_ext.engines.video.VideoSourceEngine`; its frame rate is kept).
    stages: the caller's post stages; the Wav2Lip stage is appended when ``options.lipsync`` asks for
        it, then the img2img refinement (a RefineStage in ``stages``, else the one ``options.refine``
        asks for), always last.
    phoneme_events: timed phonemes of the speech (e.g. from text-to-speech) for the lite engine.
    Raises the errors of :func:`generate` that come before the first frame (ImageError, AudioError,
    OptionError, DependencyError, CheckpointError, ...); nothing is rendered until the plan runs.
    """
    options = (options or GenerateOptions()).validate()
    if host is not None:
        if callbacks is None:
            callbacks = Callbacks(progress=host.progress, should_stop=host.interrupted)
        host_dir = host_dir if host_dir is not None else host.models_dir()
        if restorer is None:
            restorer = _host_restorer(host, options)
        engine_for = getattr(host, "engine_for", None)
        if engine is None and video is None and callable(engine_for):
            engine = engine_for(options)
    callbacks = callbacks or Callbacks()
    clip = _as_audio(audio, spooled=_spools(engine, options, audio, video, stages, host_dir))
    if video is not None:
        from .engines.video import VideoSourceEngine
        img = None
        eng = engine or VideoSourceEngine(video)
    else:
        img = _as_image(image)
        eng = engine or get_engine(options.engine, checkpoints=options.checkpoints, host_dir=host_dir)
    fps = getattr(eng, "fps", None) or options.fps  # a video source keeps its own frame rate
    ctx = RunContext(audio=clip, options=options, num_frames=clip.num_frames(fps), fps=fps,
                     should_stop=callbacks.should_stop, progress=callbacks.progress,
                     phoneme_events=phoneme_events)
    stages = list(stages)
    if options.lipsync != "none":
        from .lipsync.stage import lipsync_stage_for
        lip = lipsync_stage_for(options, host_dir=host_dir, restore=restorer)
        if lip is not None:
            stages.append(lip)
    # img2img refinement runs last (after lip-sync): the caller's RefineStage, else options.refine's
    refine_stages = [s for s in stages if getattr(s, "is_refine_stage", False)]
    stages = [s for s in stages if not getattr(s, "is_refine_stage", False)]
    if not refine_stages and options.refine is not None:
        from .refine.stage import refine_stage_for
        refine = refine_stage_for(options, host=host, should_stop=callbacks.should_stop,
                                  portrait=image if isinstance(image, (str, os.PathLike)) else None)
        refine_stages = [refine] if refine is not None else []
    return RunPlan(engine=eng, stages=stages + refine_stages, ctx=ctx, image=img, callbacks=callbacks, audio=audio)


def generate(image, audio, out: str | os.PathLike, options: GenerateOptions | None = None, *,
             callbacks: Callbacks | None = None, engine=None, stages: Sequence[Stage] = (),
             phoneme_events=None, video=None, host_dir=None, restorer=None, host=None) -> Result:
    """Make a talking-head video: :func:`plan_run` then :meth:`RunPlan.write`.

    image: path or numpy image (any dtype/channels, see :func:`to_rgb8`). audio: path or AudioClip.
    video: path of a video to lip-sync instead of an image (``image`` is then ignored, may be None):
        its frames are looped forward-backward to the audio's length, its frame rate is kept and
        its audio replaced (:class:`~sadtalker_ext.engines.video.VideoSourceEngine`).
    The Wav2Lip lip-sync stage is appended to ``stages`` when ``options.lipsync`` asks for it, then
    the img2img refinement stage (a RefineStage given in ``stages``, else the one ``options.refine``
    asks for, with ``options.sd_checkpoint`` or the host's model), always last.
    out: the .mp4 to write (written to a temporary name, renamed only on success).
    host: the Host the run belongs to (see :func:`plan_run`), or None.
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
    plan = _planned(host, options, image, audio, video=video, stages=stages, phoneme_events=phoneme_events,
                    engine=engine, callbacks=callbacks, host_dir=host_dir, restorer=restorer)
    plan.started = t0
    return plan.write(out)


_planned = oom_guard(plan_run)


def _report(callbacks: Callbacks, total: int, text: str) -> None:
    """Progress before the first frame (which step runs), frames done 0 of ``total``."""
    if callbacks.progress is not None:
        callbacks.progress(0, total, text, None)


def _check_stop(callbacks: Callbacks) -> None:
    if callbacks.should_stop is not None and callbacks.should_stop():
        raise GenerationInterrupted("generation was interrupted; no video was written")


def iter_frames(image, audio, options: GenerateOptions | None = None, *, engine=None, host=None,
                video=None, stages: Sequence[Stage] = (), phoneme_events=None, callbacks: Callbacks | None = None,
                host_dir=None, restorer=None) -> Iterator[FrameChunk]:
    """The chunks :func:`generate` would encode, without encoding (tests, benches, other front ends):
    the same :func:`plan_run` (engine, stages, fps, phoneme events, stop requests, progress).
    Yields FrameChunk."""
    plan = _planned(host, options, image, audio, video=video, stages=stages, phoneme_events=phoneme_events,
                    engine=engine, callbacks=callbacks, host_dir=host_dir, restorer=restorer)
    yield from plan.frames()


__all__ = ["Callbacks", "FrameChunk", "Result", "RunPlan", "generate", "iter_frames", "plan_run"]
