"""Wav2Lip generator: official checkpoint layout, strict loading errors, and the golden outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import golden_tol  # noqa: E402
from sadtalker_ext.errors import CheckpointError, InputError  # noqa: E402
from sadtalker_ext.lipsync.wav2lip_net import Wav2Lip, load_wav2lip  # noqa: E402


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "goldens" / "wav2lip.npz") as z:
        return {k: z[k] for k in ("mel", "face", "prediction", "audio_embedding")}


@pytest.fixture(scope="module")
def model(synthetic_checkpoints):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_wav2lip(synthetic_checkpoints / "wav2lip.pth")


@pytest.fixture(scope="module")
def output(model, golden):
    with torch.no_grad():
        return model.forward_with_embedding(torch.from_numpy(golden["mel"]),
                                            torch.from_numpy(golden["face"]))


def test_state_dict_layout_matches_manifest(reference_dir):
    manifest = json.loads((reference_dir / "manifests" / "wav2lip.pth.json").read_text())
    expected = [(k[len("module."):], tuple(v["shape"])) for k, v in manifest["keys"].items()]
    ours = [(k, tuple(v.shape)) for k, v in Wav2Lip().state_dict().items()]
    assert ours == expected
    assert sum(p.numel() for p in Wav2Lip().parameters()) == 36_298_035


@pytest.mark.parametrize("name", ["prediction", "audio_embedding"])
def test_matches_golden(output, golden, name):
    ours = getattr(output, name).numpy()
    assert ours.shape == golden[name].shape
    diff = float(np.max(np.abs(ours - golden[name])))
    assert diff <= golden_tol(golden[name]), f"{name}: max|diff| {diff:.3g}"


def test_loaded_model_is_eval_and_frozen(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_sequence_form_and_split_pieces_agree_with_golden(model, golden):
    mel = torch.from_numpy(golden["mel"])
    face = torch.from_numpy(golden["face"])
    with torch.no_grad():
        # official 5-D form: one batch item holding the two golden frames as time steps
        seq = model(mel.unsqueeze(0), face.permute(1, 0, 2, 3).unsqueeze(0))
        assert seq.shape == (1, 3, 2, 96, 96)
        # the composable pieces, with face features computed separately per frame
        feats = [model.encode_face(face[i:i + 1]) for i in range(2)]
        emb = model.encode_audio(mel)
        pieces = torch.cat([model.decode(emb[i:i + 1], feats[i]) for i in range(2)])
    tol = golden_tol(golden["prediction"])
    assert np.max(np.abs(seq[0].permute(1, 0, 2, 3).numpy() - golden["prediction"])) <= tol
    assert np.max(np.abs(pieces.numpy() - golden["prediction"])) <= tol


def test_gan_checkpoint_loads_strictly(synthetic_checkpoints, golden):
    # The weight rule depends only on key and shape, so the synthetic GAN file holds the same
    # values as wav2lip.pth: it must load strictly and reproduce the golden as well.
    gan = load_wav2lip(synthetic_checkpoints / "wav2lip_gan.pth")
    with torch.no_grad():
        pred = gan(torch.from_numpy(golden["mel"][:1]), torch.from_numpy(golden["face"][:1]))
    assert np.max(np.abs(pred.numpy() - golden["prediction"][:1])) <= golden_tol(golden["prediction"])


def test_bad_input_shapes_raise_input_error(model):
    with pytest.raises(InputError, match="96x96"):
        model(torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 64, 64))
    with pytest.raises(InputError, match="mel"):
        model(torch.zeros(1, 1, 80, 12), torch.zeros(1, 6, 96, 96))
    with pytest.raises(InputError, match="as many"):
        model(torch.zeros(2, 1, 80, 16), torch.zeros(1, 6, 96, 96))


def test_missing_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "wav2lip.pth"
    with pytest.raises(CheckpointError, match="wav2lip.pth"):
        load_wav2lip(path)


def test_truncated_and_foreign_files_raise_checkpoint_error(tmp_path, synthetic_checkpoints):
    src = (synthetic_checkpoints / "wav2lip.pth").read_bytes()
    truncated = tmp_path / "truncated_wav2lip.pth"
    truncated.write_bytes(src[: len(src) // 3])
    with pytest.raises(CheckpointError, match="truncated_wav2lip.pth"):
        load_wav2lip(truncated)

    pickled_module = tmp_path / "module_wav2lip.pth"  # needs unpickling code: refused by weights_only
    torch.save(torch.nn.Linear(2, 2), pickled_module)
    with pytest.raises(CheckpointError, match="module_wav2lip.pth"):
        load_wav2lip(pickled_module)

    no_tensors = tmp_path / "empty_wav2lip.pth"
    torch.save({"state_dict": {}, "global_step": 3}, no_tensors)
    with pytest.raises(CheckpointError, match="empty_wav2lip.pth"):
        load_wav2lip(no_tensors)


def test_wrong_layout_names_file_and_keys(tmp_path, model):
    sd = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    del sd["module.audio_encoder.3.conv_block.0.weight"]
    sd["module.extra_head.weight"] = torch.zeros(3)
    sd["module.output_block.1.weight"] = torch.zeros(4, 32, 1, 1)
    bad = tmp_path / "other_model.pth"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(CheckpointError) as info:
        load_wav2lip(bad)
    msg = str(info.value)
    assert "other_model.pth" in msg
    assert "audio_encoder.3.conv_block.0.weight" in msg
    assert "extra_head.weight" in msg
    assert "output_block.1.weight" in msg
    assert "\n" not in msg


def test_dtype_option_float64_matches_golden(synthetic_checkpoints, golden):
    m64 = load_wav2lip(synthetic_checkpoints / "wav2lip.pth", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m64.parameters()) and not m64.training
    with torch.no_grad():
        pred = m64(torch.from_numpy(golden["mel"][1:]).double(), torch.from_numpy(golden["face"][1:]).double())
    assert pred.dtype == torch.float64
    assert np.max(np.abs(pred.numpy() - golden["prediction"][1:])) <= golden_tol(golden["prediction"])
