"""The HTTP API (sadtalker_ext/api) with FastAPI's TestClient: round trips on the lite engine,
validation (4xx with one-line messages), auth, the bounded queue, and mounting inside the WebUI."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sadtalker_ext import api  # noqa: E402
from sadtalker_ext.api import inputs  # noqa: E402
from sadtalker_ext.api.queue import JobQueue, QueueFull  # noqa: E402
from sadtalker_ext.engines.base import FrameChunk  # noqa: E402
from sadtalker_ext.host.base import LocalHost  # noqa: E402
from sadtalker_ext.options import GenerateOptions  # noqa: E402

URL = "/talking-head/v1/generate"


@pytest.fixture(scope="module")
def png_bytes(astronaut) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def wav_bytes(arctic_wav) -> bytes:
    """The first 1.2 s of the ARCTIC sentence as 16-bit WAV."""
    import soundfile as sf

    data, rate = sf.read(str(arctic_wav), dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, data[:int(1.2 * rate)], rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _client(tmp_path, host=None, **kwargs):
    app = fastapi.FastAPI()
    host = host or LocalHost(output_dir=tmp_path / "out", models_dir=tmp_path / "models")
    queue = api.mount(app, host, **kwargs)
    return TestClient(app), host, queue


def _check_error(resp, status, *words):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert "\n" not in body["detail"]
    for w in words:
        assert w in body["detail"], body["detail"]
    return body


LITE = {"engine": "lite", "size": 256, "phonemes": "acoustic", "seed": 5}


def test_generate_round_trip_json(tmp_path, png_bytes, wav_bytes):
    import av

    client, host, _ = _client(tmp_path)
    resp = client.post(URL, json={"image": _b64(png_bytes), "audio": _b64(wav_bytes), "options": LITE})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["engine"] == "lite" and (body["width"], body["height"]) == (256, 256)
    assert body["frames"] == 30 and body["duration_s"] == pytest.approx(1.2, abs=0.01) and body["seed"] == 5
    video = base64.b64decode(body["video"])
    saved = host.output_dir() / body["filename"]
    assert saved.read_bytes() == video and video[4:8] == b"ftyp"
    with av.open(io.BytesIO(video)) as container:
        kinds = sorted(s.type for s in container.streams)
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"] and frames == 30
    sidecar = json.loads((host.output_dir() / body["sidecar"]).read_text())
    assert sidecar["options"]["size"] == 256 and sidecar["options"]["engine"] == "lite"
    assert sidecar["source"]["via"] == "api-json"
    assert sidecar["source"]["audio_sha256"] == __import__("hashlib").sha256(wav_bytes).hexdigest()


def test_generate_multipart_upload(tmp_path, png_bytes, wav_bytes):
    client, host, _ = _client(tmp_path)
    resp = client.post(URL, files={"image": ("face.png", png_bytes, "image/png"),
                                   "audio": ("speech.wav", wav_bytes, "audio/wav")},
                       data={"options": json.dumps(LITE), "return_video": "false"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["video"] is None and (host.output_dir() / body["filename"]).stat().st_size > 1000
    assert json.loads((host.output_dir() / body["sidecar"]).read_text())["source"]["via"] == "api-multipart"


def test_bad_inputs_get_4xx_with_one_line(tmp_path, png_bytes, wav_bytes):
    client, host, _ = _client(tmp_path)
    img, aud = _b64(png_bytes), _b64(wav_bytes)

    def post(**body):
        return client.post(URL, json={"image": img, "audio": aud, "options": LITE, **body})

    _check_error(post(image="not base64!!"), 422, "'image' is not valid base64")
    _check_error(post(audio=None), 422, "'audio' must be")
    _check_error(client.post(URL, json={"audio": aud}), 422, "'image' is required")
    _check_error(post(options={"bogus": 1}), 400, "unknown option(s): bogus")
    _check_error(post(options={"size": 300}), 400, "--size must be 256 or 512")
    _check_error(post(options="[1]"), 400, "'options' must be a JSON object")
    _check_error(post(return_video="maybe"), 422, "'return_video' must be true or false")
    # wrong types
    _check_error(post(image=aud), 415, "the image is WAV audio, not a picture")
    _check_error(post(audio=img), 415, "the audio is a PNG image, not a sound file")
    _check_error(post(audio=_b64(b"\x00\x01garbage" * 50)), 422, "upload-audio")
    _check_error(post(image=_b64(png_bytes[:200])), 422, "image")
    _check_error(client.post(URL, content=b"hello", headers={"content-type": "text/plain"}), 415,
                 "application/json")
    _check_error(client.post(URL, content=b"{nope", headers={"content-type": "application/json"}), 422,
                 "not valid JSON")
    assert list(host.output_dir().iterdir()) == []  # nothing was generated


def test_server_paths_are_never_read(tmp_path, png_bytes, wav_bytes):
    client, host, _ = _client(tmp_path)
    secret = tmp_path / "portrait.png"
    secret.write_bytes(png_bytes)
    img, aud = _b64(png_bytes), _b64(wav_bytes)
    for value in (str(secret), "/etc/passwd", "file:///etc/passwd", "~/face.png", "C:\\faces\\me.png",
                  "../../face.png"):
        _check_error(client.post(URL, json={"image": value, "audio": aud}), 422, "looks like a file path")
    _check_error(client.post(URL, json={"image_path": str(secret), "audio": aud}), 422,
                 "image_path", "never reads")
    for opt in ({"ref_pose": str(secret)}, {"checkpoints": "/models"}, {"lipsync_debug": "/tmp/x"},
                {"sd_checkpoint": "/m.safetensors"}, {"refine": "/tmp/keys.json"}):
        _check_error(client.post(URL, json={"image": img, "audio": aud, "options": opt}), 400, "never reads")
    files = {"image": ("a.png", png_bytes, "image/png")}
    _check_error(client.post(URL, files=files, data={"audio": "/etc/passwd"}), 422, "looks like a file path")


def test_every_string_option_is_classified():
    """A new option that takes text must be declared a plain value or a server path (refused)."""
    names = {f.name for f in fields(GenerateOptions)}
    stringy = {f.name for f in fields(GenerateOptions) if "str" in str(f.type) or f.type == "object"}
    known = inputs.PATH_OPTIONS | inputs.VALUE_OPTIONS | inputs.PATH_OR_DATA_OPTIONS
    assert stringy <= known, f"classify {sorted(stringy - known)} in sadtalker_ext/api/inputs.py"
    assert {n for n in names if inputs.is_path_option(n)} == inputs.PATH_OPTIONS & names


def test_size_limits(tmp_path, png_bytes, wav_bytes):
    from PIL import Image

    small = inputs.Limits(image_bytes=len(png_bytes) - 1, audio_bytes=len(wav_bytes) - 1, image_pixels=100 * 100)
    client, _, _ = _client(tmp_path, limits=small)
    img, aud = _b64(png_bytes), _b64(wav_bytes)
    _check_error(client.post(URL, json={"image": img, "audio": aud}), 413, "the limit is")
    buf = io.BytesIO()
    Image.new("RGB", (120, 90)).save(buf, format="PNG")
    _check_error(client.post(URL, json={"image": _b64(buf.getvalue()), "audio": aud}), 413,
                 "the image is 120x90", "100x100")
    big = _b64(b"\0" * (small.body_bytes(True) + 10))
    _check_error(client.post(URL, json={"image": big, "audio": aud}), 413, "the limit is")
    _check_error(client.post(URL, files={"image": ("a.png", png_bytes), "audio": ("b.wav", wav_bytes)}), 413,
                 "the limit is")
    # the defaults are the tab's: 20 MB images of at most 8192 x 8192, 50 MB audio
    assert (inputs.Limits().image_bytes, inputs.Limits().audio_bytes, inputs.Limits().max_side) == \
        (20 * 2**20, 50 * 2**20, 8192)


def _webui_like_app():
    """A FastAPI app with HTTPException handlers as the hosts install them: A1111's api_middleware answers
    ``{"error": "HTTPException", "detail", "body", "errors"}``; Forge's drops ``error``."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI()

    @app.exception_handler(HTTPException)
    async def http_exception(request, exc):
        return JSONResponse({"error": type(exc).__name__, "detail": exc.detail, "body": "", "errors": ""},
                            status_code=exc.status_code)
    return app


