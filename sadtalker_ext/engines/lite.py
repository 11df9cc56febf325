"""The weights-free "lite" engine: mediapipe landmarks + audio-driven visemes + mesh warping.

Never imports torch. Data flow: portrait -> face landmarks -> preprocess (crop/resize/full) ->
:class:`~sadtalker_ext.render.lite.FaceModel`; audio -> VAD + loudness + formants (+ phoneme
timings when available) -> viseme track -> :class:`MotionTrack` (blinks, brows, head pose) ->
frames by piecewise-affine warping, mouth interior painted, pasted back for ``full``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..audio.decode import ANALYSIS_RATE
from ..audio.features import formants, loudness_envelope
from ..audio.vad import detect_voice
from ..face.crop import Prepared, prepare
from ..face.landmarks import find_face
from ..motion.lite import make_motion
from ..motion.lite.visemes import merge_vad, visemes_from_acoustics, visemes_from_phonemes
from ..options import GenerateOptions
from ..render.lite.renderer import LiteRenderer
from .base import FrameChunk, RunContext

log = logging.getLogger(__name__)


@dataclass
class LiteSource:
    prepared: Prepared
    renderer: LiteRenderer


class LiteEngine:
    """See module docstring. Stateless between runs; ``prepare`` builds the per-portrait model."""

    name = "lite"
    #: frames() never reads ctx.audio (motion() turned it into per-frame values), so the pipeline
    #: may drop the decoded speech before rendering.
    audio_in_frames = False

    def prepare(self, image: np.ndarray, options: GenerateOptions) -> LiteSource:
        face = find_face(image, options.face_index)
        prepared = prepare(image, face, options.preprocess, options.size, options.max_side)
        return LiteSource(prepared=prepared, renderer=LiteRenderer(prepared))

    def output_size(self, source: LiteSource) -> tuple[int, int]:
        return source.prepared.output_size

    def motion(self, source: LiteSource, ctx: RunContext):
        opts = ctx.options
        x16 = ctx.audio.resampled(ANALYSIS_RATE)
        T = ctx.num_frames
        vad = detect_voice(x16, T, ctx.fps)
        loud = loudness_envelope(x16, T, ctx.fps)
        fm = formants(x16, T, ctx.fps)
        acoustic = visemes_from_acoustics(loud, vad.prob, vad.speech, fm.f1, fm.f2)
        track = acoustic
        events = ctx.info.get("phoneme_events")
        english = opts.language.split("-")[0].split("_")[0] == "en"
        if events is None and (opts.phonemes == "pocketsphinx" or (opts.phonemes == "auto" and english)):
            from ..audio import phonemes as ph
            events = ph.align_phonemes(x16, transcript=opts.transcript,
                                       required=opts.phonemes == "pocketsphinx",
                                       should_stop=getattr(ctx, "should_stop", None))
            if events is not None:
                ctx.info["phoneme_source"] = "pocketsphinx"
        if events:
            phon = merge_vad(visemes_from_phonemes(events, T, ctx.fps), vad.speech)
            track = combine_tracks(phon, acoustic)
        ctx.info["vad"] = vad.method
        ctx.info["viseme_source"] = track.source
        return make_motion(track, ctx.fps, seed=opts.seed, pose_style=opts.pose_style, still=opts.still,
                           expression_scale=opts.expression_scale, blinks=opts.blinks)

    def frames(self, source: LiteSource, motion, ctx: RunContext) -> Iterator[FrameChunk]:
        r = source.renderer
        paste = source.prepared.paste
        n = len(motion)
        step = ctx.options.chunk_size
        w, h = source.prepared.output_size
        for start in range(0, n, step):
            stop = min(n, start + step)
            frames = np.empty((stop - start, h, w, 3), np.uint8)
            lms = np.empty((stop - start, 478, 2), np.float32)
            for j, i in enumerate(range(start, stop)):
                frame, pts = r.render_frame(motion.frame(i))
                if paste is not None:
                    paste.apply(frame, out=frames[j])
                    x0, y0, x1, y1 = paste.box
                    s = (x1 - x0) / frame.shape[1]
                    lms[j] = pts * s + np.array([x0, y0], np.float32)
                else:
                    frames[j] = frame
                    lms[j] = pts
            yield FrameChunk(start=start, frames=frames, landmarks=lms)


def combine_tracks(phon, acoustic):
    """Phoneme shapes with acoustic dynamics: the jaw follows loudness scaled by the phoneme's
    openness, width and closures come from the phonemes."""
    from ..motion.lite.visemes import VisemeTrack
    scale = 0.35 + 0.65 * np.clip(phon.open / 0.8, 0, 1.25)
    open_ = acoustic.open * scale * (1.0 - phon.press)
    return VisemeTrack(open=open_.astype(np.float32), width=phon.width, press=phon.press, source="phonemes+acoustic")
