"""The chunk stream: what an engine yields and every post stage (lip-sync, refinement) maps.

A post stage is a function from a chunk stream to a chunk stream (:data:`Stage`), so every stage holds
at most a chunk or two of frames and memory stays flat in the audio's length. :class:`RunContext` is
what the stages of one run share. These types sit below the stages that use them (see
tests/test_layering.py); :mod:`sadtalker_ext.engines.base` re-exports them with the engine interface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .audio.decode import AudioClip, SpooledClip
from .audio.events import PhonemeEvent
from .options import GenerateOptions


@dataclass
class FrameChunk:
    """Consecutive output frames.

    start: index of the first frame (frames at ``fps``, 0-based). frames: uint8 [n, H, W, 3] RGB.
    landmarks: float32 [n, 478, 2] face landmarks on these frames in pixels, when the engine knows
        them (the lite engine does), else None; later stages use them for masks.
    """

    start: int
    frames: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class RunContext:
    """What the engine and the stages of one run share (built by :func:`sadtalker_ext.pipeline.plan_run`).

    info: the run's report, JSON-able values only, keyed by who wrote them ("lipsync", "refine",
    "sadtalker", "video", "vad", "viseme_source", "phoneme_source"); it becomes ``Result.info`` and the
    sidecar's "info". Inputs and hand-overs between an engine's steps are typed fields below, not in it.
    """

    #: the speech: decoded in memory (AudioClip), or, for an engine with ``spooled_audio`` and nothing
    #: else reading the samples, kept in a temporary file at 16 kHz (SpooledClip, closed after motion)
    audio: AudioClip | SpooledClip
    options: GenerateOptions
    num_frames: int
    fps: int = 25
    info: dict[str, Any] = field(default_factory=dict)
    #: timed phonemes of the speech given by the caller (text-to-speech), or None: the engine finds its own
    phoneme_events: Optional[Sequence[PhonemeEvent]] = None
    #: an engine's speech analysis started by its ``begin()``, handed to its ``motion()`` (or None)
    early_alignment: Any = None
    #: the caller's interrupt check (``Callbacks.should_stop``) for long steps inside an engine, or None
    should_stop: Any = None
    #: the caller's ``progress(done, total, text, preview)`` (``Callbacks.progress``) for stages that report
    #: between chunks (the img2img refinement), or None
    progress: Any = None
    #: what a stage is doing now (e.g. "refine (img2img): call 3/12, ETA 40 s"), added to the per-chunk text
    status: str = ""


Stage = Callable[[Iterator[FrameChunk], RunContext], Iterator[FrameChunk]]

__all__ = ["FrameChunk", "RunContext", "Stage"]
