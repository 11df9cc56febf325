"""Decode speech from any common container (wav/mp3/flac/ogg/m4a/mp4...) with PyAV.

The whole track is decoded to float32 PCM; speech is small next to video frames (60 s at 48 kHz
mono is 11 MB), so this does not break the flat-memory promise for frames.
"""
from __future__ import annotations

import os
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


def load_audio(path: str | os.PathLike, *, max_seconds: float = MAX_AUDIO_SECONDS) -> AudioClip:
    """Decode the first audio stream of ``path`` to mono float32 at its own sample rate.

    Stereo and multichannel audio is averaged to mono. Raises :class:`AudioError` when the file is
    missing, unreadable, has no audio stream, decodes to no samples, or is longer than ``max_seconds``.
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise AudioError(f"audio file not found: {p}; give the path of a wav/mp3/flac/ogg/m4a file")
    if p.stat().st_size == 0:
        raise AudioError(f"audio file {p.name} is empty (0 bytes); give a recording with speech")
    chunks: list[np.ndarray] = []
    rate = None
    try:
        with av.open(str(p), mode="r") as container:
            stream = _first_audio_stream(container, p.name)
            rate = stream.codec_context.sample_rate or stream.rate
            if not rate:
                raise AudioError(f"{p.name} has no sample rate; give a valid wav/mp3/flac/ogg/m4a file")
            rate = check_rate(rate, p.name)
            # Convert every decoded frame to planar float mono at the stream's own rate, straight
            # into one buffer sized from the container's duration (no list of small chunks, which
            # fragments the heap: RSS stays at the clip's size).
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit = int(max_seconds * rate)
            estimate = None
            if stream.duration and stream.time_base:
                estimate = float(stream.duration * stream.time_base) * rate
            elif container.duration:
                estimate = container.duration / 1e6 * rate
            buf = np.empty(int(min(limit, estimate or 60 * rate) * 1.02) + 16384, np.float32)
            total = 0

            def put(frames):
                nonlocal buf, total
                for out in frames:
                    arr = out.to_ndarray().reshape(-1)
                    if total + arr.size > buf.size:
                        grown = np.empty(max(2 * buf.size, total + arr.size), np.float32)
                        grown[:total] = buf[:total]
                        buf = grown
                    buf[total:total + arr.size] = arr
                    total += arr.size

            for frame in container.decode(stream):
                put(resampler.resample(frame))
                if total > limit:
                    check_duration(total, rate, max_seconds, p.name)
            put(resampler.resample(None))
            chunks.append(buf[:total])
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:  # PyAV raises these on bad data
        raise AudioError(f"cannot decode audio {p.name} ({type(exc).__name__}); "
                         "give a valid wav/mp3/flac/ogg/m4a file") from exc
    samples = chunks[0] if chunks else np.zeros(0, np.float32)
    if samples.size == 0 or not rate:
        raise AudioError(f"audio file {p.name} holds no samples; give a recording with speech")
    if not np.all(np.isfinite(samples)):
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return AudioClip(samples=samples, sample_rate=int(rate), source=p.name)


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