def test_auth_enforced_when_configured(tmp_path):
    client, _, _ = _client(tmp_path, auth="alice:s3:cret,bob:pw")
    for path in ("/talking-head/v1/models",):
        assert client.get(path).status_code == 401
        r = client.get(path, auth=("alice", "wrong"))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert set(r.json()) == {"detail", "error"} and r.json()["error"] == "AuthenticationError"
        assert client.get(path, auth=("alice", "s3:cret")).status_code == 200
        assert client.get(path, auth=("bob", "pw")).status_code == 200
    assert client.post(URL, json={}).status_code == 401  # checked before the body is looked at
    open_client, _, _ = _client(tmp_path / "open")
    assert open_client.get("/talking-head/v1/models").status_code == 200
    # inside a WebUI whose own handler formats HTTPExceptions, the 401 keeps the README's shape
    app = _webui_like_app()
    api.mount(app, LocalHost(output_dir=tmp_path / "w"), auth="alice:pw")
    host_client = TestClient(app)
    for r in (host_client.get("/talking-head/v1/models"), host_client.post(URL, json={}, auth=("alice", "x"))):
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        body = _check_error(r, 401, "HTTP Basic auth", "--api-auth")
        assert set(body) == {"detail", "error"} and body["error"] == "AuthenticationError"
    assert host_client.get("/talking-head/v1/models", auth=("alice", "pw")).status_code == 200


