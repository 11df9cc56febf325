"""Deep3DFaceRecon ResNet-50 regressor (ReconNetWrapper) against recon_net.npz."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import golden_tol  # noqa: E402
from sadtalker_ext.face.recon_net import (NUM_COEFFS, ReconNet, load_recon_net,  # noqa: E402
                                          sadtalker_coeffs, split_coeffs)
from sadtalker_ext.models.loading import SafetensorsCheckpoint  # noqa: E402


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "goldens" / "recon_net.npz") as z:
        return {k: z[k] for k in ("image", "coeffs_257", "backbone_features")}


@pytest.fixture(scope="module")
def net(synthetic_checkpoints):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_recon_net(SafetensorsCheckpoint(
        synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors"))


@pytest.fixture(scope="module")
def run(net, golden):
    feats = []
    hook = net.backbone.register_forward_hook(lambda m, i, o: feats.append(o.clone()))
    try:
        with torch.no_grad():
            coeffs = net(torch.from_numpy(golden["image"]))
    finally:
        hook.remove()
    return {"coeffs_257": coeffs.numpy(), "backbone_features": feats[0].numpy()}


@pytest.mark.parametrize("name", ["coeffs_257", "backbone_features"])
def test_matches_golden(run, golden, name):
    ours = run[name]
    assert ours.shape == golden[name].shape and ours.dtype == np.float32
    diff = float(np.max(np.abs(ours - golden[name])))
    assert diff <= golden_tol(golden[name]), f"{name}: max|diff| {diff:.3g}"


def test_layout_matches_manifest(reference_dir):
    manifest = json.loads((reference_dir / "manifests" /
                           "SadTalker_V0.0.2_256.safetensors.json").read_text())
    prefix = "face_3drecon."
    expected = {k[len(prefix):]: tuple(v["shape"]) for k, v in manifest["keys"].items()
                if k.startswith(prefix)}
    ours = {k: tuple(v.shape) for k, v in ReconNet().state_dict().items()}
    assert ours == expected
    assert len(ours) == 332


def test_split_and_sadtalker_columns(run):
    coeffs = torch.from_numpy(run["coeffs_257"])
    parts = split_coeffs(coeffs)
    assert {k: v.shape[1] for k, v in parts.items()} == {
        "id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans": 3}
    assert NUM_COEFFS == 257
    st = sadtalker_coeffs(coeffs).numpy()
    c = run["coeffs_257"]
    np.testing.assert_array_equal(st, np.concatenate([c[:, 80:144], c[:, 224:227], c[:, 254:257]], 1))


def test_loaded_net_is_eval_and_frozen(net):
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())


def test_torchvision_is_not_imported():
    """The backbone is written out; the module must not depend on torchvision."""
    src = Path(__file__).resolve().parents[1] / "sadtalker_ext" / "face" / "recon_net.py"
    tree = ast.parse(src.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert "torch" in imported and "torchvision" not in imported
