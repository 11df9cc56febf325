"""One model cache (sadtalker_ext.models.cache): every kept model, one release, one device/precision rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker_ext.errors import OptionError
from sadtalker_ext.models import cache as C
from sadtalker_ext.options import GenerateOptions


@pytest.fixture(autouse=True)
def _empty_cache():
    C.release_models()
    yield
    C.release_models()


def test_the_cache_builds_once_keeps_the_latest_and_releases_everything():
    mc = C.ModelCache()
    built = []

    def build(tag):
        built.append(tag)
        return object()

    a = mc.get(("k", 1), lambda: build("a"))
    assert mc.get(("k", 1), lambda: build("again")) is a and built == ["a"]
    b = mc.get_latest(("big", 1), lambda: build("b"))
    c = mc.get_latest(("big", 2), lambda: build("c"))  # the older model of that kind is dropped
    assert b is not c and mc.kinds() == {"k": 1, "big": 1}
    released = []
    mc.on_release(lambda: released.append(1))
    mc.release()
    assert mc.kinds() == {} and released == [1]
    assert mc.get(("k", 1), lambda: build("d")) is not a and built == ["a", "b", "c", "d"]


def test_wav2lip_is_loaded_once_and_released_by_the_hosts_release(synthetic_checkpoints):
    from sadtalker_ext.host import a1111
    from sadtalker_ext.lipsync.stage import lipsync_stage_for

    opts = GenerateOptions(lipsync="wav2lip", checkpoints=str(synthetic_checkpoints), device="cpu")
    first = lipsync_stage_for(opts)
    second = lipsync_stage_for(opts)
    assert first is not second and first.load() is second.load()  # two runs, one network
    assert C.MODELS.kinds().get("wav2lip") == 1
    a1111.release_models()
    assert C.MODELS.kinds() == {}
    assert lipsync_stage_for(opts).load() is not first.load()


def test_the_diffusers_model_is_one_and_goes_with_the_release(tmp_path, monkeypatch):
    from sadtalker_ext.refine import backends

    made = []

    class FakeDiffusers:  # the real one needs a Stable Diffusion checkpoint
        def __init__(self, path, config=None, device="auto", precision="fp32"):
            made.append((str(path), device, precision))

    monkeypatch.setattr(backends, "DiffusersBackend", FakeDiffusers)
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    one.write_bytes(b"x")
    two.write_bytes(b"y")
    b1 = backends.make_backend(sd_checkpoint=one)
    assert backends.make_backend(sd_checkpoint=one) is b1 and len(made) == 1
    b2 = backends.make_backend(sd_checkpoint=two)
    assert b2 is not b1 and C.MODELS.kinds() == {"diffusers": 1}  # one img2img model in memory
    C.release_models()
    assert C.MODELS.kinds() == {} and backends.make_backend(sd_checkpoint=two) is not b2 and len(made) == 3


def test_open_safetensors_files_close_with_the_release(tmp_path):
    from safetensors.numpy import save_file

    from sadtalker_ext.models.loading import SafetensorsCheckpoint

    path = tmp_path / "w.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32)}, str(path))
    first = SafetensorsCheckpoint(path)
    assert SafetensorsCheckpoint(path) is first
    C.release_models()
    assert SafetensorsCheckpoint(path) is not first


def test_device_and_precision_are_resolved_one_way():
    assert C.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert C.resolve_device(None) == C.resolve_device("auto") and C.resolve_device("cpu").type == "cpu"
    with pytest.raises(OptionError, match="--device 'nonsense' is not valid"):
        C.resolve_device("nonsense")
    if torch.cuda.is_available():
        assert C.resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(OptionError, match="sees no CUDA GPU"):
            C.resolve_device("cuda")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert C.resolve_dtype("fp16", cpu) == torch.float32  # reduced precision on CUDA only
    assert C.resolve_dtype("fp16", cuda) == torch.float16 and C.resolve_dtype("bf16", cuda) == torch.bfloat16
    assert C.resolve_dtype("bf16", cuda, supported=("fp32", "fp16")) == torch.float32  # no bf16 path
    assert C.resolve_dtype(None, cuda) == torch.float32
    # bf16 on the CPU only for a model that asks for it and a CPU that has it natively
    assert C.resolve_dtype("bf16", cpu, cpu_bf16=lambda: True) == torch.bfloat16
    assert C.resolve_dtype("bf16", cpu, cpu_bf16=lambda: False) == torch.float32
    assert C.resolve_dtype("bf16", cpu) == torch.float32
    with pytest.raises(OptionError, match="--precision 'fp8'"):
        C.resolve_dtype("fp8", cpu)