def test_models_route(tmp_path):
    client, host, _ = _client(tmp_path)
    body = client.get("/talking-head/v1/models").json()
    assert "lite" in body["available_engines"]
    # no server path for a client that did not authenticate (issue 15 item 6)
    assert body["search_dirs"] == [] and body["download_dir"] is None
    assert all(f["path"] is None for f in body["files"]) and str(tmp_path) not in json.dumps(body)
    authed, host, _ = _client(tmp_path / "a", auth="u:p")
    body = authed.get("/talking-head/v1/models", auth=("u", "p")).json()
    assert str(host.models_dir()) in body["search_dirs"]
    names = {f["name"] for f in body["files"]}
    assert "SadTalker_V0.0.2_256.safetensors" in names
    for f in body["files"]:
        assert f["state"] in ("ok", "size-mismatch", "hash-mismatch", "partial", "missing")
    assert body["queue"] == {"running": False, "waiting": 0, "max_waiting": 2}


class SlowEngine:
    """Two chunks of small frames; records how many runs overlap."""

    name = "slow"

    def __init__(self):
        self.active = 0
        self.max_active = 0
        self.order = []
        self._lock = threading.Lock()

    def prepare(self, image, options):
        return options.seed

    def output_size(self, source):
        return (64, 64)

    def motion(self, source, ctx):
        return None

    def frames(self, source, motion, ctx):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.order.append(source)
        try:
            for start in range(0, ctx.num_frames, ctx.options.chunk_size):
                time.sleep(0.05)
                k = min(ctx.options.chunk_size, ctx.num_frames - start)
                yield FrameChunk(start, np.full((k, 64, 64, 3), 90, np.uint8))
        finally:
            with self._lock:
                self.active -= 1


class SlowHost(LocalHost):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.engine = SlowEngine()

    def engine_for(self, options):
        return self.engine


def test_concurrent_requests_run_one_at_a_time(tmp_path, png_bytes, wav_bytes):
    host = SlowHost(output_dir=tmp_path / "out")
    client, _, queue = _client(tmp_path, host=host, max_waiting=2)
    results = {}

    def post(seed):
        results[seed] = client.post(URL, json={"image": _b64(png_bytes), "audio": _b64(wav_bytes),
                                               "options": {"seed": seed, "chunk_size": 15}})
    threads = [threading.Thread(target=post, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [1, 2, 3] and all(r.status_code == 200 for r in results.values())
    assert host.engine.max_active == 1 and sorted(host.engine.order) == [1, 2, 3]
    assert len({r.json()["filename"] for r in results.values()}) == 3
    assert queue.status() == {"running": False, "waiting": 0, "max_waiting": 2}


def test_full_queue_answers_429(tmp_path, png_bytes, wav_bytes):
    client, _, queue = _client(tmp_path, max_waiting=0)
    held = queue.reserve()  # a job is running
    try:
        body = {"image": _b64(png_bytes), "audio": _b64(wav_bytes), "options": LITE}
        resp = client.post(URL, json=body)
        _check_error(resp, 429, "queue is full")
        assert resp.headers["retry-after"] == "30"
    finally:
        queue.abandon(held)
    assert queue.status()["waiting"] == 0


def test_job_queue_is_fifo_and_bounded():
    q = JobQueue(max_waiting=2)
    tickets = [q.reserve() for _ in range(3)]
    with pytest.raises(QueueFull):
        q.reserve()
    order = []

    def worker(t):
        with q.turn(t):
            order.append(t)
    threads = [threading.Thread(target=worker, args=(t,)) for t in reversed(tickets[1:])]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert order == []  # ticket 0 has not run yet: nobody may pass it
    q.abandon(tickets[0])
    for t in threads:
        t.join(5)
    assert order == [1, 2]
    assert q.reserve() == 3


@pytest.fixture
def webui_double(tmp_path, monkeypatch):
    """The host double's ``modules`` on sys.path, a fresh adapter; yields (script_callbacks, shared, a1111) and
    removes the double's modules afterwards."""
    import sys

    double = Path(__file__).resolve().parent / "host_double"
    monkeypatch.setenv("HOST_DOUBLE_DATA_DIR", str(tmp_path))
    for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(double))
    try:
        from modules import script_callbacks, shared

        import sadtalker_ext.host.a1111 as a1111
        a1111._HOST = None
        script_callbacks.clear_callbacks()
        yield script_callbacks, shared, a1111
    finally:
        import sadtalker_ext.host.a1111 as a1111
        a1111._HOST = None
        for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
            del sys.modules[name]


def _run_talking_head_script() -> None:
    import runpy
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "talking_head.py"))


