"""The engine interface: a motion generator plus a renderer, yielding chunks of frames.

An engine turns (portrait, audio, options) into a stream of :class:`FrameChunk`. Post-processing
stages (Wav2Lip lip refinement, img2img refinement) are functions from a chunk stream to a chunk
stream, so every stage holds at most a chunk or two of frames and memory stays flat.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np

# the chunk stream's types live below the post stages that consume it (lipsync, refine); re-exported
from ..frames import FrameChunk, RunContext, Stage  # noqa: F401
from ..options import GenerateOptions


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
