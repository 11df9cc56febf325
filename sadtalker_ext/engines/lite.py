"""The weights-free "lite" engine: mediapipe landmarks + audio-driven visemes + mesh warping.

Never imports torch. Data flow: portrait -> face landmarks -> preprocess (crop/resize/full) ->
:class:`~sadtalker_ext.render.lite.FaceModel`; audio -> VAD + loudness + formants (+ phoneme
timings when available) -> viseme track -> :class:`MotionTrack` (blinks, brows, head pose) ->
frames by piecewise-affine warping, mouth interior painted, pasted back for ``full``.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterator, Optional

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


class EarlyAlignment:
    """pocketsphinx's phoneme alignment started before the face is prepared (issue 16: the two overlap).

    The decode runs in :func:`~sadtalker_ext.audio.phonemes.align_phonemes`' worker process; a thread of
    this process only waits on its pipes (no GIL held). :meth:`result` waits for the events (or None)
    and re-raises what the alignment raised; :meth:`close` stops the worker if it still runs
    (idempotent; the pipeline calls it when the run ends, also by an error before motion).

    x16: float32 [n] mono 16 kHz, an array or file-backed SpooledSamples (kept for the rest of the
    speech analysis).
    """

    def __init__(self, x16: np.ndarray, transcript: Optional[str], required: bool, should_stop=None):
        from ..audio import phonemes as ph

        self.x16 = x16
        self._cancel = threading.Event()
        self._future: Future = Future()
        outer = should_stop

        def stop() -> bool:
            return self._cancel.is_set() or bool(outer is not None and outer())

        def run() -> None:
            try:
                self._future.set_result(ph.align_phonemes(x16, transcript=transcript, required=required,
                                                          should_stop=stop))
            except BaseException as exc:  # noqa: BLE001 - handed to result(), raised in the run's thread
                self._future.set_exception(exc)

        self._thread = threading.Thread(target=run, name="lite-alignment", daemon=True)
        self._thread.start()

    def result(self):
        """The phoneme events (list of PhonemeEvent) or None; raises as align_phonemes does."""
        return self._future.result()

    def close(self) -> None:
        self._cancel.set()
        self._thread.join()


class LiteEngine:
    """See module docstring. Stateless between runs; ``prepare`` builds the per-portrait model."""

    name = "lite"
    #: frames() never reads ctx.audio (motion() turned it into per-frame values), so the pipeline
    #: may drop the decoded speech before rendering.
    audio_in_frames = False
    #: begin() and motion() read ctx.audio only as ``resampled(ANALYSIS_RATE)`` by slices, so the pipeline
    #: may hand a speech file over as a SpooledClip (16 kHz in a temporary file, never held in memory).
    spooled_audio = True

    @staticmethod
    def _wants_alignment(ctx: RunContext) -> bool:
        opts = ctx.options
        english = opts.language.split("-")[0].split("_")[0] == "en"
        return ctx.phoneme_events is None and (
            opts.phonemes == "pocketsphinx" or (opts.phonemes == "auto" and english))

    def begin(self, ctx: RunContext) -> Optional[EarlyAlignment]:
        """Start the speech analysis that does not need the face (pocketsphinx's alignment, ~0.2 s per
        second of speech in a worker process) before :meth:`prepare`, so the two overlap. Returns the
        handle (the pipeline closes it when the run ends) or None when no alignment runs."""
        if not self._wants_alignment(ctx):
            return None
        from ..audio.phonemes import _find_spec
        if _find_spec("pocketsphinx") is None and ctx.options.phonemes != "pocketsphinx":
            return None
        job = EarlyAlignment(ctx.audio.resampled(ANALYSIS_RATE), ctx.options.transcript,
                             ctx.options.phonemes == "pocketsphinx", getattr(ctx, "should_stop", None))
        ctx.early_alignment = job
        return job

    def prepare(self, image: np.ndarray, options: GenerateOptions) -> LiteSource:
        face = find_face(image, options.face_index)
        prepared = prepare(image, face, options.preprocess, options.size, options.max_side)
        return LiteSource(prepared=prepared, renderer=LiteRenderer(prepared))

    def output_size(self, source: LiteSource) -> tuple[int, int]:
        return source.prepared.output_size

    def motion(self, source: LiteSource, ctx: RunContext):
        opts = ctx.options
        early, ctx.early_alignment = ctx.early_alignment, None
        x16 = early.x16 if early is not None else ctx.audio.resampled(ANALYSIS_RATE)
        T = ctx.num_frames
        vad = detect_voice(x16, T, ctx.fps)
        loud = loudness_envelope(x16, T, ctx.fps)
        fm = formants(x16, T, ctx.fps)
        acoustic = visemes_from_acoustics(loud, vad.prob, vad.speech, fm.f1, fm.f2)
        track = acoustic
        events = ctx.phoneme_events
        if events is None and (early is not None or self._wants_alignment(ctx)):
            if early is not None:
                events = early.result()
            else:
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
