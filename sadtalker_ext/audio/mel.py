"""The SadTalker / Wav2Lip mel-spectrogram front end, in numpy (no torch, no librosa needed).

Both SadTalker (``src/utils/audio.py`` + ``src/generate_batch.py``) and Wav2Lip (``audio.py`` +
``inference.py``) use the same Tacotron-style mel features at 16 kHz:

1. pre-emphasis ``y[t] = x[t] - 0.97 x[t-1]`` (``scipy.signal.lfilter([1, -0.97], [1], x)``),
2. STFT: n_fft 800, hop 200 (12.5 ms, i.e. 80 mel columns per second), periodic Hann window of 800,
   centred with 400 **zeros** of padding on each side (``librosa.stft(center=True)`` in librosa
   >= 0.9.2; librosa 0.7.0 padded by reflection, which changes the first/last two columns),
3. magnitude, 80-band Slaney mel filterbank (Slaney mel scale, Slaney area normalisation,
   55..7600 Hz; the float32 weights of ``librosa.filters.mel``),
4. ``S = 20*log10(max(1e-5, M)) - 20`` dB, then ``clip(8*(S + 100)/100 - 4, -4, 4)``.

The result is a float64 array ``[80, 1 + n_samples // 200]`` in ``[-4, 4]`` (-4 is silence).

Two per-video-frame chunkings follow:

* :func:`sadtalker_mel_windows` (SadTalker ``get_data``): frame ``i`` uses mel columns
  ``int(80 * ((i - 2) / fps)) + 0..15``, each clamped to ``[0, n - 1]`` (two frames of look-back),
  giving ``[T, 80, 16]`` float32.
* :func:`wav2lip_mel_chunks` (Wav2Lip ``inference.py``): frame ``i`` uses columns starting at
  ``int(i * 80 / fps)``, 16 wide, no look-back; a window running past the end is replaced by the
  last 16 columns, and a spectrogram shorter than 16 columns is padded at the end with -4 (silence).

Numerical check: ``shared/reference/goldens/mel_sadtalker.npz`` (``mel`` and ``indiv_mels``) is
reproduced within 1e-6 (tests/test_sadtalker_audio_goldens.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from ..errors import AudioError, OptionError

SAMPLE_RATE = 16000
MEL_STEP = 16  # mel columns per window (SyncNet / Wav2Lip "mel_step_size")


@dataclass(frozen=True)
class MelConfig:
    """Hyper-parameters of the mel front end (SadTalker ``src/utils/hparams.py`` values)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0

    @property
    def columns_per_second(self) -> float:
        """Mel columns per second of audio (80 at 16 kHz / hop 200)."""
        return self.sample_rate / self.hop_size


DEFAULT_CONFIG = MelConfig()


# --------------------------------------------------------------------------------------------
# audio preparation
# --------------------------------------------------------------------------------------------

def _check_fps(fps: float) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise OptionError(f"fps must be a number, got {fps!r}; use e.g. 25.") from None
    if not math.isfinite(fps) or fps <= 0:
        raise OptionError(f"fps must be a positive number, got {fps}; use e.g. 25.")
    return fps


def _as_mono_float(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"Expected mono audio as a 1-D sample array, got shape {wav.shape}; "
                         f"downmix the audio to one channel first.")
    if wav.size == 0:
        raise AudioError("The audio has no samples; use an audio file with speech in it.")
    if not np.issubdtype(wav.dtype, np.floating):
        if np.issubdtype(wav.dtype, np.integer):
            scale = float(np.iinfo(wav.dtype).max) + 1.0
            wav = wav.astype(np.float64) / scale
        else:
            raise AudioError(f"Audio samples must be numbers, got dtype {wav.dtype}; decode the "
                             f"audio to float samples first.")
    wav = wav.astype(np.float32, copy=False)
    if not np.all(np.isfinite(wav)):
        raise AudioError("The audio contains NaN or infinite samples; re-export the audio file.")
    return wav


