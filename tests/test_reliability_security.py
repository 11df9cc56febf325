"""Security: the HTTP API never reads or writes a server path outside the output folder, uploads are
size-limited, checkpoints are only unpickled with ``weights_only=True`` (or read as safetensors), and
every API route honours the configured auth.

* Path traversal in every string field: the request's ``image``/``audio``, every string option of
  :class:`GenerateOptions` (found by introspection, so a new option is covered), unknown path-like
  fields and options, multipart file names with ``../``, absolute paths, ``~``, ``file://``, Windows
  and UNC paths, and a symlink in the output folder that points at a secret outside. The secrets are
  a real portrait and a real WAV: had the server read one, the request would have succeeded. Files
  outside the output folder are compared (names, sizes, mtimes) before and after; the output folder
  holds only server-named videos and sidecars of the successful requests.
* A symlink already at the output name is replaced, never written through.
* A pixel bomb (a tiny PNG of 10,000 x 10,000) is refused with 413 before it is decoded.
* Malicious pickles (zip and raw) as Wav2Lip, MappingNet and SD checkpoints: refused with one line,
  through the pipeline, the CLI and the HTTP API; the payload never runs (no marker file). A scan
  of the package finds no unpickling outside ``models/loading.py``'s ``weights_only=True``.
* Auth: every route under the API prefix (enumerated from the app) answers 401 without or with
  wrong credentials, and works with the right ones.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import CheckpointError
from sadtalker_ext.host.base import LocalHost
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import generate

from test_reliability_common import (LITE, TALLY, leftovers, one_line, png_bytes, summary,  # noqa: F401,E402
                                     wav_bytes)

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sadtalker_ext import api  # noqa: E402
from sadtalker_ext.api import PREFIX  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
URL = PREFIX + "/generate"
OUTPUT_NAME = re.compile(r"^\d{8}-\d{6}-lite-\d+(-\d+)?\.(mp4|json)$")


@pytest.fixture(scope="module")
def speech(arctic_wav) -> np.ndarray:
    from sadtalker_ext.audio.decode import load_audio
    return load_audio(arctic_wav).samples


@pytest.fixture
def world(tmp_path, astronaut, speech):
    """A server root: ``out`` (the output folder), ``outside`` with a secret portrait and WAV, a
    symlink in ``out`` pointing at the secret portrait, and an API app on a LocalHost."""
    out, outside, models = tmp_path / "out", tmp_path / "outside", tmp_path / "models"
    for d in (out, outside, models):
        d.mkdir()
    png = png_bytes(astronaut)
    wav = wav_bytes(speech[8000:16000], 16000)
    (outside / "secret.png").write_bytes(png)
    (outside / "secret.wav").write_bytes(wav)
    (out / "link.png").symlink_to(outside / "secret.png")
    app = fastapi.FastAPI()
    host = LocalHost(output_dir=out, models_dir=models)
    api.mount(app, host)
    with TestClient(app) as client:
        yield {"root": tmp_path, "out": out, "outside": outside, "models": models, "client": client,
               "png": png, "wav": wav, "img64": base64.b64encode(png).decode(), "aud64": base64.b64encode(wav).decode()}


def _snapshot(root: Path, skip: Path) -> dict:
    snap = {}
    for p in root.rglob("*"):
        if skip in p.parents or p == skip:
            continue
        st = p.lstat()
        snap[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return snap


def _traversals(w) -> list:
    secret = w["outside"] / "secret.png"
    return [str(secret), "../outside/secret.png", "../../outside/secret.png", "..\\..\\outside\\secret.png",
            "/etc/passwd", "file:///etc/passwd", f"file://{secret}", "~/secret.png", str(w["out"] / "link.png"),
            "C:\\Windows\\win.ini", "\\\\server\\share\\face.png", "%2e%2e%2foutside%2fsecret.png",
            "secret.png", "./secret.png", "link.png"]


def _attack(client, body, **kw):
    TALLY.add("attacks_tried")
    TALLY.add("requests_sent")
    return client.post(URL, json=body, **kw) if "files" not in kw else client.post(URL, **kw)


def _refused(resp) -> bool:
    ok = 400 <= resp.status_code < 500 and one_line(resp.json().get("detail", ""))
    if ok:
        TALLY.add("attacks_refused")
    return ok


def test_path_traversal_in_every_string_field(world):
    client, out = world["client"], world["out"]
    before = _snapshot(world["root"], out)
    img, aud = world["img64"], world["aud64"]
    served = []
    for value in _traversals(world):
        for field in ("image", "audio"):                                        # the files themselves
            body = {"image": img, "audio": aud, "options": LITE, field: value}
            r = _attack(client, body)
            assert _refused(r), (field, value, r.status_code, r.text)
        for field in ("image_path", "audio_path", "output", "out", "output_dir", "filename", "path"):
            r = _attack(client, {"image": img, "audio": aud, "options": LITE, field: value})
            assert _refused(r), (field, value, r.status_code, r.text)
    string_options = [f.name for f in __import__("dataclasses").fields(GenerateOptions)
                      if "str" in str(f.type) or f.type == "object"]
    path_options = {"checkpoints", "ref_pose", "ref_eyeblink", "lipsync_debug", "sd_checkpoint", "refine"}
    assert path_options <= set(string_options)
    for name in string_options + ["out", "output", "output_dir", "filename", "save_to", "models_dir"]:
        values = _traversals(world) if name != "transcript" else _traversals(world)[:2]
        for value in values:
            r = _attack(client, {"image": img, "audio": aud, "options": {**LITE, name: value}})
            if name == "transcript" and r.status_code == 200:   # free text, never a path: harmless
                served.append(r.json())
                TALLY.add("attacks_refused")
                TALLY.add("requests_served")
                continue
            assert _refused(r), (name, value, r.status_code, r.text)
    # multipart: path-like text parts, and file names with ../ (ignored: the server names its files)
    for value in _traversals(world)[:6]:
        r = _attack(client, None, files={"image": ("a.png", world["png"], "image/png")}, data={"audio": value})
        assert _refused(r), (value, r.text)
    TALLY.add("attacks_tried")
    TALLY.add("requests_sent")
    r = client.post(URL, files={"image": ("../../../outside/evil.png", world["png"], "image/png"),
                                "audio": ("/tmp/../outside/evil.wav", world["wav"], "audio/wav")},
                    data={"options": json.dumps(LITE)})
    assert r.status_code == 200, r.text
    TALLY.add("attacks_refused")
    TALLY.add("requests_served")
    served.append(r.json())
    # nothing outside the output folder changed; inside, only server-named results
    assert _snapshot(world["root"], out) == before
    assert not list(world["root"].rglob("evil*")) and not list(Path.cwd().glob("evil*"))
    names = sorted(p for p in leftovers(out) if p != "link.png")
    assert names == sorted(n for s in served for n in (s["filename"], s["sidecar"]))
    assert all(OUTPUT_NAME.match(n) for n in names), names
    assert (out / "link.png").is_symlink() and (world["outside"] / "secret.png").read_bytes() == world["png"]
    secret_text = (world["outside"] / "secret.png").read_bytes()[:64]
    assert all(secret_text.decode("latin1") not in json.dumps(s) for s in served)


def test_symlink_at_the_output_name_is_replaced_not_followed(world, monkeypatch):
    import sadtalker_ext.jobs as jobs
    monkeypatch.setattr(jobs.time, "strftime", lambda *a: "20990101-000000")
    out, outside = world["out"], world["outside"]
    (outside / "existing.mp4").write_bytes(b"precious")
    (out / "20990101-000000-lite-0.mp4").symlink_to(outside / "target.mp4")       # dangling
    (out / "20990101-000000-lite-0-1.mp4").symlink_to(outside / "existing.mp4")   # to a real file
    TALLY.add("attacks_tried")
    TALLY.add("requests_sent")
    r = world["client"].post(URL, json={"image": world["img64"], "audio": world["aud64"], "options": LITE})
    assert r.status_code == 200, r.text
    TALLY.add("requests_served")
    name = r.json()["filename"]
    assert (out / name).is_file() and not (out / name).is_symlink()
    assert not (outside / "target.mp4").exists() and (outside / "existing.mp4").read_bytes() == b"precious"
    TALLY.add("attacks_refused")


def test_pixel_bomb_refused_before_decoding(world):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")      # ~ 12 kB on disk, 100 MP
    assert len(buf.getvalue()) < 200_000
    r = _attack(world["client"], {"image": base64.b64encode(buf.getvalue()).decode(), "audio": world["aud64"]})
    assert r.status_code == 413 and "8192x8192" in r.json()["detail"], r.text
    assert _refused(r)


# ============================================================================ pickles
def _malicious(path: Path, marker: Path, raw: bool, key="state_dict"):
    import pickle

    import torch

    from test_checkpoint_loading import _CreatesFile
    if raw:
        path.write_bytes(pickle.dumps({key: _CreatesFile(marker)}, protocol=2))
    else:
        torch.save({key: {"w": torch.zeros(1)}, "extra": _CreatesFile(marker)}, path)
    return path


@pytest.mark.parametrize("raw", [False, True], ids=["zip", "raw"])
@pytest.mark.parametrize("frontend", ["python", "cli", "http"])
def test_malicious_wav2lip_checkpoint_never_runs(frontend, raw, world, tmp_path, capfd):
    pytest.importorskip("torch")
    TALLY.add("attacks_tried")
    marker = tmp_path / "PWNED"
    ckdir = world["models"] if frontend == "http" else tmp_path / "ck"
    ckdir.mkdir(exist_ok=True)
    _malicious(ckdir / "wav2lip_gan.pth", marker, raw)
    image, audio = world["outside"] / "secret.png", world["outside"] / "secret.wav"
    opts = {**LITE, "lipsync": "wav2lip"}
    if frontend == "python":
        with pytest.raises(CheckpointError) as err:
            generate(image, audio, tmp_path / "x.mp4", GenerateOptions(**opts, checkpoints=str(ckdir)))
        message = str(err.value)
    elif frontend == "cli":
        from sadtalker_ext.cli.main import main
        capfd.readouterr()
        rc = main(["--quiet", "generate", "--image", str(image), "--audio", str(audio), "--out",
                   str(tmp_path / "x.mp4"), "--engine", "lite", "--size", "256", "--phonemes", "acoustic",
                   "--lipsync", "wav2lip", "--checkpoints", str(ckdir)])
        err_text = capfd.readouterr().err
        assert rc == 2 and "Traceback" not in err_text
        message = [ln for ln in err_text.splitlines() if ln.startswith("error:")][0]
    else:
        TALLY.add("requests_sent")
        r = world["client"].post(URL, json={"image": world["img64"], "audio": world["aud64"], "options": opts})
        assert r.status_code == 503 and r.json()["error"] == "CheckpointError", r.text
        message = r.json()["detail"]
    assert "Refused" in message or "weights_only" in message or "could not be read" in message, message
    assert one_line(message)
    assert not marker.exists()
    assert not (tmp_path / "x.mp4").exists() and [p for p in leftovers(world["out"]) if p != "link.png"] == []
    TALLY.add("attacks_refused")


def test_malicious_mapping_checkpoint_never_runs(synthetic_checkpoints, astronaut, speech, tmp_path):
    TALLY.add("attacks_tried")
    from sadtalker_ext.audio.decode import AudioClip
    marker = tmp_path / "PWNED"
    ck = tmp_path / "ck"
    ck.mkdir()
    os.symlink(synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors", ck / "SadTalker_V0.0.2_256.safetensors")
    _malicious(ck / "mapping_00229-model.pth.tar", marker, raw=False, key="mapping")
    with pytest.raises(CheckpointError) as err:
        generate(astronaut, AudioClip(speech[:8000], 16000), tmp_path / "x.mp4",
                 GenerateOptions(engine="sadtalker", size=256, checkpoints=str(ck)))
    assert "mapping_00229-model.pth.tar" in str(err.value) and one_line(str(err.value))
    assert not marker.exists() and not (tmp_path / "x.mp4").exists()
    TALLY.add("attacks_refused")


def test_malicious_sd_checkpoint_never_runs(tmp_path, monkeypatch):
    """--sd-checkpoint evil.ckpt (CLI only; the API refuses the option): diffusers reads it with
    torch.load(weights_only=True), which refuses the payload."""
    pytest.importorskip("diffusers")
    import torch

    from sadtalker_ext.refine.backends import DiffusersBackend
    TALLY.add("attacks_tried")
    marker = tmp_path / "PWNED"
    evil = _malicious(tmp_path / "evil.ckpt", marker, raw=False)
    loads = []
    real_load = torch.load

    def spy(f, *a, **kw):
        loads.append((str(f), kw.get("weights_only")))
        return real_load(f, *a, **kw)
    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CheckpointError) as err:
        DiffusersBackend(evil, device="cpu").load()
    assert one_line(str(err.value)) and not marker.exists()
    assert (str(evil), True) in loads, loads  # the file was really opened, and only as weights
    TALLY.add("attacks_refused")


def test_no_unsafe_deserialisation_in_the_package():
    """Every torch.load passes weights_only=True; no pickle/marshal/yaml.load/eval/exec/allow_pickle."""
    bad = []
    for path in sorted((REPO / "sadtalker_ext").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if owner == "torch" and name == "load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where} torch.load without weights_only=True")
            if owner in ("pickle", "marshal", "dill", "cloudpickle", "joblib") and name in ("load", "loads"):
                bad.append(f"{where} {owner}.{name}")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
                bad.append(f"{where} yaml.{name}")
            if name in ("eval", "exec") and isinstance(f, ast.Name):
                bad.append(f"{where} {name}()")
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                bad.append(f"{where} allow_pickle=True")
    assert bad == []


# ============================================================================ auth
def test_every_api_route_honours_auth(tmp_path):
    app = fastapi.FastAPI()
    api.mount(app, LocalHost(output_dir=tmp_path / "out"), auth="alice:s3cret,bob:pw:with:colons")
    routes = [(r.path, m) for r in app.routes if getattr(r, "path", "").startswith(PREFIX) for m in r.methods]
    assert {(PREFIX + "/generate", "POST"), (PREFIX + "/models", "GET")} <= set(routes)
    with TestClient(app) as client:
        for path, method in routes:
            for auth in (None, ("alice", "wrong"), ("mallory", "s3cret"), ("alice", ""), ("", "")):
                TALLY.add("attacks_tried")
                r = client.request(method, path, auth=auth, json={} if method == "POST" else None)
                assert r.status_code == 401 and r.headers.get("www-authenticate") == "Basic", (path, method, auth)
                TALLY.add("attacks_refused")
            for auth in (("alice", "s3cret"), ("bob", "pw:with:colons")):
                r = client.request(method, path, auth=auth, json={} if method == "POST" else None)
                assert r.status_code != 401, (path, method, auth, r.text)
