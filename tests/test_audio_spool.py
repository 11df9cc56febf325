"""Speech kept in a temporary file (audio/decode.spool_audio) for the lite engine: the same samples as the
in-memory decode, the same analysis, and memory that does not grow with the speech's length.

References: scipy's whole-array ``resample_poly`` (what ``AudioClip.resampled`` calls) for the block-wise
resampler; the in-memory ``load_audio`` path for the spooled track and the analyses run on it.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from sadtalker_ext.audio.decode import (ANALYSIS_RATE, PolyResampler, SpooledSamples, load_audio,
                                        spool_audio)
from sadtalker_ext.audio.features import formants, loudness_envelope
from sadtalker_ext.audio.vad import detect_voice
from sadtalker_ext.errors import AudioError

from test_lite_inputs import encode_audio


def _poly(x: np.ndarray, rin: int, rout: int) -> np.ndarray:
    g = np.gcd(rin, rout)
    return resample_poly(x, rout // g, rin // g).astype(np.float32)


@pytest.mark.parametrize("rin", [48000, 44100, 22050, 8000, 11025, 32000, 96000, 4000, 192000])
def test_block_resampler_equals_scipy_whole_array_bit_for_bit(rin):
    rng = np.random.default_rng(rin)
    for n in (1, 2, 3, 100, 4097, 30001):
        x = rng.uniform(-1, 1, n).astype(np.float32)
        want = _poly(x, rin, 16000)
        for block in (1, 7, 1000, 4096, 10 ** 6):
            if block == 1 and n > 200:
                continue
            r = PolyResampler(rin, 16000)
            got = np.concatenate([r.push(x[i:i + block]) for i in range(0, n, block)] + [r.flush()])
            assert got.dtype == np.float32 and got.shape == want.shape, (rin, n, block)
            assert np.array_equal(got, want), (rin, n, block, float(np.abs(got - want).max()))


def _write(path, x, rate, subtype="FLOAT"):
    sf.write(str(path), x, rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def speech16(arctic_wav) -> np.ndarray:
    return load_audio(arctic_wav).samples


@pytest.mark.parametrize("rate,channels,fmt", [(16000, 1, "wav"), (48000, 1, "wav"), (44100, 2, "wav"),
                                               (22050, 1, "flac"), (44100, 2, "mp3"), (48000, 2, "m4a")])
def test_spooled_track_equals_the_in_memory_decode(tmp_path, speech16, rate, channels, fmt):
    x = np.clip(_poly(speech16, 16000, rate), -1, 1) if rate != 16000 else speech16
    path = tmp_path / f"speech.{fmt}"
    if fmt in ("mp3", "m4a"):  # lossy: both paths decode the same packets
        encode_audio(x, rate, path, "libmp3lame" if fmt == "mp3" else "aac", channels, "mp4" if fmt == "m4a" else None)
    else:
        if channels == 2:
            x = np.stack([x, 0.5 * x], axis=1)
        _write(path, x, rate, "PCM_16" if fmt == "flac" else "FLOAT")
    held = load_audio(path)
    spooled = spool_audio(path)
    try:
        assert spooled.sample_rate == held.sample_rate == rate
        assert spooled.num_samples == len(held.samples) and spooled.duration == held.duration
        assert spooled.num_frames(25) == held.num_frames(25)
        want = held.resampled(ANALYSIS_RATE)
        track = spooled.resampled(ANALYSIS_RATE)
        assert len(track) == len(want)
        assert np.array_equal(track[0:len(track)], want)
        assert np.array_equal(track[1234:5678], want[1234:5678])
        assert track.min() == float(want.min()) and track.max() == float(want.max())
        with pytest.raises(ValueError):
            spooled.resampled(22050)
    finally:
        spooled.close()
    with pytest.raises(OSError):
        track[0:1]


def test_lite_analysis_of_the_spooled_track_equals_the_arrays(tmp_path, speech16):
    """VAD, loudness and formants read the file-backed track by slices and give the same values."""
    x = np.tile(speech16, 8)  # 32 s: several analysis blocks
    path = _write(tmp_path / "speech.wav", x, 16000)
    spooled = spool_audio(path)
    try:
        track = spooled.track
        T = spooled.num_frames(25)
        for fn in (loudness_envelope, lambda a, t: formants(a, t).f1, lambda a, t: formants(a, t).f2):
            assert np.array_equal(fn(track, T), fn(x, T))
        for method in ("silero", "energy"):
            a, b = detect_voice(track, T, method=method), detect_voice(x, T, method=method)
            assert a.method == b.method
            assert np.array_equal(a.prob, b.prob) and np.array_equal(a.speech, b.speech)
    finally:
        spooled.close()


def test_alignment_worker_reads_a_spooled_track_like_the_array(tmp_path, speech16):
    pytest.importorskip("pocketsphinx")
    from sadtalker_ext.audio.phonemes import align_phonemes
    path = _write(tmp_path / "speech.wav", speech16, 16000)
    spooled = spool_audio(path)
    try:
        got = align_phonemes(spooled.track)
    finally:
        spooled.close()
    want = align_phonemes(speech16)
    assert want and got == want


def test_spool_refuses_what_load_audio_refuses(tmp_path, speech16):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 50)
    long = _write(tmp_path / "long.wav", np.tile(speech16, 3), 16000)
    cases = [(tmp_path / "missing.wav", {}), (empty, {}), (text, {}), (long, {"max_seconds": 5.0})]
    for path, kw in cases:
        with pytest.raises(AudioError) as held:
            load_audio(path, **kw)
        with pytest.raises(AudioError) as spooled:
            spool_audio(path, **kw)
        assert str(spooled.value) == str(held.value)


def test_spooling_ten_minutes_holds_a_few_blocks_not_the_track(tmp_path, speech16):
    """10 minutes at 48 kHz is 115 MB of float32 in memory (load_audio); spooling it traces < 16 MB."""
    n = 10 * 60 * 48000
    x = np.tile(_poly(speech16, 16000, 48000), n // (4 * 48000) + 1)[:n]
    path = _write(tmp_path / "ten.wav", x, 48000, "PCM_16")
    del x
    tracemalloc.start()
    try:
        spooled = spool_audio(path)
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()
    try:
        assert spooled.num_samples == n and len(spooled.track) == n // 3
        assert peak < 16, f"spooling traced {peak:.1f} MB"
    finally:
        spooled.close()


def test_spooled_samples_read_contiguous_slices_only(tmp_path):
    f = tmp_path / "raw.f32"
    np.arange(10, dtype="<f4").tofile(f)
    with open(f, "rb") as fh:
        s = SpooledSamples(fh.fileno(), 8, 8, lo=2.0, hi=9.0)
        assert len(s) == 8 and np.array_equal(s[0:3], [2, 3, 4]) and np.array_equal(s[-2:], [8, 9])
        assert np.array_equal(s[5:100], [7, 8, 9]) and s[6:2].size == 0
        with pytest.raises(IndexError):
            s[0:8:2]
        with pytest.raises(TypeError):
            s[3]
        short = SpooledSamples(fh.fileno(), 8, 12)  # the file ends before sample 12
        with pytest.raises(AudioError):
            short[0:12]
