"""Decode speech from any common container (wav/mp3/flac/ogg/m4a/mp4...) with PyAV.

:func:`load_audio` decodes the whole track to float32 PCM in memory (60 s at 48 kHz mono is 11 MB,
30 minutes 345 MB): what the SadTalker engine and the lip-sync stage read. :func:`spool_audio` decodes it
block by block into a temporary file at the 16 kHz analysis rate (:class:`SpooledClip`), read back by
slices: what the lite engine analyses, so its memory does not grow with the speech's length;
:func:`iter_audio` decodes it again block by block for the writer.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError

ANALYSIS_RATE = 16000
MAX_AUDIO_SECONDS = 30 * 60.0
#: Sample rates accepted (Hz): telephone-band 4 kHz up to 192 kHz studio audio. A file claiming
#: another rate (10,000,019 Hz, 2^31-1 Hz, 1 Hz) is refused before decoding: resampling from it
#: would need a filter of millions of taps, or make a 400-byte file last minutes.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 192000


def _first_audio_stream(container, name: str):
    """The file's first audio stream; AudioError when there is none or FFmpeg has no decoder for it
    (e.g. a WAV header naming 8-bit float samples: PyAV then gives no codec context)."""
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        raise AudioError(f"{name} has no audio track; give a file with speech in it")
    if streams[0].codec_context is None:
        raise AudioError(f"{name}: its audio encoding cannot be decoded; give a wav/mp3/flac/ogg/m4a file")
    return streams[0]


def check_rate(rate, what: str = "the audio") -> int:
    """``rate`` as an int when it is a whole number of Hz in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, else AudioError."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{what}'s sample rate must be a positive whole number of Hz, got {rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} claims a sample rate of {int(rate)} Hz; rates from {MIN_SAMPLE_RATE} to "
                         f"{MAX_SAMPLE_RATE} Hz are supported: convert it (e.g. ffmpeg -i in -ar 48000 out.wav)")
    return int(rate)


def check_duration(num_samples: int, rate: int, max_seconds: float = MAX_AUDIO_SECONDS, what: str = "the audio"):
    """AudioError when ``num_samples`` at ``rate`` Hz last longer than ``max_seconds``."""
    if num_samples > max_seconds * rate:
        raise AudioError(f"{what} is longer than {max_seconds / 60:.0f} minutes; split it into shorter parts")


