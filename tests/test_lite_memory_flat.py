"""The lite engine's memory does not grow with the speech's length (issue 15): given a speech file, the
run plan keeps the speech in a temporary file at 16 kHz, and speech analysis up to the first frame
(decode, VAD, loudness, formants, visemes, motion) allocates about the same for 8 minutes as for 1.

Measured with tracemalloc (numpy's buffers are traced) over plan_run and everything before the first
frame; the frames themselves stream in chunks (tests/test_bounds.py). Held in memory, 8 minutes at
48 kHz would be 92 MB of float32 plus 31 MB resampled to 16 kHz.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from sadtalker_ext.audio.decode import SpooledClip, load_audio
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import plan_run


def _speech_file(tmp_path, base16: np.ndarray, minutes: float):
    x = resample_poly(base16, 3, 1).astype(np.float32)  # 48 kHz: the resampler is on the path too
    n = int(minutes * 60 * 48000)
    path = tmp_path / f"speech-{minutes:g}.wav"
    sf.write(str(path), np.tile(x, n // len(x) + 1)[:n], 48000, subtype="PCM_16")
    return path


def _traced_peak_mb(astronaut, path) -> tuple[float, int]:
    tracemalloc.start()
    try:
        plan = plan_run(None, GenerateOptions(engine="lite", size=256, phonemes="acoustic"), astronaut, path)
        assert isinstance(plan.ctx.audio, SpooledClip)
        chunks = plan._chunks()  # begin, prepare, motion: all the speech analysis, no frame yet
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        first = next(iter(chunks))
    finally:
        tracemalloc.stop()
    assert len(first) > 0 and plan.ctx.audio.track.fd == -1  # the spool was closed after motion
    return peak, plan.num_frames


def test_speech_analysis_memory_is_flat_in_the_speech_length(tmp_path, astronaut, arctic_wav):
    base = load_audio(arctic_wav).samples
    from sadtalker_ext.engines.lite import LiteEngine
    LiteEngine().prepare(astronaut, GenerateOptions(size=256))  # mediapipe's models load once, untraced
    short, n_short = _traced_peak_mb(astronaut, _speech_file(tmp_path, base, 1))
    long, n_long = _traced_peak_mb(astronaut, _speech_file(tmp_path, base, 8))
    print(f"traced peak before the first frame: 1 min {short:.1f} MB, 8 min {long:.1f} MB")
    assert (n_short, n_long) == (1500, 12000)
    # per-frame values grow (a few float arrays of 12,000 frames: ~2 MB), the speech itself never
    assert long <= 1.15 * short + 4.0, (short, long)
    assert long < 92, long


@pytest.mark.parametrize("opts", [dict(lipsync="wav2lip"), dict(engine="sadtalker")])
def test_runs_whose_stages_read_the_samples_keep_them_in_memory(tmp_path, astronaut, arctic_wav, opts):
    """The spool is only for runs where nothing but the lite engine's analysis reads the speech."""
    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.pipeline import _spools
    options = GenerateOptions(**{"engine": "lite", "size": 256, **opts}).validate()
    assert not _spools(None, options, arctic_wav, None, (), None)
    assert _spools(None, GenerateOptions(engine="lite").validate(), arctic_wav, None, (), None)
    assert not _spools(None, GenerateOptions(engine="lite").validate(), load_audio(arctic_wav), None, (), None)
    assert isinstance(plan_run(None, GenerateOptions(engine="lite", size=256), astronaut,
                               load_audio(arctic_wav)).ctx.audio, AudioClip)


def test_a_temporary_folder_that_refuses_the_spool_falls_back_to_memory(tmp_path, astronaut, arctic_wav,
                                                                        monkeypatch):
    """ENOSPC/EFBIG while spooling is no failure of the run: the speech is decoded in memory instead."""
    import errno

    from sadtalker_ext.audio import decode
    from sadtalker_ext.audio.decode import AudioClip

    class Full:
        def __init__(self, *a, **kw):
            pass

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(decode.tempfile, "TemporaryFile", Full)
    plan = plan_run(None, GenerateOptions(engine="lite", size=256, phonemes="acoustic"), astronaut, arctic_wav)
    assert isinstance(plan.ctx.audio, AudioClip) and plan.num_frames == 100
