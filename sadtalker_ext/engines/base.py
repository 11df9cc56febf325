"""The engine interface: a motion generator plus a renderer, yielding chunks of frames.

An engine turns (portrait, audio, options) into a stream of :class:`FrameChunk`. Post-processing
stages (Wav2Lip lip refinement, img2img refinement) are functions from a chunk stream to a chunk
stream, so every stage holds at most a chunk or two of frames and memory stays flat.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ..audio.decode import AudioClip
from ..options import GenerateOptions


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
    """What stages need to know about the run: audio, fps, options, callbacks and a scratch dict."""

    audio: AudioClip
    options: GenerateOptions
    num_frames: int
    fps: int = 25
    info: dict[str, Any] = field(default_factory=dict)
    #: the caller's interrupt check (``Callbacks.should_stop``) for long steps inside an engine, or None
    should_stop: Any = None
    #: the caller's ``progress(done, total, text, preview)`` (``Callbacks.progress``) for stages that report
    #: between chunks (the img2img refinement), or None
    progress: Any = None
    #: what a stage is doing now (e.g. "refine (img2img): call 3/12, ETA 40 s"), added to the per-chunk text
    status: str = ""


class Engine(Protocol):
    """Motion generator + renderer behind one interface."""

    name: str

    def prepare(self, image: np.ndarray, options: GenerateOptions) -> Any:
        """Analyse the portrait once (face, crop, source features). Returns the engine's source state."""

    def output_size(self, source: Any) -> tuple[int, int]:
        """(width, height) of the frames this engine will produce for ``source``."""

    def motion(self, source: Any, ctx: RunContext) -> Any:
        """Motion for every frame (engine-specific object with ``len() == ctx.num_frames``)."""

    def frames(self, source: Any, motion: Any, ctx: RunContext) -> Iterator[FrameChunk]:
        """Render the motion in chunks of ``ctx.options.chunk_size`` frames."""


Stage = Callable[[Iterator[FrameChunk], RunContext], Iterator[FrameChunk]]