@dataclass(frozen=True)
class AudioClip:
    """Decoded speech.

    samples: float32 [n] mono in [-1, 1] at ``sample_rate`` (the file's own rate, kept for the output).
    sample_rate: Hz.
    source: where it came from (file name), for messages and sidecars.
    """

    samples: np.ndarray
    sample_rate: int
    source: str = ""

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.samples) / float(self.sample_rate)

    def num_frames(self, fps: float = 25.0) -> int:
        """Video frames that cover the clip: ``max(1, round(duration * fps))``."""
        return max(1, int(round(self.duration * fps)))

    def resampled(self, rate: int = ANALYSIS_RATE) -> np.ndarray:
        """float32 [m] mono at ``rate`` Hz (soxr-quality resampling via librosa's default)."""
        if rate == self.sample_rate:
            return self.samples
        from scipy.signal import resample_poly
        g = np.gcd(int(rate), int(self.sample_rate))
        return resample_poly(self.samples, rate // g, self.sample_rate // g).astype(np.float32)


@contextmanager
def _decoding(p: Path, max_seconds: float):
    """Open ``p``'s first audio stream for decoding: yields ``(rate, estimate, blocks)`` where rate is its
    sample rate (Hz, checked), estimate its length in samples from the header (or None) and blocks an
    iterator of float32 mono blocks at that rate (NaN/inf -> 0, clipped to [-1, 1]; a few thousand
    samples each). Raises AudioError for a missing, empty, undecodable or over-long file, also while
    the blocks are read."""
    import av

    if not p.is_file():
        raise AudioError(f"audio file not found: {p}; give the path of a wav/mp3/flac/ogg/m4a file")
    if p.stat().st_size == 0:
        raise AudioError(f"audio file {p.name} is empty (0 bytes); give a recording with speech")
    try:
        with av.open(str(p), mode="r") as container:
            stream = _first_audio_stream(container, p.name)
            rate = stream.codec_context.sample_rate or stream.rate
            if not rate:
                raise AudioError(f"{p.name} has no sample rate; give a valid wav/mp3/flac/ogg/m4a file")
            rate = check_rate(rate, p.name)
            estimate = None
            if stream.duration and stream.time_base:
                estimate = float(stream.duration * stream.time_base) * rate
            elif container.duration:
                estimate = container.duration / 1e6 * rate
            # every decoded frame becomes planar float mono at the stream's own rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit = int(max_seconds * rate)

            def blocks():
                total = 0
                frames = container.decode(stream)
                while True:
                    frame = next(frames, None)
                    for out in resampler.resample(frame):
                        x = out.to_ndarray().reshape(-1)
                        if not np.all(np.isfinite(x)):
                            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
                        total += x.size
                        if total > limit:
                            check_duration(total, rate, max_seconds, p.name)
                        yield np.clip(x, -1.0, 1.0)
                    if frame is None:
                        return

            yield rate, estimate, blocks()
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:  # PyAV raises these on bad data
        raise AudioError(f"cannot decode audio {p.name} ({type(exc).__name__}); "
                         "give a valid wav/mp3/flac/ogg/m4a file") from exc


def load_audio(path: str | os.PathLike, *, max_seconds: float = MAX_AUDIO_SECONDS) -> AudioClip:
    """Decode the first audio stream of ``path`` to mono float32 at its own sample rate.

    Stereo and multichannel audio is averaged to mono; NaN/inf become 0, values are clipped to [-1, 1].
    Raises :class:`AudioError` when the file is missing, unreadable, has no audio stream, decodes to
    no samples, or is longer than ``max_seconds``.
    """
    p = Path(path)
    with _decoding(p, max_seconds) as (rate, estimate, blocks):
        # straight into one buffer sized from the container's duration (no list of small chunks, which
        # fragments the heap: RSS stays at the clip's size)
        limit = int(max_seconds * rate)
        buf = np.empty(int(min(limit, estimate or 60 * rate) * 1.02) + 16384, np.float32)
        total = 0
        for x in blocks:
            if total + x.size > buf.size:
                grown = np.empty(max(2 * buf.size, total + x.size), np.float32)
                grown[:total] = buf[:total]
                buf = grown
            buf[total:total + x.size] = x
            total += x.size
    if total == 0:
        raise AudioError(f"audio file {p.name} holds no samples; give a recording with speech")
    return AudioClip(samples=buf[:total], sample_rate=int(rate), source=p.name)


class PolyResampler:
    """``scipy.signal.resample_poly(x, out_rate, in_rate)`` of a track given block by block: the
    concatenated outputs of :meth:`push` and :meth:`flush` equal the whole-array call's (same Kaiser
    (beta 5) low-pass FIR of ``20 * max(up, down) + 1`` taps, same centring and zero padding, float32),
    while only the filter's span of input is held between blocks.

    The whole-array output sample k sums the inputs j with ``0 <= (k + pre) * down - j * up < taps``;
    a block whose first input index is a multiple of ``down`` gives exactly those sums for every
    output whose inputs it holds.
    """

    def __init__(self, in_rate: int, out_rate: int):
        from scipy.signal import firwin

        g = np.gcd(int(in_rate), int(out_rate))
        self.up, self.down = int(out_rate) // g, int(in_rate) // g
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
        h *= self.up
        pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(pre_pad, np.float32), h])
        self.pre = (half_len + pre_pad) // self.down  # outputs scipy removes from the front
        self.buf = np.zeros(0, np.float32)
        self.base = 0      # input index of buf[0] (a multiple of down)
        self.n_in = 0      # inputs pushed so far
        self.emitted = 0   # outputs given so far

    def _outputs(self, stop: int, x: np.ndarray) -> np.ndarray:
        """Outputs ``emitted .. stop-1`` from ``x`` (the inputs from ``self.base`` on)."""
        from scipy.signal import upfirdn

        if stop <= self.emitted:
            return np.zeros(0, np.float32)
        y = upfirdn(self.h, x, self.up, self.down)
        shift = self.pre - self.base * self.up // self.down
        out = y[self.emitted + shift:stop + shift].astype(np.float32, copy=False)
        self.emitted = stop
        # keep the inputs the next output still needs (its lowest one, rounded down to a multiple of down)
        lowest = max(0, -(-((self.emitted + self.pre) * self.down - (len(self.h) - 1)) // self.up))
        new_base = min(lowest, self.n_in) // self.down * self.down
        self.buf = self.buf[new_base - self.base:]
        self.base = new_base
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        """Resampled float32 samples that ``x`` (float32 [n], the next inputs) completes."""
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.n_in += len(x)
        # output k needs the inputs up to (k + pre) * down // up
        ready = ((self.n_in - 1) * self.up) // self.down - self.pre + 1 if self.n_in else 0
        n_out = -(-self.n_in * self.up // self.down)
        return self._outputs(min(ready, n_out), self.buf)

    def flush(self) -> np.ndarray:
        """The last outputs (the track's end, zero-padded as scipy does); the total is
        ``ceil(n_in * up / down)`` samples."""
        n_out = -(-self.n_in * self.up // self.down)
        pad = np.zeros(len(self.h) // self.up + self.down + 1, np.float32)
        return self._outputs(n_out, np.concatenate([self.buf, pad]))


class SpooledSamples:
    """float32 mono samples kept in a file, not in memory: ``len()``, contiguous slices
    (``x[a:b]`` reads them with ``os.pread``), ``min()``/``max()`` (known when the file was written).

    Made by :func:`spool_audio` (an unnamed temporary file, freed by :meth:`close` or when collected),
    or over an open file descriptor holding ``n`` samples from byte ``offset`` (the alignment worker's
    request). The analysis functions of the lite engine (VAD, loudness, formants, pocketsphinx's
    segments) take slices only, so a 30-minute track costs no memory beyond the slice being read.
    """

    def __init__(self, fd: int, offset: int, n: int, *, lo: float = -1.0, hi: float = 1.0, owner=None):
        self.fd, self.offset, self.n = fd, offset, n
        self._lo, self._hi = float(lo), float(hi)
        self._owner = owner  # the temporary file object when this object owns it

    def __len__(self) -> int:
        return self.n

    def min(self) -> float:
        return self._lo

    def max(self) -> float:
        return self._hi

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("SpooledSamples reads contiguous slices only (x[a:b])")
        start, stop, step = key.indices(self.n)
        if step != 1:
            raise IndexError("only contiguous slices of the samples are read")
        count = max(0, stop - start)
        data = os.pread(self.fd, 4 * count, self.offset + 4 * start)
        if len(data) != 4 * count:
            raise AudioError(f"the spooled speech ended before sample {stop} of {self.n}; keep the temporary "
                             f"folder writable and not cleaned during the run")
        return np.frombuffer(data, dtype="<f4").copy()

    def close(self) -> None:
        """Close the temporary file it owns (idempotent); later reads raise OSError, never read
        another file that got the same descriptor number."""
        if self._owner is not None:
            self._owner.close()
            self._owner, self.fd = None, -1


@dataclass(frozen=True)
class SpooledClip:
    """Speech decoded once into a temporary file at the analysis rate, not held in memory
    (:func:`spool_audio`): what the lite engine analyses, for any length of speech.

    track: :class:`SpooledSamples`, float32 mono at ``track_rate`` (16 kHz), equal to
        ``load_audio(path).resampled(track_rate)``.
    sample_rate: the file's own rate in Hz (the writer decodes the file again at it for the output).
    num_samples: samples at ``sample_rate`` (what :func:`load_audio` would hold).
    """

    track: SpooledSamples
    track_rate: int
    sample_rate: int
    num_samples: int
    source: str = ""

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_samples / float(self.sample_rate)

    def num_frames(self, fps: float = 25.0) -> int:
        """Video frames that cover the clip: ``max(1, round(duration * fps))`` (as AudioClip)."""
        return max(1, int(round(self.duration * fps)))

    def resampled(self, rate: int = ANALYSIS_RATE) -> SpooledSamples:
        """The spooled track (only ``track_rate`` is kept; ValueError for another rate)."""
        if rate != self.track_rate:
            raise ValueError(f"the spooled speech is kept at {self.track_rate} Hz only, not {rate} Hz")
        return self.track

    def close(self) -> None:
        """Free the temporary file (idempotent)."""
        self.track.close()


class _SpoolWriteError(Exception):
    """An OSError writing the spool, carried through the decoder's error mapping unchanged."""


def spool_audio(path: str | os.PathLike, rate: int = ANALYSIS_RATE, *,
                max_seconds: float = MAX_AUDIO_SECONDS) -> SpooledClip:
    """Decode ``path`` as :func:`load_audio` does and keep it resampled to ``rate`` Hz in an unnamed
    temporary file (``tempfile.TemporaryFile``: removed from the folder at once, freed on close), block
    by block: memory stays at a few blocks whatever the length (30 minutes at 16 kHz is 115 MB on disk).
    The track equals ``load_audio(path).resampled(rate)`` (:class:`PolyResampler`). Raises what
    :func:`load_audio` raises, and OSError when the temporary folder cannot hold the track.
    """
    p = Path(path)
    f = tempfile.TemporaryFile(prefix="sadtalker-speech-")
    try:
        lo, hi, n_in, n_out = 0.0, 0.0, 0, 0
        with _decoding(p, max_seconds) as (file_rate, _, blocks):
            resampler = None if file_rate == rate else PolyResampler(file_rate, rate)

            def put(y: np.ndarray) -> None:
                nonlocal lo, hi, n_out
                if y.size:
                    lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
                    try:
                        f.write(np.ascontiguousarray(y, "<f4").tobytes())
                    except OSError as exc:  # the temporary folder, not the speech file: not a decode error
                        raise _SpoolWriteError(exc) from exc
                    n_out += y.size

            for x in blocks:
                n_in += x.size
                put(x if resampler is None else resampler.push(x))
            if resampler is not None:
                put(resampler.flush())
        if n_in == 0:
            raise AudioError(f"audio file {p.name} holds no samples; give a recording with speech")
        f.flush()
    except _SpoolWriteError as exc:
        f.close()
        raise exc.args[0] from None
    except BaseException:
        f.close()
        raise
    track = SpooledSamples(f.fileno(), 0, n_out, lo=lo, hi=hi, owner=f)
    return SpooledClip(track=track, track_rate=int(rate), sample_rate=int(file_rate), num_samples=n_in,
                       source=p.name)


def iter_audio(path: str | os.PathLike, rate: int):
    """The samples :func:`load_audio` gives for ``path`` (mono float32 at ``rate`` Hz, NaN -> 0,
    clipped to [-1, 1]), decoded again block by block (a few thousand samples each), so that a
    consumer (the video writer muxing a long speech) never holds the whole track.
    Raises AudioError when the file cannot be decoded (it could be when it was loaded)."""
    import av

    p = Path(path)
    try:
        with av.open(str(p), mode="r") as container:
            stream = [s for s in container.streams if s.type == "audio"][0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=int(rate))
            frames = container.decode(stream)
            while True:
                frame = next(frames, None)
                for out in resampler.resample(frame):
                    x = out.to_ndarray().reshape(-1).astype(np.float32, copy=True)
                    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
                    yield np.clip(x, -1.0, 1.0, out=x)
                if frame is None:
                    return
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:  # the file changed since it was loaded
        raise AudioError(f"cannot decode audio {p.name} again ({type(exc).__name__}); keep the file in "
                         f"place until the video is written") from exc


def probe_audio(path: str | os.PathLike, *, max_seconds: float = MAX_AUDIO_SECONDS) -> int:
    """Check an audio file's header without decoding it; returns its sample rate (Hz).

    Raises AudioError when the file cannot be opened, has no audio track, claims a sample rate
    outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, or its header says it lasts over ``max_seconds``.
    Cheap (no samples are decoded): the HTTP API runs it before a request joins the queue.
    """
    import av

    p = Path(path)
    try:
        with av.open(str(p), mode="r") as container:
            stream = _first_audio_stream(container, p.name)
            rate = check_rate(stream.codec_context.sample_rate or stream.rate or 0, p.name)
            seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                       else (container.duration or 0) / 1e6)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:  # PyAV raises these on bad data
        raise AudioError(f"cannot decode audio {p.name} ({type(exc).__name__}); "
                         "give a valid wav/mp3/flac/ogg/m4a file") from exc
    if seconds > max_seconds:
        raise AudioError(f"{p.name} is longer than {max_seconds / 60:.0f} minutes; split it into shorter parts")
    return rate


def checked_clip(clip: AudioClip) -> AudioClip:
    """A caller's AudioClip made safe for the pipeline (files from :func:`load_audio` already are).

    samples must be one channel ``[n]`` with n >= 1 and sample_rate a positive integer (else
    AudioError). Integer PCM (int16/int32/uint8) is scaled to [-1, 1]; NaN/inf become 0 and values
    are clipped to [-1, 1]. Returns ``clip`` itself when nothing had to change.
    """
    samples = np.asarray(clip.samples)
    rate = clip.sample_rate
    rate = check_rate(rate, "the audio clip")
    if samples.ndim != 1:
        raise AudioError(f"the audio clip must be mono samples [n], got shape {samples.shape}; average the "
                         "channels first")
    if samples.size == 0:
        raise AudioError("the audio clip holds no samples; give a recording with speech")
    check_duration(samples.size, rate, what="the audio clip")
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2.0
        samples = ((samples.astype(np.float64) - mid) / (int(info.max) + 1 - mid)).astype(np.float32)
    elif samples.dtype.kind == "b" or samples.dtype.kind not in "f":
        raise AudioError(f"the audio clip's samples must be numbers, got {samples.dtype}")
    if samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    if samples.size and (samples.max() > 1.0 or samples.min() < -1.0):
        samples = np.clip(samples, -1.0, 1.0)
    if samples is clip.samples and type(clip.sample_rate) is int:
        return clip
    return AudioClip(samples=samples, sample_rate=int(rate), source=clip.source)
