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
import queue
import stat
import threading
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import OptionError, OutputError

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
#: Output suffix -> container (all hold H.264 + AAC); no suffix writes MP4.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", "": "mp4"}


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that cannot take a finished video, before any work is done.

    Raises OutputError when ``path`` is an existing folder, device node, FIFO or socket (such a
    path is never replaced: ``--out /dev/null`` run as root must not replace the system's
    ``/dev/null``), or when its folder does not exist; OptionError when its suffix names a
    container other than MP4/M4V/MOV/MKV (``.avi``, ``.gif``, ...). An existing regular file or a
    symbolic link at ``path`` is fine: it is replaced (a link itself, never its target).
    Returns ``path`` as a Path.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in CONTAINERS:
        raise OptionError(f"cannot write a {p.suffix} file: the output is H.264 + AAC video; name it "
                          f"{p.stem}.mp4 (or .mov, .mkv)")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {exc.strerror or exc}; choose another --out") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{p} is a folder; give a file name for the video, e.g. {p / 'video.mp4'}")
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{p} is a device, FIFO or socket, not a regular file; it is never replaced: "
                          f"choose a file name for the video")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist; create it or choose another --out")
    return p


class AudioBlocks:
    """Audio for :class:`VideoWriter` as an iterable of float32 [k] blocks (mono, [-1, 1]).

    ``blocks``: a function returning the iterator (called once, when the writer starts), e.g. a
    decoder reading the speech file again block by block, so the writer never holds it whole.
    """

    def __init__(self, blocks):
        self._blocks = blocks

    def __iter__(self):
        return iter(self._blocks())


class VideoWriter:
    """Write RGB frames (uint8 [H, W, 3], even H and W) at ``fps`` with optional mono audio.

    audio: float32 [n] in [-1, 1] at ``sample_rate`` Hz, or None for a silent video; or an
        :class:`AudioBlocks` (blocks of such samples pulled as the video advances, so long audio
        is never held whole; its rate must be one AAC stores, see AAC_RATES).
    crf/preset: libx264 quality and speed. Raises OutputError when the file cannot be written.
    background: encode in a thread of its own (default False), so that rendering the next chunk
        overlaps with encoding this one (libx264 and PyAV's encode release the GIL). ``write``
        then hands over a copy of the chunk and returns at once (it waits while one chunk is still
        queued, so memory stays at about two chunks); an encoding error is raised by the next
        ``write`` or by ``commit``; ``abort`` stops the thread before deleting the file.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], fps: int = 25, *,
                 audio: np.ndarray | None = None, sample_rate: int | None = None, crf: int = 18,
                 preset: str = "veryfast", threads: int = 0, background: bool = False):
        import av

        self.path = check_output_path(path)
        w, h = int(size[0]), int(size[1])
        if w % 2 or h % 2 or w < 2 or h < 2:
            raise OptionError(f"video size must be even, got {w}x{h}")
        self.size = (w, h)
        self.fps = fps if isinstance(fps, int) else Fraction(fps).limit_denominator(1_001_000)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        self.tmp = parent / f".{self.path.stem}.{uuid.uuid4().hex[:8]}.part{self.path.suffix or '.mp4'}"
        self._frames = 0
        self._closed = False
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._submitted = 0
        try:
            self.container = av.open(str(self.tmp), mode="w", format=CONTAINERS[self.path.suffix.lower()])
            vs = self.container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
            vs.codec_context.time_base = 1 / Fraction(self.fps)
            self.vstream = vs
            self.astream = None
            self._blocks = None
            if isinstance(audio, AudioBlocks):
                if int(sample_rate) not in AAC_RATES:
                    raise OptionError(f"streamed audio must be at a rate AAC stores, got {sample_rate} Hz")
                self._blocks, self._pending, audio = iter(audio), np.zeros(0, np.float32), None
                self.audio, self.rate = None, int(sample_rate)
                a = self.container.add_stream("aac", rate=self.rate)
                a.layout = "mono"
                a.codec_context.time_base = Fraction(1, self.rate)
                self.astream = a
                self._audio_pos = 0
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
        if background:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._encode_loop, name="video-writer", daemon=True)
            self._thread.start()

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
        """Frames handed to :meth:`write` (with ``background``, some may still be encoding)."""
        return self._submitted

    def write(self, frames: np.ndarray) -> None:
        """Encode a chunk of frames uint8 [n, H, W, 3] (or one frame [H, W, 3]) and its audio span.

        Raises OptionError (a frame of another size), OutputError (the file cannot be written)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        n, h, w = frames.shape[:3]
        if (w, h) != self.size:
            raise OptionError(f"frame size {w}x{h} differs from the video size {self.size[0]}x{self.size[1]}")
        self._raise_error()
        if self._closed:
            raise OutputError(f"the writer of {self.path.name} is closed")
        self._submitted += n
        if self._queue is None:
            self._encode(frames)
            return
        item = np.array(frames, copy=True)  # the caller may reuse its buffer at once
        while True:  # wait for room, but notice an encoder that stopped on an error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            self._stop_thread()
            self.abort()
            raise err

    def _encode_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # stopped on an error: drop what is still queued
            try:
                self._encode(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread, raised there
                self._error = exc

    def _stop_thread(self) -> None:
        if self._thread is None or threading.current_thread() is self._thread:
            return
        thread, self._thread = self._thread, None
        self._queue.put(None)
        thread.join()

    def _encode(self, frames: np.ndarray) -> None:
        import av

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
        end = int(round(seconds * self.rate))
        if self._blocks is None:
            end = min(len(self.audio), end)
        if end <= self._audio_pos and not flush:
            return
        block = 1024 * 8
        while self._audio_pos < end:
            chunk = self._take(min(end, self._audio_pos + block) - self._audio_pos)
            if len(chunk) == 0:  # a stream that ended early
                break
            stop = self._audio_pos + len(chunk)
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

    def _take(self, n: int) -> np.ndarray:
        """The next ``n`` samples of the audio (fewer at its end), from the array or the stream."""
        if self._blocks is None:
            return self.audio[self._audio_pos:self._audio_pos + n]
        parts, got = [], 0
        while got < n:
            if not len(self._pending):
                try:
                    self._pending = np.asarray(next(self._blocks), np.float32).reshape(-1)
                except StopIteration:
                    break
                continue
            part = self._pending[:n - got]
            self._pending = self._pending[len(part):]
            parts.append(part)
            got += len(part)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def commit(self) -> Path:
        """Flush the encoders, close the file and move it onto the final path. Returns that path."""
        if self._closed and self._thread is None:
            return self.path
        self._stop_thread()  # every queued chunk encoded
        self._raise_error()
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
            check_output_path(self.path)  # again: a folder or device may have appeared during the run
            os.replace(self.tmp, self.path)
        except OutputError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {self.path.name}; free some space and run again") from exc
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final path is never touched."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._error = self._error or GeneratorExit()  # the encoder drops what is still queued
            self._stop_thread()
            self._error = None
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
