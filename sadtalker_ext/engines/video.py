"""Video input ("re-talking"): an existing video as the frame source of the pipeline.

``generate --video in.mp4 --audio speech.wav`` streams the video's frames through the post stages
(Wav2Lip lip refinement) and writes them with the new speech; the video's own audio is dropped.

* Frame rate: the output keeps the video's average frame rate (e.g. 30000/1001); the number of
  output frames is ``round(audio_duration * fps)``.
* Shorter video than audio: frames are played forward, then backward, then forward... (ping-pong,
  source index sequence ``0, 1, .., n-1, n-2, .., 1, 0, 1, ..``), so there is no jump at the loop.
  Longer video: cut at the end of the audio.
* Memory: frames are decoded as they are needed (PyAV). A video whose decoded frames fit in
  ``buffer_bytes`` (256 MiB by default, e.g. 1,300 frames at 256x256 or 42 at 1080p) and that must
  be looped is kept in memory after its first pass; a longer one is read backward in blocks of
  ``max(chunk_size, buffer_bytes / frame_bytes)`` frames by seeking to the keyframe before each block
  and decoding forward (falling back to decoding from the start when the stream has no usable
  timestamps). Memory therefore never grows with the audio or the video length.
* Landmarks: every frame gets MediaPipe landmarks (``FrameChunk.landmarks``, NaN rows for frames
  without a face), the same face followed from frame to frame
  (:class:`~sadtalker_ext.face.tracking.FaceTracker`, ``options.face_index`` picks it at the start).
* Odd widths/heights lose their last column/row (H.264 yuv420p needs even sizes). Rotation
  metadata is not applied; frames are used as stored.

No torch import.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..errors import VideoError
from ..options import GenerateOptions
from .base import FrameChunk, RunContext

log = logging.getLogger(__name__)

BUFFER_BYTES = 256 << 20  #: decoded frames a looping video may keep in memory


@dataclass(frozen=True)
class VideoSource:
    """What :meth:`VideoSourceEngine.prepare` found out about the input video.

    path: the file. size: (width, height) of the output (even). fps: average frame rate (frames/s,
    exact fraction). estimated_frames: the container's frame count (0 when unknown; the real count
    is found by decoding). face_index: which face to follow.
    """

    path: Path
    size: Tuple[int, int]
    fps: Fraction
    estimated_frames: int
    face_index: int


@dataclass(frozen=True)
class PingPong:
    """The source-frame sequence: ``len()`` output frames; :meth:`index` maps an output frame to a
    source frame once the source length ``n`` is known."""

    num_frames: int

    def __len__(self) -> int:
        return self.num_frames

    @staticmethod
    def index(i: int, n: int) -> int:
        """Source frame of output frame ``i`` for a video of ``n`` frames (forward-backward loop)."""
        if n <= 1:
            return 0
        period = 2 * n - 2
        k = i % period
        return k if k < n else period - k


def _open(path: Path):
    import av
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # type: ignore[attr-defined]
        raise VideoError(f"cannot read the video {path.name} ({exc}); give an mp4/mov/mkv/webm file") from None
    streams = [s for s in container.streams if s.type == "video"]
    if not streams:
        container.close()
        raise VideoError(f"{path.name} has no video track; give a video file for --video")
    stream = streams[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for it
        container.close()
        raise VideoError(f"{path.name}: its video encoding cannot be decoded; give an mp4/mov/mkv/webm file")
    stream.thread_type = "AUTO"
    return container, stream


def _check_still_image(path: Path) -> None:
    """A still picture given as the video (one frame, looped) must pass the checks of ``--image``:
    a truncated or damaged JPEG/PNG is refused (FFmpeg would decode its first rows and grey out
    the rest). Raises VideoError."""
    from ..errors import ImageError
    from ..io.image import load_image

    try:
        load_image(path)
    except ImageError as exc:
        raise VideoError(f"{exc.message} (given as --video)") from None


class VideoSourceEngine:
    """Frames of an existing video, looped forward-backward to the audio's length (see module doc).

    Args:
        path: the input video (anything FFmpeg reads).
        landmarks: detect face landmarks on every frame (needed by the lip-sync stage); None
            (default): only when ``options.lipsync`` is not "none".
        buffer_bytes: how many bytes of decoded frames a looping video may keep in memory.
        detect: face detector (default mediapipe ``detect_faces``), replaceable for tests.

    Attributes: ``fps`` (Fraction, frames/s) is the output frame rate the pipeline must use.
    Raises VideoError when the file is missing, unreadable, has no video track or no frames.
    """

    name = "video"

    def __init__(self, path, *, landmarks: Optional[bool] = None, buffer_bytes: int = BUFFER_BYTES, detect=None):
        self.path = Path(os.fspath(path))
        if not self.path.is_file():
            raise VideoError(f"video file not found: {self.path}; give the path of an existing video")
        container, stream = _open(self.path)
        try:
            if container.format.name == "image2" or container.format.name.endswith("_pipe"):
                _check_still_image(self.path)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            w, h = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
        finally:
            container.close()
        if not rate or float(rate) <= 0:
            raise VideoError(f"{self.path.name} has no frame rate; re-encode it (e.g. ffmpeg -i in -r 25 out.mp4)")
        if w < 2 or h < 2:
            raise VideoError(f"{self.path.name} has no usable picture ({w}x{h})")
        self.fps = Fraction(rate).limit_denominator(1001 * 1000)
        self.width, self.height = int(w), int(h)
        self.estimated_frames = frames
        self.landmarks = landmarks
        self.buffer_bytes = int(buffer_bytes)
        self._detect = detect

    # -- Engine protocol ---------------------------------------------------------------------------
    def prepare(self, image: Optional[np.ndarray], options: GenerateOptions) -> VideoSource:
        """``image`` is ignored (the frames come from the video)."""
        return VideoSource(path=self.path, size=(self.width & ~1, self.height & ~1), fps=self.fps,
                           estimated_frames=self.estimated_frames, face_index=options.face_index)

    def output_size(self, source: VideoSource) -> Tuple[int, int]:
        return source.size

    def motion(self, source: VideoSource, ctx: RunContext) -> PingPong:
        ctx.info["video"] = {"source": source.path.name, "fps": float(source.fps),
                             "size": list(source.size)}
        return PingPong(ctx.num_frames)

    def frames(self, source: VideoSource, motion: PingPong, ctx: RunContext) -> Iterator[FrameChunk]:
        from ..face.tracking import FaceTracker

        step = ctx.options.chunk_size
        w, h = source.size
        detect = self.landmarks if self.landmarks is not None else ctx.options.lipsync != "none"
        tracker = FaceTracker(source.face_index, detect=self._detect) if detect else None
        cache: dict = {}
        frames: List[np.ndarray] = []
        lms: List[np.ndarray] = []
        start = 0
        faces = 0
        for i, (src, frame, cacheable) in enumerate(self._source_frames(source, len(motion), step)):
            if tracker is not None:
                if cacheable and src in cache:
                    lm = cache[src]
                else:
                    lm = tracker(frame)
                    lm = np.full((478, 2), np.nan, np.float32) if lm is None else lm
                    if cacheable:
                        cache[src] = lm
                faces += bool(np.isfinite(lm[0, 0]))
                lms.append(lm)
            frames.append(frame)
            if len(frames) == step:
                yield self._chunk(start, frames, lms if tracker is not None else None, w, h)
                start += len(frames)
                frames, lms = [], []
        if frames:
            yield self._chunk(start, frames, lms if tracker is not None else None, w, h)
        ctx.info["video"]["frames_with_face"] = faces

    @staticmethod
    def _chunk(start, frames, lms, w, h) -> FrameChunk:
        arr = np.stack(frames)
        return FrameChunk(start=start, frames=arr, landmarks=np.stack(lms) if lms is not None else None)

    # -- decoding ------------------------------------------------------------------------------------
    def _decode(self, size: Tuple[int, int]) -> Iterator[Tuple[Optional[int], np.ndarray]]:
        """(pts, uint8 RGB frame cut to ``size``) for every frame, in presentation order."""
        import av
        w, h = size
        container, stream = _open(self.path)
        try:
            for frame in container.decode(stream):
                yield frame.pts, np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:h, :w])
        except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
            raise VideoError(f"cannot decode {self.path.name} ({exc}); re-encode the video") from None
        finally:
            container.close()

    def _decode_range(self, size, pts: List[Optional[int]], s: int, e: int) -> List[np.ndarray]:
        """Source frames ``s .. e-1`` (by index of the first pass), by seeking when timestamps allow."""
        wanted = pts[s:e]
        if all(p is not None for p in wanted) and len(set(wanted)) == len(wanted):
            import av
            got = {}
            container, stream = _open(self.path)
            w, h = size
            try:
                container.seek(int(wanted[0]), stream=stream, backward=True, any_frame=False)
                want = set(wanted)
                for frame in container.decode(stream):
                    if frame.pts in want:
                        got[frame.pts] = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:h, :w])
                    if frame.pts is not None and frame.pts >= wanted[-1]:
                        break
            except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
                log.debug("seek in %s failed (%s); decoding from the start", self.path.name, exc)
            finally:
                container.close()
            if len(got) == len(wanted):
                return [got[p] for p in wanted]
        out = []
        for k, (_, frame) in enumerate(self._decode(size)):
            if k >= e:
                break
            if k >= s:
                out.append(frame)
        if len(out) != e - s:
            raise VideoError(f"{self.path.name} changed while reading or cannot be decoded consistently; "
                             f"re-encode the video")
        return out

    def _source_frames(self, source: VideoSource, count: int, chunk: int):
        """(source index, frame, whether the frame may be cached) for ``count`` output frames."""
        size = source.size
        frame_bytes = size[0] * size[1] * 3
        pts: List[Optional[int]] = []
        buffer: Optional[List[np.ndarray]] = []
        produced = 0
        last = None
        for p, frame in self._decode(size):
            pts.append(p)
            if buffer is not None:
                if (len(buffer) + 1) * frame_bytes <= self.buffer_bytes:
                    buffer.append(frame)
                else:
                    buffer = None
            last = frame
            yield len(pts) - 1, frame, buffer is not None
            produced += 1
            if produced >= count:
                return
        n = len(pts)
        if n == 0:
            raise VideoError(f"{self.path.name} has no decodable frames; give another video")
        if n == 1:
            for _ in range(produced, count):
                yield 0, last, True
            return
        log.info("video %s: %d frames, looping forward-backward to %d frames (%s)", self.path.name, n, count,
                 "kept in memory" if buffer is not None else "re-read by blocks")
        if buffer is not None:
            for i in range(produced, count):
                src = PingPong.index(i, n)
                yield src, buffer[src], True
            return
        block = max(1, chunk, self.buffer_bytes // max(1, frame_bytes))
        while True:
            # backward: n-2 .. 1, in blocks read forward and emitted reversed
            e = n - 1
            while e > 1:
                s = max(1, e - block)
                for k, frame in zip(range(e - 1, s - 1, -1), reversed(self._decode_range(size, pts, s, e))):
                    yield k, frame, False
                    produced += 1
                    if produced >= count:
                        return
                e = s
            # forward: 0 .. n-1
            for k, (_, frame) in enumerate(self._decode(size)):
                if k >= n:
                    break
                yield k, frame, False
                produced += 1
                if produced >= count:
                    return