def test_mounted_by_the_webui_with_api_auth(tmp_path, webui_double):
    """on_app_started (scripts/talking_head.py) mounts the routes behind --api-auth."""
    script_callbacks, shared, a1111 = webui_double
    shared.cmd_opts.api_auth = "user:pw"
    _run_talking_head_script()
    app = fastapi.FastAPI()
    script_callbacks.app_started_callback(None, app)
    assert script_callbacks.double_errors == []
    client = TestClient(app)
    assert client.get("/talking-head/v1/models").status_code == 401
    body = client.get("/talking-head/v1/models", auth=("user", "pw")).json()
    assert str(Path(tmp_path) / "models" / "SadTalker") in body["search_dirs"]
    assert api.mount(app, a1111.get_host()) is app._talking_head_api  # mounting twice is a no-op


def test_webui_origin_check_honours_the_webuis_cors_flags_with_our_error_shape(webui_double):
    """In the WebUI, origins its owner allowed with --cors-allow-origins / --cors-allow-origins-regex may call
    our routes too; any other origin gets 403 with our one-line body, not the host's HTTPException handler's
    (the app here has a double of A1111's handler, which adds "errors"/"body" and "error": "HTTPException")."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

    script_callbacks, shared, a1111 = webui_double
    shared.cmd_opts.cors_allow_origins = "http://listed.example,https://Other.example"
    shared.cmd_opts.cors_allow_origins_regex = r"https://.*\.trusted\.example"
    shared.opts.talking_head_api_origins = "http://setting.example"
    _run_talking_head_script()
    app = fastapi.FastAPI()

    @app.exception_handler(HTTPException)   # what A1111's api_middleware registers
    async def host_handler(request, e):
        return JSONResponse({"error": type(e).__name__, "detail": e.detail, "body": "", "errors": str(e)},
                            status_code=e.status_code)
    script_callbacks.app_started_callback(None, app)
    assert script_callbacks.double_errors == []
    client = TestClient(app)
    models = "/talking-head/v1/models"

    def status(origin):
        return client.get(models, headers={"Origin": origin}).status_code
    assert [status(o) for o in ("http://listed.example", "https://other.example", "http://setting.example",
                                "https://a.trusted.example", "http://testserver")] == [200] * 5
    for origin in ("http://evil.example", "https://trusted.example.evil.example", "http://a.trusted.example"):
        r = client.get(models, headers={"Origin": origin})
        assert r.status_code == 403, origin
        assert set(r.json()) == {"detail", "error"} and r.json()["error"] == "CrossOriginRefused"
        assert "\n" not in r.json()["detail"] and "--cors-allow-origins" in r.json()["detail"]
    r = client.post(URL, json={}, headers={"Origin": "http://evil.example"})   # before any body parsing
    assert r.status_code == 403 and r.json()["error"] == "CrossOriginRefused"


def test_openapi_schema_builds(tmp_path):
    client, _, _ = _client(tmp_path)
    schema = client.get("/openapi.json").json()
    post = schema["paths"][URL]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "/talking-head/v1/models" in schema["paths"]
