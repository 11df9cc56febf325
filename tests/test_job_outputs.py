"""What a saved job leaves behind (issue 13 item 8): its file name names the engine that ran, and its
sidecar records the source image and speech (file name, sha256, duration)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip
from sadtalker_ext.host.base import LocalHost
from sadtalker_ext.jobs import run_job
from sadtalker_ext.options import GenerateOptions


def _wav_duration(path) -> float:
    import soundfile
    info = soundfile.info(str(path))
    return info.frames / info.samplerate


@pytest.fixture
def portrait(astronaut, tmp_path):
    from PIL import Image
    path = tmp_path / "astronaut portrait.png"
    Image.fromarray(astronaut[:320, 96:352]).save(path)
    return path


def test_auto_lite_run_named_after_the_engine_that_ran(portrait, arctic_wav, tmp_path, monkeypatch):
    """engine "auto" without SadTalker files runs lite: the name says lite (it said "auto")."""
    monkeypatch.delenv("SADTALKER_CHECKPOINTS", raising=False)
    host = LocalHost(output_dir=tmp_path / "out")
    opts = GenerateOptions(engine="auto", checkpoints=str(tmp_path / "no-weights"), size=256,
                           phonemes="acoustic", seed=7)
    job = run_job(host, str(portrait), str(arctic_wav), opts)
    assert job.result.engine == "lite"
    assert job.path.name.endswith("-lite-7.mp4") and "auto" not in job.path.name, job.path.name
    side = json.loads(job.sidecar.read_text())
    assert side["engine"] == "lite" and side["options"]["engine"] == "auto"
    # the source files: name, sha256 of their bytes (hashlib here, not the code under test), duration
    src = side["source"]
    assert src["image"]["file"] == "astronaut portrait.png"
    assert src["image"]["sha256"] == hashlib.sha256(portrait.read_bytes()).hexdigest()
    assert src["audio"]["file"] == arctic_wav.name
    assert src["audio"]["sha256"] == hashlib.sha256(arctic_wav.read_bytes()).hexdigest()
    assert src["audio"]["duration_s"] == pytest.approx(_wav_duration(arctic_wav), abs=0.01)


def test_sidecar_describes_pixels_and_samples_from_the_tab(astronaut, tmp_path):
    """The tab hands over decoded pixels and (for text-to-speech) samples: no file name, the sha256 of
    their bytes and what was hashed; the caller's own keys (prompt, API hashes) are kept beside."""
    host = LocalHost(output_dir=tmp_path / "out")
    image = np.ascontiguousarray(astronaut[:256, 96:352])
    t = np.arange(16000 * 2) / 16000
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    job = run_job(host, image, AudioClip(samples, 16000), GenerateOptions(engine="lite", size=256,
                                                                          phonemes="acoustic"),
                  source_info={"prompt": "an astronaut"})
    src = json.loads(job.sidecar.read_text())["source"]
    assert src["prompt"] == "an astronaut"
    assert src["image"] == {"file": None, "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
                            "sha256_of": "uint8 pixels [256, 256, 3]"}
    assert src["audio"]["file"] is None and src["audio"]["sample_rate"] == 16000
    assert src["audio"]["sha256"] == hashlib.sha256(samples.tobytes()).hexdigest()
    assert src["audio"]["duration_s"] == 2.0
