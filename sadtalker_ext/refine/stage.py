"""img2img refinement as a pipeline stage (``--refine keyframes.json``).

A :data:`~sadtalker_ext.engines.base.Stage`: it consumes the :class:`FrameChunk` stream and yields
the same frames with the face (or mouth, or whole frame) region repainted by Stable Diffusion
img2img under a :class:`~.keyframes.KeyframeSchedule`.

Per frame ``t`` (parameters ``p = schedule.params_at(t)``): landmarks from ``chunk.landmarks`` or
detected (:func:`~sadtalker_ext.face.landmarks.detect_faces`, the ``face_index``-th largest face);
masks and the square crop box from :func:`.regions.frame_regions`; no face -> the frame passes
through bit-exactly.

**every** mode: crops at the model's native resolution (:func:`.regions.crop_resize`) go to the
backend in batches of ``batch_size`` frames - one backend call per batch; batches never straddle a
keyframe, and a batch uses the SD parameters (prompts, strength, CFG, steps, sampler, seed) of its
first frame while masks, blur and padding stay per frame (backends with ``per_image_masks =
False``, such as the host's, get the union of the batch's masks so that the host can batch them;
the paste-back still uses each frame's own mask). Every image gets the same seed (hence
the same initial noise) unless ``same_noise`` is False (``seed + frame index``). Each output crop
is resized back and composited with the frame's feathered mask (:func:`.regions.paste_back`).
Memory: at most ``batch_size + chunk_size`` frames.

**keyframes** mode: only the keyframe frames inside the video go to the backend (one call each,
batch of one); every other frame gets the keyframes' refinement carried by dense optical flow
(:mod:`.flow`): the residuals of the previous and next keyframes, warped, weighted by
:func:`.flow.blend_weight` and a photometric confidence, pasted with the frame's own feathered
mask. Frames before the first keyframe use the first keyframe only, frames after the last one the
last keyframe only. Lookahead and memory bound: a frame that needs the next keyframe waits for
it, so the stage holds the frames between two consecutive keyframes, at most ``limit - 1`` of
them, where ``limit = floor(max_buffer_mb MiB / bytes per frame)`` (1024 MiB: 1365 frames =
54 s at 512x512, 172 frames = 6.9 s at 1920x1080), plus two keyframes (frame + residual crop).
Waiting frames hold only their pixels and landmarks (masks are built when a frame is finished and
kept as crops of the face window), and a keyframe hands them on in chunks of 25.
When keyframes are farther apart than ``limit`` frames, the hand-over to the next keyframe happens
over its last ``limit`` frames (see :func:`.flow.blend_weight`) instead of the whole gap.

In both modes pixels outside a frame's feathered mask are bit-exact copies of the input frame.
The seed -1 is replaced by one seed per run drawn from ``options.seed`` (same options, same video).
``should_stop()`` is polled before every backend call (raises GenerationInterrupted). Statistics
of the last run are in :attr:`RefineStage.stats` and ``ctx.info["refine"]``.
"""
from __future__ import annotations

import bisect
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence

import numpy as np

from ..frames import FrameChunk, RunContext
from ..errors import GenerationInterrupted, InputError, OptionError
from .flow import FlowCarrier, KeyResidual, blend_weight, union_box
from .keyframes import MODES, KeyframeSchedule, RefineParams, portrait_prompt
from .params import Img2ImgRequest
from ..face.masks import _image, composite
from .regions import Regions, crop_resize, frame_regions, paste_back, target_size

log = logging.getLogger(__name__)

__all__ = ["RefineStage", "RefineStats", "refine_stage_for", "load_schedule", "buffer_limit"]

