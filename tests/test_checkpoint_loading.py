"""sadtalker_ext.models.loading: safetensors sections, safe torch loading and strict key/shape checks."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sadtalker_ext.errors import CheckpointError  # noqa: E402
from sadtalker_ext.models.loading import (SADTALKER_SECTIONS, SafetensorsCheckpoint,  # noqa: E402
                                          clear_cache, load_torch_checkpoint, strict_load)

ST_NAME = "SadTalker_V0.0.2_256.safetensors"


@pytest.fixture(scope="session")
def manifest(reference_dir):
    return json.loads((reference_dir / "manifests" / f"{ST_NAME}.json").read_text())


@pytest.fixture(scope="session")
def sadtalker_ckpt(synthetic_checkpoints):
    """The 725 MB synthetic file, opened once for the session."""
    return SafetensorsCheckpoint(synthetic_checkpoints / ST_NAME)


@pytest.fixture(scope="module")
def audio_sections(sadtalker_ckpt):
    return {p: sadtalker_ckpt.section(p) for p in ("audio2exp.", "audio2pose.")}


@pytest.fixture
def small_copy(tmp_path, audio_sections):
    """Write a reduced copy of the official file (its audio2exp./audio2pose. entries)."""
    def write(drop=(), replace=None, name="SadTalker_V0.0.2_256.safetensors"):
        tensors = {p + k: v for p, sec in audio_sections.items() for k, v in sec.items()}
        for k in drop:
            del tensors[k]
        tensors.update(replace or {})
        path = tmp_path / name
        safetensors_torch.save_file(tensors, str(path))
        return path
    return write


# ------------------------------------------------------------------------------------------
# the real layout
# ------------------------------------------------------------------------------------------

def test_every_section_matches_the_manifest(sadtalker_ckpt, manifest, reference_dir):
    assert len(sadtalker_ckpt) == 1305
    rule = json.loads((reference_dir / "weight_rule_check.json").read_text())["files"][ST_NAME]
    total = 0
    for prefix in SADTALKER_SECTIONS:
        sec = sadtalker_ckpt.section(prefix)
        expected = {k[len(prefix):]: v for k, v in manifest["keys"].items() if k.startswith(prefix)}
        assert {k: list(t.shape) for k, t in sec.items()} == \
            {k: v["shape"] for k, v in expected.items()}, prefix
        for k, t in sec.items():
            assert str(t.dtype) == f"torch.{expected[k]['dtype']}", k
            fp = rule[prefix + k]  # the stored values: fingerprints of the rule tensors
            flat = t.reshape(-1)
            np.testing.assert_array_equal(flat[:3].numpy(), np.asarray(fp["first"], flat.numpy().dtype))
            assert abs(float(t.double().sum()) - fp["sum"]) <= 1e-6 * max(1.0, fp["abs_sum"]), k
        total += len(sec)
        del sec
    assert total == 1305


def test_section_is_cached_and_unknown_prefix_fails(sadtalker_ckpt, synthetic_checkpoints):
    assert SafetensorsCheckpoint(synthetic_checkpoints / ST_NAME) is sadtalker_ckpt
    assert SafetensorsCheckpoint(str(synthetic_checkpoints / ".." / synthetic_checkpoints.name
                                     / ST_NAME)) is sadtalker_ckpt  # resolved path
    with pytest.raises(CheckpointError, match="he_estimator"):
        sadtalker_ckpt.section("he_estimator.")


def test_our_modules_load_with_zero_missing_or_unexpected(sadtalker_ckpt, audio_sections):
    from sadtalker_ext.face.recon_net import ReconNet, load_recon_net
    from sadtalker_ext.motion.sadtalker import ExpNet, PoseVAE, load_audio2exp, load_audio2pose
    from sadtalker_ext.motion.sadtalker.posevae import TRAINING_ONLY_PREFIXES

    assert set(ExpNet().state_dict()) == set(audio_sections["audio2exp."])
    pose_keys = set(audio_sections["audio2pose."])
    training = {k for k in pose_keys if k.startswith(TRAINING_ONLY_PREFIXES)}
    assert len(training) == 174  # CVAE encoder (154) + motion discriminator (20)
    assert set(PoseVAE().state_dict()) == pose_keys - training
    assert set(ReconNet().state_dict()) == set(sadtalker_ckpt.section("face_3drecon."))
    net = load_audio2exp(sadtalker_ckpt)
    assert torch.equal(net.mapping1.bias, audio_sections["audio2exp."]["mapping1.bias"])
    load_audio2pose(sadtalker_ckpt)
    load_recon_net(sadtalker_ckpt)


def test_torch_files_load_with_key_and_prefix(synthetic_checkpoints, reference_dir):
    for name in ("mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"):
        sd = load_torch_checkpoint(synthetic_checkpoints / name, key="mapping")
        man = json.loads((reference_dir / "manifests" / f"{name}.json").read_text())
        assert {k: list(v.shape) for k, v in sd.items()} == \
            {k: v["shape"] for k, v in man["keys"].items()}
    sd = load_torch_checkpoint(synthetic_checkpoints / "wav2lip.pth", key="state_dict",
                               strip_prefix="module.")
    man = json.loads((reference_dir / "manifests" / "wav2lip.pth.json").read_text())
    assert list(sd) == [k[len("module."):] for k in man["keys"]]
    whole = load_torch_checkpoint(synthetic_checkpoints / "mapping_00229-model.pth.tar")
    assert set(whole) == {"mapping", "epoch"}


# ------------------------------------------------------------------------------------------
# mismatching and damaged safetensors files
# ------------------------------------------------------------------------------------------

def test_removed_tensor_is_named(small_copy):
    from sadtalker_ext.motion.sadtalker import load_audio2exp
    path = small_copy(drop=["audio2exp.mapping1.bias"])
    with pytest.raises(CheckpointError) as err:
        load_audio2exp(path)
    msg = str(err.value)
    assert "audio2exp.mapping1.bias" in msg and str(path) in msg and "missing" in msg
    assert "SadTalker_V0.0.2_256.safetensors" in msg and "\n" not in msg


def test_reshaped_tensor_is_named(small_copy, audio_sections):
    from sadtalker_ext.motion.sadtalker import load_audio2exp
    w = audio_sections["audio2exp."]["mapping1.weight"]
    path = small_copy(replace={"audio2exp.mapping1.weight": w.reshape(577, 64).contiguous()})
    with pytest.raises(CheckpointError) as err:
        load_audio2exp(path)
    msg = str(err.value)
    assert "audio2exp.mapping1.weight: expected [64, 577] got [577, 64]" in msg
    assert str(path) in msg


def test_unexpected_and_many_missing_keys_are_summarised(small_copy, audio_sections):
    from sadtalker_ext.motion.sadtalker import load_audio2pose
    drop = [f"audio2pose.{k}" for k in audio_sections["audio2pose."]
            if k.startswith("netG.decoder.resunet.")][:20]
    path = small_copy(drop=drop, replace={"audio2pose.netG.decoder.extra": torch.zeros(3)})
    with pytest.raises(CheckpointError) as err:
        load_audio2pose(path)
    msg = str(err.value)
    assert "20 missing keys" in msg and "and 15 more" in msg
    assert sum(k in msg for k in drop) == 5  # the first five are listed by name
    assert "1 unexpected key (audio2pose.netG.decoder.extra)" in msg


def test_truncated_safetensors_fails(small_copy, tmp_path):
    data = small_copy().read_bytes()
    for n, what in ((len(data) - 10, "ends before"), (1_000_000, "ends before"),
                    (200, "header"), (5, "bytes long")):
        bad = tmp_path / f"cut_{n}.safetensors"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=what) as err:
            SafetensorsCheckpoint(bad)
        assert str(bad) in str(err.value) and "download" in str(err.value)


def test_garbage_safetensors_header_fails(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    body = b"{not json at all}"
    bad.write_bytes(len(body).to_bytes(8, "little") + body + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        SafetensorsCheckpoint(bad)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header"):
        SafetensorsCheckpoint(huge)
    with pytest.raises(CheckpointError, match="not found"):
        SafetensorsCheckpoint(tmp_path / "absent.safetensors")


def test_cache_follows_file_changes(small_copy):
    path = small_copy()
    a = SafetensorsCheckpoint(path)
    assert SafetensorsCheckpoint(path) is a
    clear_cache()
    b = SafetensorsCheckpoint(path)
    assert b is not a and b.keys() == a.keys()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    c = SafetensorsCheckpoint(path)
    assert c is not b and SafetensorsCheckpoint(path) is c


# ------------------------------------------------------------------------------------------
# torch pickles
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mapping_sd(synthetic_checkpoints):
    return load_torch_checkpoint(synthetic_checkpoints / "mapping_00229-model.pth.tar", "mapping")


def test_mapping_copy_with_removed_or_reshaped_tensor(tmp_path, mapping_sd):
    from sadtalker_ext.motion.sadtalker import load_mapping
    removed = dict(mapping_sd)
    del removed["fc_t.bias"]
    p1 = tmp_path / "mapping_removed.pth.tar"
    torch.save({"mapping": removed, "epoch": 0}, p1)
    with pytest.raises(CheckpointError) as err:
        load_mapping(p1)
    assert "fc_t.bias" in str(err.value) and str(p1) in str(err.value)
    reshaped = dict(mapping_sd)
    reshaped["fc_exp.weight"] = mapping_sd["fc_exp.weight"].reshape(1024, 45).contiguous()
    p2 = tmp_path / "mapping_reshaped.pth.tar"
    torch.save({"mapping": reshaped, "epoch": 0}, p2)
    with pytest.raises(CheckpointError) as err:
        load_mapping(p2)
    assert "fc_exp.weight: expected [45, 1024] got [1024, 45]" in str(err.value)
    # asking for the 73-coefficient net with the 70-coefficient file
    p3 = tmp_path / "mapping70.pth.tar"
    torch.save({"mapping": mapping_sd, "epoch": 0}, p3)
    with pytest.raises(CheckpointError, match=r"first\.0\.weight: expected \[1024, 73, 7\] got"):
        load_mapping(p3, coeff_nc=73)


def test_truncated_torch_file_fails(tmp_path, synthetic_checkpoints):
    data = (synthetic_checkpoints / "mapping_00229-model.pth.tar").read_bytes()
    for n in (len(data) - 100, 1_000_000, 10):
        bad = tmp_path / f"mapping_cut_{n}.pth.tar"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as err:
            load_torch_checkpoint(bad, key="mapping", expected="mapping_00229-model.pth.tar")
        msg = str(err.value)
        assert str(bad) in msg and "mapping_00229-model.pth.tar again" in msg and "\n" not in msg
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello world, not a checkpoint" * 10)
    with pytest.raises(CheckpointError):
        load_torch_checkpoint(junk)


def test_pickles_that_are_not_state_dicts(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_torch_checkpoint(p)
    p = tmp_path / "nested.pth"
    torch.save({"mapping": [1, 2, 3], "epoch": 0}, p)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_torch_checkpoint(p, key="mapping")
    p = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, p)
    with pytest.raises(CheckpointError, match="no 'mapping' entry.*state_dict"):
        load_torch_checkpoint(p, key="mapping")
    with pytest.raises(CheckpointError, match="not found"):
        load_torch_checkpoint(tmp_path / "absent.pth")


class _CreatesFile:
    """A pickle payload that creates a file when unpickled by a normal unpickler."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    control = tmp_path / "control_created"
    pickle.loads(pickle.dumps(_CreatesFile(control), protocol=2))
    assert control.exists()  # the payload is live: a plain unpickler runs it

    target = tmp_path / "pwned"
    zipped = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFile(target)}, zipped)
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps({"state_dict": _CreatesFile(target)}, protocol=2))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError) as err:
            load_torch_checkpoint(path, key="state_dict", expected="wav2lip.pth")
        msg = str(err.value)
        assert str(path) in msg and "Refused" in msg and "wav2lip.pth" in msg
        assert not target.exists()


# ------------------------------------------------------------------------------------------
# strict_load itself
# ------------------------------------------------------------------------------------------

def test_strict_load_copies_values_and_checks_before_loading():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sd = {k: torch.full_like(v, 2) for k, v in net.state_dict().items()}
    assert strict_load(net, sd, file="x.pth", expected="x.pth") is net
    assert torch.all(net[0].weight == 2)
    bad = dict(sd)
    bad["0.weight"] = torch.zeros(4, 4)
    before = net[0].bias.clone()
    bad["0.bias"] = torch.full((4,), 7.0)
    with pytest.raises(CheckpointError, match=r"0\.weight: expected \[4, 3\] got \[4, 4\]"):
        strict_load(net, bad, file="x.pth", expected="x.pth")
    assert torch.equal(net[0].bias, before)  # nothing was loaded
    with pytest.raises(CheckpointError, match="not-a-tensor|expected tensor"):
        strict_load(net, {**sd, "0.bias": [1, 2, 3, 4]}, file="x.pth", expected="x.pth")