def resample_to_16k(wav: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono samples at ``sample_rate`` -> float32 samples at ``target_rate`` (default 16 kHz).

    Uses soxr "HQ" (what ``librosa.load(path, sr=16000)`` does in librosa >= 0.10) and fixes the
    length to ``ceil(n * target / sample_rate)`` like librosa; falls back to
    ``scipy.signal.resample_poly`` when soxr is not installed. Integer input is scaled to [-1, 1).

    Raises:
        AudioError: not 1-D, empty, or non-finite samples.
        OptionError: a non-positive sample rate.
    """
    wav = _as_mono_float(wav)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise OptionError(f"sample rate must be a positive integer, got {sample_rate!r}.")
    if int(sample_rate) == int(target_rate):
        return wav
    n_out = int(math.ceil(wav.shape[0] * float(target_rate) / float(sample_rate)))
    try:
        import soxr
        out = soxr.resample(wav, int(sample_rate), int(target_rate), quality="HQ")
    except ImportError:
        from scipy.signal import resample_poly
        g = math.gcd(int(sample_rate), int(target_rate))
        out = resample_poly(wav.astype(np.float64), int(target_rate) // g, int(sample_rate) // g)
    out = np.asarray(out, dtype=np.float32)
    if out.shape[0] < n_out:
        out = np.pad(out, (0, n_out - out.shape[0]))
    return np.ascontiguousarray(out[:n_out])


def audio_num_frames(num_samples: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of whole video frames in ``num_samples`` (SadTalker ``parse_audio_length``)."""
    fps = _check_fps(fps)
    return int(num_samples / (sample_rate / fps))


def crop_pad_audio(wav: np.ndarray, num_frames: int, fps: float = 25.0,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Trim or zero-pad ``wav`` to ``int(num_frames * sample_rate / fps)`` samples.

    At 16 kHz and 25 fps that is ``num_frames * 640`` samples (SadTalker ``crop_pad_audio``).
    """
    fps = _check_fps(fps)
    if num_frames < 1:
        raise OptionError(f"num_frames must be at least 1, got {num_frames}.")
    length = int(num_frames * (sample_rate / fps))
    if wav.shape[0] > length:
        return wav[:length]
    if wav.shape[0] < length:
        return np.pad(wav, (0, length - wav.shape[0]), mode="constant", constant_values=0)
    return wav


# --------------------------------------------------------------------------------------------
# mel spectrogram
# --------------------------------------------------------------------------------------------

def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa ``htk=False``."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(freq >= min_log_hz,
                    min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


_MEL_CACHE: dict = {}


def mel_filterbank(cfg: MelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``[num_mels, 1 + n_fft//2]`` float32.

    Same values as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (htk=False,
    norm="slaney"), including its float32 storage.
    """
    key = (cfg.sample_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax)
    hit = _MEL_CACHE.get(key)
    if hit is not None:
        return hit
    n_bins = 1 + cfg.n_fft // 2
    fft_freqs = np.fft.rfftfreq(n=cfg.n_fft, d=1.0 / cfg.sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.num_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    weights = np.zeros((cfg.num_mels, n_bins), dtype=np.float32)
    for m in range(cfg.num_mels):
        rising = -ramps[m] / widths[m]
        falling = ramps[m + 2] / widths[m + 1]
        weights[m] = np.maximum(0.0, np.minimum(rising, falling))
    area_norm = 2.0 / (edges[2:cfg.num_mels + 2] - edges[:cfg.num_mels])
    weights *= area_norm[:, None]  # float64 product rounded into the float32 array (as librosa)
    weights.setflags(write=False)
    _MEL_CACHE[key] = weights
    return weights


def _stft_magnitude(y: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """|STFT| ``[1 + n_fft//2, 1 + len(y)//hop]`` of float64 ``y``, centred with zero padding."""
    n_fft, hop, win = cfg.n_fft, cfg.hop_size, cfg.win_size
    k = np.arange(win, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / win)  # periodic Hann (scipy get_window "hann")
    if win < n_fft:
        left = (n_fft - win) // 2
        window = np.pad(window, (left, n_fft - win - left))
    padded = np.pad(y, (n_fft // 2, n_fft // 2), mode="constant")
    n_frames = 1 + (padded.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, n_fft), strides=(padded.strides[0] * hop, padded.strides[0]),
        writeable=False)
    spec = np.fft.rfft(frames * window[None, :], n=n_fft, axis=1)
    return np.abs(spec).T


def melspectrogram(wav: np.ndarray, cfg: MelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Normalised log-mel spectrogram of 16 kHz mono audio.

    Args:
        wav: ``[n]`` samples in [-1, 1] at ``cfg.sample_rate`` (float32 or float64).

    Returns:
        ``[num_mels, 1 + n // hop_size]`` float64 in ``[-max_abs_value, max_abs_value]``
        (``[80, 1 + n // 200]`` in [-4, 4] by default). Source: SadTalker ``src/utils/audio.py``
        ``melspectrogram`` (identical to Wav2Lip ``audio.py``).

    Raises:
        AudioError: not 1-D, empty or non-finite samples.
    """
    wav = _as_mono_float(wav)
    x = wav.astype(np.float64)
    # pre-emphasis: first-order FIR (scipy.signal.lfilter([1, -k], [1], x) computes the same)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - cfg.preemphasis * x[:-1]
    magnitude = _stft_magnitude(y, cfg)
    mel = np.dot(mel_filterbank(cfg), magnitude)
    min_level = np.exp(cfg.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - cfg.ref_level_db
    m = cfg.max_abs_value
    return np.clip((2 * m) * ((db - cfg.min_level_db) / (-cfg.min_level_db)) - m, -m, m)


# --------------------------------------------------------------------------------------------
# per-video-frame windows
# --------------------------------------------------------------------------------------------

def sadtalker_mel_windows(mel: np.ndarray, num_frames: int, fps: float = 25.0,
                          cfg: MelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """SadTalker's per-frame mel windows (``get_data``): ``[num_frames, num_mels, 16]`` float32.

    Frame ``i`` takes mel columns ``int(80 * ((i - 2) / fps)) + 0..15`` (``int`` truncates toward
    zero), each clamped to ``[0, n - 1]``.
    """
    fps = _check_fps(fps)
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] == 0:
        raise AudioError(f"Expected a mel spectrogram [mels, columns], got shape {mel.shape}; "
                         f"the audio is too short or empty.")
    if num_frames < 1:
        raise OptionError(f"num_frames must be at least 1, got {num_frames}.")
    n = mel.shape[1]
    per_second = cfg.columns_per_second
    starts = np.array([int(per_second * ((i - 2) / fps)) for i in range(num_frames)], dtype=np.int64)
    idx = np.clip(starts[:, None] + np.arange(MEL_STEP)[None, :], 0, n - 1)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2), dtype=np.float32)


def wav2lip_mel_chunks(mel: np.ndarray, fps: float = 25.0, num_frames: Optional[int] = None,
                       cfg: MelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Wav2Lip's per-frame mel chunks (``inference.py``): ``[N, num_mels, 16]`` float32.

    Chunk ``i`` is columns ``int(i * (80 / fps)) .. +16`` (no look-back). With ``num_frames=None``
    the official loop is followed: chunks are produced until one would run past the end, which is
    replaced by the last 16 columns and ends the list. With ``num_frames`` exactly that many chunks
    are returned, every window running past the end being the last 16 columns. A spectrogram with
    fewer than 16 columns is first padded at the end with ``-max_abs_value`` (silence).
    """
    fps = _check_fps(fps)
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] == 0:
        raise AudioError(f"Expected a mel spectrogram [mels, columns], got shape {mel.shape}; "
                         f"the audio is too short or empty.")
    if mel.shape[1] < MEL_STEP:
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), mode="constant",
                     constant_values=-cfg.max_abs_value)
    n = mel.shape[1]
    step = cfg.columns_per_second / fps
    chunks = []
    i = 0
    while num_frames is None or i < num_frames:
        start = int(i * step)
        if start + MEL_STEP > n:
            chunks.append(mel[:, n - MEL_STEP:])
            if num_frames is None:
                break
        else:
            chunks.append(mel[:, start:start + MEL_STEP])
        i += 1
    if not chunks:
        raise OptionError(f"num_frames must be at least 1, got {num_frames}.")
    return np.ascontiguousarray(np.stack(chunks), dtype=np.float32)


class SadTalkerAudio(NamedTuple):
    """Output of :func:`prepare_sadtalker_audio`."""

    wav: np.ndarray         #: [num_frames * 640] float32 16 kHz samples (cropped / zero-padded)
    mel: np.ndarray         #: [80, n] float64 normalised log-mel in [-4, 4]
    indiv_mels: np.ndarray  #: [num_frames, 80, 16] float32 per-frame windows
    num_frames: int         #: video frames at ``fps``


def prepare_sadtalker_audio(wav: np.ndarray, sample_rate: int, fps: float = 25.0,
                            num_frames: Optional[int] = None,
                            cfg: MelConfig = DEFAULT_CONFIG) -> SadTalkerAudio:
    """Decoded audio -> SadTalker's mel inputs (the audio half of ``generate_batch.get_data``).

    Args:
        wav: ``[n]`` mono samples (float in [-1, 1], or integer PCM) at ``sample_rate`` Hz.
        sample_rate: resampled to 16 kHz when different.
        fps: video frame rate (SadTalker uses 25).
        num_frames: video frames to produce; default ``int(n16k / (16000 / fps))``.

    Returns:
        :class:`SadTalkerAudio` with the cropped/padded 16 kHz ``wav``, ``mel`` ``[80, n]`` float64
        and ``indiv_mels`` ``[T, 80, 16]`` float32.

    Raises:
        AudioError: empty / non-mono / non-finite audio, or audio shorter than one video frame.
        OptionError: bad ``fps``, ``sample_rate`` or ``num_frames``.
    """
    fps = _check_fps(fps)
    wav16 = resample_to_16k(wav, sample_rate, cfg.sample_rate)
    if num_frames is None:
        num_frames = audio_num_frames(wav16.shape[0], fps, cfg.sample_rate)
        if num_frames < 1:
            raise AudioError(f"The audio is {wav16.shape[0] / cfg.sample_rate:.3f} s long, shorter "
                             f"than one video frame (1/{fps:g} s); use a longer audio file.")
    wav16 = crop_pad_audio(wav16, int(num_frames), fps, cfg.sample_rate)
    mel = melspectrogram(wav16, cfg)
    return SadTalkerAudio(wav16, mel, sadtalker_mel_windows(mel, int(num_frames), fps, cfg),
                          int(num_frames))


__all__ = ["DEFAULT_CONFIG", "MEL_STEP", "MelConfig", "SAMPLE_RATE", "SadTalkerAudio",
           "audio_num_frames", "crop_pad_audio", "mel_filterbank", "melspectrogram",
           "prepare_sadtalker_audio", "resample_to_16k", "sadtalker_mel_windows",
           "wav2lip_mel_chunks"]
