"""Streaming MP4 writer: H.264 yuv420p video + AAC audio, encoded as frames arrive (PyAV).

The file is written to a hidden temporary name in the destination folder and renamed onto the
final name only by :meth:`VideoWriter.commit`; :meth:`abort` (or leaving the ``with`` block by an
exception) removes it, so a failed or interrupted run never leaves a file that looks complete.
Audio is the original track at its original sample rate (mono; rates AAC cannot store, such as
7 kHz, are resampled to the next AAC rate), cut to the video's length, and
is interleaved chunk by chunk with the video so nothing accumulates in memory.
"""
from __future__ import annotations

import errno
import os
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import OptionError, OutputError

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class VideoWriter:
    """Write RGB frames (uint8 [H, W, 3], even H and W) at ``fps`` with optional mono audio.

    audio: float32 [n] in [-1, 1] at ``sample_rate`` Hz, or None for a silent video.
    crf/preset: libx264 quality and speed. Raises OutputError when the file cannot be written.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], fps: int = 25, *,
                 audio: np.ndarray | None = None, sample_rate: int | None = None, crf: int = 18,
                 preset: str = "veryfast", threads: int = 0):
        import av

        self.path = Path(path)
        w, h = int(size[0]), int(size[1])
        if w % 2 or h % 2 or w < 2 or h < 2:
            raise OptionError(f"video size must be even, got {w}x{h}")
        self.size = (w, h)
        self.fps = fps if isinstance(fps, int) else Fraction(fps).limit_denominator(1_001_000)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise OutputError(f"output folder {parent} does not exist; create it or choose another --out")
        self.tmp = parent / f".{self.path.stem}.{uuid.uuid4().hex[:8]}.part{self.path.suffix or '.mp4'}"
        self._frames = 0
        self._closed = False
        try:
            self.container = av.open(str(self.tmp), mode="w", format="mp4")
            vs = self.container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
            vs.codec_context.time_base = 1 / Fraction(self.fps)
            self.vstream = vs
            self.astream = None
            if audio is not None and len(audio) > 0:
                rate = int(sample_rate)
                audio = np.asarray(audio, np.float32)
                if rate not in AAC_RATES:
                    # AAC has a fixed set of rates: resample to the nearest one above (or 96 kHz)
                    from scipy.signal import resample_poly
                    target = min([r for r in AAC_RATES if r >= rate] or [AAC_RATES[0]])
                    g = int(np.gcd(target, rate))
                    audio = resample_poly(audio, target // g, rate // g).astype(np.float32)
                    rate = target
                self.audio = audio
                self.rate = rate
                a = self.container.add_stream("aac", rate=rate)
                a.layout = "mono"
                a.codec_context.time_base = Fraction(1, rate)
                self.astream = a
                self._audio_pos = 0
        except OptionError:
            self._cleanup()
            raise
        except OSError as exc:
            self._cleanup()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}; check the folder and free space") from exc

    # ------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.commit()
        return False

    @property
    def frames_written(self) -> int:
        return self._frames

    def write(self, frames: np.ndarray) -> None:
        """Encode a chunk of frames uint8 [n, H, W, 3] (or one frame [H, W, 3]) and its audio span."""
        import av

        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        n, h, w = frames.shape[:3]
        if (w, h) != self.size:
            raise OptionError(f"frame size {w}x{h} differs from the video size {self.size[0]}x{self.size[1]}")
        try:
            for f in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                vf.pts = self._frames
                self._frames += 1
                for pkt in self.vstream.encode(vf):
                    self.container.mux(pkt)
            self._write_audio_until(self._frames / self.fps)
        except OSError as exc:
            self.abort()
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {self.path.name}; free some space and run again") from exc
            raise OutputError(f"cannot write {self.path.name}: {exc}") from exc

    def _write_audio_until(self, seconds: float, flush: bool = False) -> None:
        import av

        if self.astream is None:
            return
        end = min(len(self.audio), int(round(seconds * self.rate)))
        if end <= self._audio_pos and not flush:
            return
        block = 1024 * 8
        while self._audio_pos < end:
            stop = min(end, self._audio_pos + block)
            chunk = self.audio[self._audio_pos:stop]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = self.rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.rate)
            for pkt in self.astream.encode(af):
                self.container.mux(pkt)
            self._audio_pos = stop
        if flush:
            for pkt in self.astream.encode(None):
                self.container.mux(pkt)

    def commit(self) -> Path:
        """Flush the encoders, close the file and move it onto the final path. Returns that path."""
        if self._closed:
            return self.path
        if self._frames == 0:
            self.abort()
            raise OutputError("no frames were produced, nothing to write")
        try:
            for pkt in self.vstream.encode(None):
                self.container.mux(pkt)
            self._write_audio_until(self._frames / self.fps, flush=True)
            self.container.close()
            self._closed = True
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {self.path.name}; free some space and run again") from exc
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final path is never touched."""
        self._cleanup()

    def _cleanup(self):
        c = getattr(self, "container", None)
        if c is not None and not self._closed:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a half-written file may fail in many ways; it is deleted anyway
                pass
        self._closed = True
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