def buffer_limit(max_buffer_mb: float, frame_shape: Sequence[int]) -> int:
    """Frames the keyframes mode may buffer: ``floor(max_buffer_mb * 2**20 / (H * W * 3))``, >= 2."""
    per = int(frame_shape[0]) * int(frame_shape[1]) * 3
    return max(2, int(float(max_buffer_mb) * 2 ** 20 // max(1, per)))


@dataclass
class RefineStats:
    """What the last run did: backend calls, frames sent to SD, frames given carried refinement,
    frames passed through (no face), keyframes past the video's end, backend seconds, the seed."""

    mode: str = ""
    sd_calls: int = 0
    sd_frames: int = 0
    carried_frames: int = 0
    passed_frames: int = 0
    keyframes_beyond_end: int = 0
    max_buffered: int = 0
    sd_seconds: float = 0.0
    seed: Optional[int] = None
    backend: str = ""


_UNSET: Any = object()


@dataclass
class _Item:
    index: int
    frame: np.ndarray
    landmarks: Optional[np.ndarray]     # as given by the chunk (passed on unchanged)
    params: RefineParams
    lm: Optional[np.ndarray]            # landmarks for the masks (given or detected; None = no face)
    _regions: Any = _UNSET              # computed on first use (frames waiting in a buffer hold none)
    out: Optional[np.ndarray] = None

    @property
    def regions(self) -> Optional[Regions]:
        if self._regions is _UNSET:
            p = self.params
            self._regions = frame_regions(self.frame.shape, self.lm, p.mask, p.mask_blur, p.padding)
        return self._regions

    def done(self) -> None:
        """Free the masks once the frame is finished."""
        self._regions = None


class RefineStage:
    """The refinement stage (see the module doc).

    schedule: a validated :class:`KeyframeSchedule`. backend: a :class:`~.backends.RefineBackend`
    (or any callable ``request -> images``, native size 512). mode / batch_size override the
    schedule's. face_index: which face when landmarks are detected here (0 = largest). detect:
    replacement for the face detector (tests): ``frame -> landmarks [478, 2] | None``.
    seed: the run's seed (``options.seed``) from which seed -1 is drawn. should_stop: polled
    before each backend call.
    """

    is_refine_stage = True
    _EMIT = 25  #: frames per output chunk when a keyframe releases the frames waiting for it

    def __init__(self, schedule: KeyframeSchedule, backend: Any, *, mode: Optional[str] = None,
                 batch_size: Optional[int] = None, face_index: int = 0,
                 detect: Optional[Callable[[np.ndarray], Optional[np.ndarray]]] = None, seed: int = 0,
                 should_stop: Optional[Callable[[], bool]] = None):
        self.schedule = schedule.validate()
        self.mode = mode or schedule.mode
        if self.mode not in MODES:
            raise OptionError(f"--refine-mode {self.mode!r} is not valid; use one of {', '.join(MODES)}")
        self.batch_size = int(batch_size or schedule.batch_size)
        if not 1 <= self.batch_size <= 64:
            raise OptionError(f"refine batch size must be in 1..64, got {self.batch_size}")
        if not hasattr(backend, "native_size"):
            from .backends import CallableBackend
            backend = CallableBackend(backend)
        self.backend = backend
        self.face_index = int(face_index)
        self._detect = detect
        self.seed = int(seed)
        self.should_stop = should_stop
        self.stats = RefineStats()
        self._native: Optional[int] = None
        self._ctx: Optional[RunContext] = None  # the running video's context (progress reports)
        self._emitted = 0
        self._calls_total = 0
        self._check_samplers()

    def _check_samplers(self) -> None:
        known = getattr(self.backend, "samplers", None)
        if known is None:
            from .backends import DiffusersBackend, SAMPLERS
            if isinstance(self.backend, DiffusersBackend):
                known = SAMPLERS
        if known is None:
            return
        names = {self.schedule.defaults.sampler} | {kf.sampler for kf in self.schedule.keyframes if kf.sampler}
        bad = sorted(n for n in names if n not in known)
        if bad:
            raise OptionError(f"sampler {bad[0]!r} is not available with the {self.backend.name} backend; "
                              f"use one of {', '.join(known)}")

    # -- helpers ------------------------------------------------------------------------------------
    def _random_seed(self) -> int:
        return int(np.random.default_rng([self.seed & (2 ** 63 - 1), 0x5EED]).integers(0, 2 ** 32))

    def _native_size(self) -> int:
        if self._native is None:
            self._native = int(self.backend.native_size())
        return self._native

    def _landmarks(self, frame: np.ndarray, given: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if given is not None:
            return given
        if self._detect is not None:
            return self._detect(frame)
        from ..face.landmarks import detect_faces
        faces = detect_faces(frame)
        if not faces:
            return None
        return np.asarray(faces[min(self.face_index, len(faces) - 1)].points[:, :2], dtype=np.float32)

    def _item(self, index: int, frame: np.ndarray, lms: Optional[np.ndarray], params: RefineParams) -> _Item:
        lm = None if params.mask == "full" else self._landmarks(frame, lms)
        return _Item(index=index, frame=frame, landmarks=lms, params=params, lm=lm)

    def _crop_side(self, item: _Item) -> int:
        """The img2img side for ``item``'s crop (``schedule.size``): "auto" = the crop's own size in the
        frame (the long side of the frame for "full"), rounded up to a multiple of 8, clamped to
        64 .. the model's native size; "native"; or the given pixels."""
        want = self.schedule.size
        native = self._native_size()
        if want == "native":
            return native
        if want != "auto":
            return int(want)
        if item.regions.full:
            side = max(item.frame.shape[:2])
        else:
            x0, y0, x1, y1 = item.regions.box
            side = max(x1 - x0, y1 - y0)
        return int(min(native, max(64, -(-int(side) // 8) * 8)))

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise GenerationInterrupted("generation was interrupted; no video was written")

    def _run_batch(self, items: List[_Item]) -> None:
        """One backend call for ``items`` (all with regions); sets each item's ``out``."""
        self._check_stop()
        p = items[0].params
        first = items[0]
        size = target_size(first.regions, self._crop_side(first), first.frame.shape)
        crops = np.stack([crop_resize(it.frame, it.regions.box, size) for it in items])
        full = first.regions.full
        masks = None if full else np.stack([it.regions.sd_crop_resized(size) for it in items])
        if masks is not None:
            if not getattr(self.backend, "per_image_masks", True):
                masks = np.broadcast_to(masks.max(axis=0), masks.shape).copy()  # one mask: hosts batch it
        seeds = [int(p.seed)] * len(items) if self.schedule.same_noise else \
            [(int(p.seed) + it.index) % 2 ** 32 for it in items]
        req = Img2ImgRequest(
            images=crops, params=replace(p, prompt=p.prompt or "", seed=seeds[0]), mask=masks, seeds=seeds,
            width=size[0], height=size[1], inpaint_full_res=False, inpainting_fill=1,
            frame_indices=[it.index for it in items], **self._announce(items))
        t0 = time.perf_counter()
        out = self.backend(req)
        self.stats.sd_seconds += time.perf_counter() - t0
        self.stats.sd_calls += 1
        self.stats.sd_frames += len(items)
        out = np.asarray(out)
        if out.shape != crops.shape:
            raise InputError(f"img2img returned {list(out.shape)} for {list(crops.shape)} images")
        for it, patch in zip(items, out):
            it.out = paste_back(it.frame, patch, it.regions)

    def _announce(self, items: List[_Item]) -> dict:
        """Report the backend call about to run (call i of n, its first frame, ETA from the calls so far)
        to the run's progress and ``ctx.status``; returns the request's progress fields for the host
        (``call_index``, ``calls_total`` - an upper bound in the "every" mode -, ``status``)."""
        i = self.stats.sd_calls
        n = max(self._calls_total, i + 1)
        frames = self._ctx.num_frames if self._ctx is not None else 0
        text = f"refine (img2img): call {i + 1}/{n}, frame {items[0].index + 1}/{frames}"
        if i:
            text += f", ETA {self.stats.sd_seconds / i * (n - i):.0f} s"
        if self._ctx is not None:
            self._ctx.status = text
            report = getattr(self._ctx, "progress", None)
            if report is not None:
                try:
                    report(self._emitted, frames, text, None)
                except Exception:  # noqa: BLE001 - a progress display must never break the run
                    log.debug("refine progress report failed", exc_info=True)
        return {"call_index": i, "calls_total": n, "status": text}

    def calls_planned(self, kf: List[int], num_frames: int) -> int:
        """Backend calls this run makes at most: one per keyframe inside the video ("keyframes"), or
        ``ceil(frames / batch_size)`` per stretch between keyframes ("every"; frames without a face
        make it fewer)."""
        if self.mode != "every":
            return len(kf)
        bounds = sorted({0, int(num_frames)} | {k for k in kf if 0 < k < num_frames})
        return sum(-(-(b - a) // self.batch_size) for a, b in zip(bounds, bounds[1:]))

    def _params(self, indices: Sequence[int], fps: float, random_seed: int) -> List[RefineParams]:
        return self.schedule.params_for(indices, fps, random_seed)

    # -- the stage -------------------------------------------------------------------------------------
    def __call__(self, chunks: Iterator[FrameChunk], ctx: RunContext) -> Iterator[FrameChunk]:
        fps = float(ctx.fps)
        seed = self._random_seed()
        kf = self.schedule.keyframe_frames(fps, ctx.num_frames)
        self.stats = RefineStats(mode=self.mode, seed=seed, backend=getattr(self.backend, "name", ""),
                                 keyframes_beyond_end=len(self.schedule.keyframe_frames(fps)) - len(kf))
        if self.stats.keyframes_beyond_end:
            log.warning("%d keyframe(s) lie past the video's end (%d frames); they shape the interpolation "
                        "but are not refined", self.stats.keyframes_beyond_end, ctx.num_frames)
        run = self._every if self.mode == "every" else self._keyframes
        self._ctx, self._emitted = ctx, 0
        self._calls_total = self.calls_planned(kf, ctx.num_frames)
        try:
            for chunk in run(chunks, fps, kf, seed):
                self._emitted += len(chunk)
                yield chunk
        finally:
            ctx.status = ""
            self._ctx = None
        ctx.info["refine"] = asdict(self.stats)

    def _items(self, chunks: Iterator[FrameChunk], fps: float, seed: int):
        for chunk in chunks:
            idx = list(range(chunk.start, chunk.start + len(chunk)))
            params = self._params(idx, fps, seed)
            items = []
            for j, (i, p) in enumerate(zip(idx, params)):
                lms = chunk.landmarks[j] if chunk.landmarks is not None else None
                items.append(self._item(i, chunk.frames[j], lms, p))
            yield items

    @staticmethod
    def _emit(items: List[_Item]) -> Optional[FrameChunk]:
        if not items:
            return None
        frames = np.stack([it.out for it in items])
        for it in items:
            it.done()
        lms = None
        if all(it.landmarks is not None for it in items):
            lms = np.stack([it.landmarks for it in items])
        return FrameChunk(start=items[0].index, frames=frames, landmarks=lms)

    def _every(self, chunks, fps: float, kf: List[int], seed: int) -> Iterator[FrameChunk]:
        queue: Deque[_Item] = deque()
        batch: List[_Item] = []

        def segment(i: int) -> int:
            return bisect.bisect_right(kf, i)

        def flush() -> None:
            if batch:
                self._run_batch(batch)
                batch.clear()

        for items in self._items(chunks, fps, seed):
            for it in items:
                queue.append(it)
                if it.regions is None:
                    it.out = it.frame
                    self.stats.passed_frames += 1
                    continue
                if batch and (len(batch) >= self.batch_size or segment(it.index) != segment(batch[0].index)
                              or batch[0].regions.full != it.regions.full):
                    flush()
                batch.append(it)
            ready = []
            while queue and queue[0].out is not None:
                ready.append(queue.popleft())
            chunk = self._emit(ready)
            if chunk is not None:
                yield chunk
        flush()
        chunk = self._emit(list(queue))
        if chunk is not None:
            yield chunk

    def _key_state(self, it: _Item) -> KeyResidual:
        """Refine keyframe ``it`` (one backend call) and keep its residual."""
        if it.regions is None:
            it.out = it.frame
            self.stats.passed_frames += 1
            return KeyResidual(it.index, it.frame, None, None)
        self._run_batch([it])
        box = it.regions.soft_bbox()
        if box is None:
            return KeyResidual(it.index, it.frame, None, None)
        x0, y0, x1, y1 = box
        res = it.out[y0:y1, x0:x1].astype(np.float32) - it.frame[y0:y1, x0:x1].astype(np.float32)
        return KeyResidual(it.index, it.frame, res, box)

    def _carry(self, it: _Item, prev: Optional[KeyResidual], nxt: Optional[KeyResidual], w_next: float,
               carrier: FlowCarrier) -> None:
        if it.regions is None:
            it.out = it.frame
            self.stats.passed_frames += 1
            return
        region = it.regions.soft_bbox()
        if region is None:
            it.out = it.frame
            return
        x0, y0, x1, y1 = region
        acc = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        for key, w in ((prev, 1.0 - w_next), (nxt, w_next)):
            if key is None or w <= 0.0 or key.residual is None:
                continue
            warped, conf = carrier.carry(it.frame, key, region)
            acc += (w * conf)[..., None] * warped
        base = it.frame[y0:y1, x0:x1]
        generated = np.clip(np.round(base.astype(np.float32) + acc), 0, 255).astype(np.uint8)
        out = it.frame.copy()
        out[y0:y1, x0:x1] = composite(np.ascontiguousarray(base), generated, it.regions.soft_in(region))
        it.out = out
        self.stats.carried_frames += 1

    def _keyframes(self, chunks, fps: float, kf: List[int], seed: int) -> Iterator[FrameChunk]:
        carrier = FlowCarrier(self.schedule.flow)
        kf_set = set(kf)
        prev: Optional[KeyResidual] = None
        waiting: Deque[_Item] = deque()     # frames that need the next keyframe
        limit: Optional[int] = None

        for items in self._items(chunks, fps, seed):
            ready: List[_Item] = []
            for it in items:
                if limit is None:
                    limit = buffer_limit(self.schedule.max_buffer_mb, it.frame.shape)
                t = it.index
                j = bisect.bisect_left(kf, t)
                nxt = kf[j] if j < len(kf) else None
                if t in kf_set:
                    state = self._key_state(it)
                    p_idx = prev.index if prev is not None else None
                    while waiting:  # hand the waiting frames on in pieces, freeing them as they go
                        w_it = waiting.popleft()
                        self._carry(w_it, prev, state, blend_weight(w_it.index, p_idx, t, limit), carrier)
                        ready.append(w_it)
                        if len(ready) >= self._EMIT:
                            yield self._emit(ready)
                            ready = []
                    ready.append(it)
                    prev = state
                    continue
                w = blend_weight(t, prev.index if prev is not None else None, nxt, limit)
                if w > 0.0 or waiting:
                    waiting.append(it)
                    self.stats.max_buffered = max(self.stats.max_buffered, len(waiting))
                else:
                    self._carry(it, prev, None, 0.0, carrier)
                    ready.append(it)
            chunk = self._emit(ready)
            if chunk is not None:
                yield chunk
        # the stream ended before the next keyframe (fewer frames than announced): previous only
        rest = list(waiting)
        for it in rest:
            self._carry(it, prev, None, 0.0, carrier)
        chunk = self._emit(rest)
        if chunk is not None:
            yield chunk

    # -- preview -------------------------------------------------------------------------------------
    def preview(self, frame: np.ndarray, frame_index: int = 0, fps: float = 25.0,
                landmarks: Optional[np.ndarray] = None) -> np.ndarray:
        """Refine one frame with the parameters scheduled at ``frame_index`` (one backend call,
        the same crop, mask and paste-back as the "every" mode); ``frame`` and the result are uint8 RGB
        ``[H, W, 3]`` (convert other images with :func:`sadtalker_ext.io.image.to_rgb8` first; anything
        else raises InputError). A frame without a face is returned unchanged (counted in
        ``stats.passed_frames``)."""
        img = np.array(_image(frame, "frame to preview"), order="C", copy=True)
        p = self._params([int(frame_index)], fps, self._random_seed())[0]
        it = self._item(int(frame_index), img, landmarks, p)
        if it.regions is None:
            self.stats.passed_frames += 1
            return img.copy()
        self._run_batch([it])
        return it.out


def load_schedule(refine: Any) -> KeyframeSchedule:
    """A schedule from ``options.refine``: a KeyframeSchedule, a dict/list (parsed JSON), JSON text
    (starting with ``{`` or ``[``) or the path of a JSON file. Raises OptionError / InputError."""
    if isinstance(refine, KeyframeSchedule):
        return refine.validate()
    if isinstance(refine, (dict, list)):
        return KeyframeSchedule.from_dict(refine)
    if isinstance(refine, (str, os.PathLike)):
        text = str(refine).strip()
        if text.startswith(("{", "[")):
            return KeyframeSchedule.from_json(text)
        return KeyframeSchedule.load(refine)
    raise OptionError("--refine must be the path of a keyframes JSON file")


def refine_stage_for(options: Any, *, host: Any = None, portrait: Any = None, backend: Any = None,
                     should_stop: Optional[Callable[[], bool]] = None,
                     detect: Optional[Callable] = None) -> Optional[RefineStage]:
    """The refinement stage ``options`` ask for, or None when ``options.refine`` is empty.

    options: GenerateOptions (``refine``: schedule path/JSON/dict; ``refine_mode``: "every" |
    "keyframes" | None = the schedule's; ``sd_checkpoint``; ``device``; ``precision``; ``seed``;
    ``face_index``). host: the host whose model runs img2img when no ``sd_checkpoint`` is given.
    portrait: the portrait (path or PIL image) - its txt2img prompt becomes the default prompt.
    backend: overrides the backend choice. Raises OptionError / InputError (bad schedule),
    DependencyError (no model), CheckpointError (bad checkpoint) before any frame is rendered.
    """
    refine = options.refine
    if refine is None or (isinstance(refine, str) and not refine.strip()):
        return None
    schedule = load_schedule(refine)
    mode = options.refine_mode
    if mode:
        schedule = replace(schedule, mode=mode)
    prompt, negative = portrait_prompt(portrait) if portrait is not None else ("", "")
    schedule = schedule.with_source_prompt(prompt, negative)
    if backend is None:
        from .backends import make_backend
        backend = make_backend(host=host, sd_checkpoint=options.sd_checkpoint, device=options.device,
                               precision=options.precision)
    return RefineStage(schedule, backend, face_index=options.face_index, detect=detect,
                       seed=options.seed, should_stop=should_stop)
