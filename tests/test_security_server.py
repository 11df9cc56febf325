"""The standalone server (``python -m sadtalker_ext ui``, gradio 3.41.2) as an attacker on the network sees it
(issue 15, items 2, 3, 6, 11, 12 and the slow-client timeout): real server processes on 127.0.0.1, every
request with a timeout, servers stopped by their own PID.

* ``/file=<URL>`` is answered at once and fetches nothing (a canary server counts requests), and the server
  answers other requests within 1 s while such requests are made (gradio 3.41 did a blocking
  ``requests.head`` in the event loop: every route hung for good).
* ``/file=`` serves the output folder only, and no symlink out of it.
* Cross-origin: a request from ``http://evil.example`` gets no ``access-control-allow-origin`` and is
  refused (the issue's ``/run/predict`` read of ``/etc/passwd`` included); ``--cors-origins`` allows a listed
  site. ``/models`` lists no server path without auth.
* ``--auth`` protects the page (gradio's login) and the API (Basic); a non-loopback ``--host`` without auth is
  refused unless ``--insecure``.
* A connection that sends its headers slowly is closed after ``--header-timeout``; others are served meanwhile.
* Interrupt: another session's Interrupt event leaves an API job alone; the API's cancel route stops only the
  request that named that id.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from test_reliability_common import LITE, png_bytes

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio")
pytest.importorskip("fastapi")

REPO = Path(__file__).resolve().parents[1]
GEN = "/talking-head/v1/generate"
MODELS = "/talking-head/v1/models"
EVIL = "http://evil.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    root: Path
    out: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # a hung server (9679016's /file=URL) ignores SIGINT
                self.proc.kill()
                self.proc.wait()


def start(root: Path, *args: str, host: str = "127.0.0.1", wait: bool = True, auth=None) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    out = root / "out"
    out.mkdir(exist_ok=True)
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(root / "gradio-tmp"),
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("SADTALKER_CHECKPOINTS", None)
    env.pop("TALKING_HEAD_AUTH", None)
    log = root / f"server-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sadtalker_ext", "ui", "--host", host, "--port", str(port),
                                 "--output-dir", str(out), "--models-dir", str(root / "models"), *args],
                                cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    srv = Server(proc, f"http://127.0.0.1:{port}", port, root, out, log)
    if wait:
        end = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError("the server exited: " + log.read_text()[-3000:])
            try:
                if httpx.get(srv.url + MODELS, timeout=2, auth=auth).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                srv.stop()
                raise AssertionError("the server did not start: " + log.read_text()[-3000:])
            time.sleep(0.3)
    return srv


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("secure-server"))
    yield srv
    srv.stop()


class Canary:
    """An HTTP server that records every request it gets (a fetch of a client's URL = SSRF)."""

    def __init__(self):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"canary")
            do_HEAD = do_GET

            def log_message(self, *a):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _timed_get(url, **kw):
    t0 = time.perf_counter()
    r = httpx.get(url, **kw)
    return r, time.perf_counter() - t0


# ============================================================================ /file=
def test_file_route_never_fetches_a_url_and_the_server_keeps_answering(live):
    canary = Canary()
    try:
        targets = [f"{canary.url}/ssrf", f"http://127.0.0.1:{live.port}/", f"https://127.0.0.1:{live.port}/x",
                   f"{canary.url}/ssrf2"] * 2
        answers, errors = [], []

        def attack(t):
            try:
                answers.append(httpx.get(f"{live.url}/file={t}", timeout=5).status_code)
            except httpx.HTTPError as exc:
                errors.append(f"{t}: {type(exc).__name__}")
        threads = [threading.Thread(target=attack, args=(t,)) for t in targets]
        for t in threads:
            t.start()
        latencies = []
        for _ in range(5):                                   # meanwhile the server answers others
            r, dt = _timed_get(live.url + MODELS, timeout=5)
            assert r.status_code == 200
            latencies.append(dt)
            r, dt = _timed_get(live.url + "/config", timeout=5)
            assert r.status_code == 200
            latencies.append(dt)
        for t in threads:
            t.join(10)
        assert errors == [] and sorted(set(answers)) == [404], (answers, errors)
        assert max(latencies) < 1.0, latencies
        time.sleep(0.5)
        assert canary.hits == []                            # nothing was fetched
    finally:
        canary.close()


def test_file_route_serves_no_symlink_out_of_the_output_folder(live):
    secret_dir = live.root / "private"
    secret_dir.mkdir(exist_ok=True)
    (secret_dir / "key.txt").write_text("PRIVATE KEY\n")
    (live.out / "good.txt").write_text("an output\n")
    links = {live.out / "link.txt": secret_dir / "key.txt", live.out / "linkdir": secret_dir}
    for link, target in links.items():
        if not link.is_symlink():
            link.symlink_to(target)
    try:
        for path in (live.out / "link.txt", live.out / "linkdir" / "key.txt", live.out / "./link.txt"):
            r = httpx.get(f"{live.url}/file={path}", timeout=10)
            assert r.status_code in (403, 404) and "PRIVATE" not in r.text, (path, r.status_code)
            r = httpx.get(f"{live.url}/file/{path}", timeout=10)
            assert r.status_code in (403, 404) and "PRIVATE" not in r.text, (path, r.status_code)
        r = httpx.get(f"{live.url}/file={live.out / 'good.txt'}", timeout=10)
        assert r.status_code == 200 and r.text == "an output\n"
    finally:
        for link in links:
            link.unlink()
        (live.out / "good.txt").unlink()


# ============================================================================ origin, /models
def _fn_index(url: str, elem_id: str, **kw) -> int:
    """The dependency index of the event whose trigger or input is the component ``elem_id`` (from /config)."""
    config = httpx.get(url + "/config", timeout=10, **kw).json()
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id}
    for i, dep in enumerate(config["dependencies"]):
        targets = [t[0] if isinstance(t, (list, tuple)) else t for t in dep.get("targets", [])]
        if ids & set(targets):
            return dep.get("id", i)
    raise AssertionError(f"no event for {elem_id}")


def test_cross_origin_requests_are_refused_without_cors_headers(live):
    secret = live.root / "passwd"
    secret.write_text("root:SECRET:0:0\n")
    fn = _fn_index(live.url, "th_refine_import")
    body = {"fn_index": fn, "data": [{"name": str(secret), "data": None, "is_file": True}], "session_hash": "x"}
    evil = {"Origin": EVIL}
    replies = [httpx.post(live.url + "/run/predict", json=body, headers=evil, timeout=10),   # the curl
               httpx.get(live.url + "/config", headers=evil, timeout=10),
               httpx.get(live.url + MODELS, headers=evil, timeout=10),
               httpx.post(live.url + GEN, json={}, headers=evil, timeout=10),
               httpx.options(live.url + GEN, headers={**evil, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"}, timeout=10),
               httpx.options(live.url + "/run/predict", headers={**evil, "Access-Control-Request-Method": "POST"},
                             timeout=10)]
    for r in replies:
        assert "access-control-allow-origin" not in r.headers, (r.request.url, dict(r.headers))
        assert r.status_code in (400, 403), (r.request.url, r.status_code, r.text[:200])
        assert "SECRET" not in r.text
    # the page's own origin is served as before
    own = {"Origin": live.url}
    assert httpx.get(live.url + "/config", headers=own, timeout=10).status_code == 200
    assert httpx.get(live.url + MODELS, headers=own, timeout=10).status_code == 200


def test_models_route_lists_no_server_path_without_auth(live):
    r = httpx.get(live.url + MODELS, timeout=10)
    assert r.status_code == 200
    data = r.json()
    assert data["files"] and all(f["path"] is None for f in data["files"])
    text = r.text
    for secret in (str(live.root), str(REPO), str(Path.home()), "/tmp", "checkpoints"):
        assert secret not in text, secret


def test_listed_cors_origins_are_allowed(tmp_path):
    srv = start(tmp_path / "cors", "--cors-origins", "http://good.example")
    try:
        r = httpx.get(srv.url + MODELS, headers={"Origin": "http://good.example"}, timeout=10)
        assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == "http://good.example"
        r = httpx.get(srv.url + MODELS, headers={"Origin": EVIL}, timeout=10)
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    finally:
        srv.stop()


# ============================================================================ auth, --host
def test_auth_protects_the_page_and_the_api(tmp_path):
    srv = start(tmp_path / "auth", "--auth", "alice:s3cret pass", auth=("alice", "s3cret pass"))
    try:
        assert httpx.get(srv.url + MODELS, timeout=10).status_code == 401
        assert httpx.get(srv.url + MODELS, auth=("alice", "wrong"), timeout=10).status_code == 401
        r = httpx.get(srv.url + MODELS, auth=("alice", "s3cret pass"), timeout=10)
        assert r.status_code == 200 and r.json()["search_dirs"]           # paths for an authenticated user
        assert httpx.get(srv.url + "/config", timeout=10).status_code == 401
        assert httpx.post(srv.url + "/run/predict", json={"fn_index": 0, "data": []}, timeout=10).status_code == 401
        with httpx.Client(base_url=srv.url, timeout=10) as c:             # gradio's own login page
            assert c.post("/login", data={"username": "alice", "password": "wrong"}).status_code in (400, 401)
            assert c.post("/login", data={"username": "alice", "password": "s3cret pass"}).status_code == 200
            assert c.get("/config").status_code == 200
    finally:
        srv.stop()


def test_non_loopback_host_needs_auth_or_insecure(tmp_path):
    srv = start(tmp_path / "open", host="0.0.0.0", wait=False)
    try:
        assert srv.proc.wait(timeout=60) != 0
        text = srv.log.read_text()
        assert "refusing to serve on 0.0.0.0 without a password" in text and "Traceback" not in text
    finally:
        srv.stop()
    srv = start(tmp_path / "insecure", "--insecure", host="0.0.0.0")
    try:
        assert httpx.get(srv.url + MODELS, timeout=10).status_code == 200
        assert "without authentication" in srv.log.read_text()
    finally:
        srv.stop()


# ============================================================================ slow clients
def test_a_connection_sending_headers_slowly_is_closed(tmp_path):
    srv = start(tmp_path / "slow")                               # the default timeout: 10 s
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /talking-head/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.perf_counter()
        closed_after = None
        others = []
        for i in range(64):                                  # one header byte every 0.25 s, never finished
            try:
                s.sendall(b"X")                              # a header name that never ends
                s.settimeout(0.25)
                if s.recv(1024) == b"":
                    closed_after = time.perf_counter() - t0
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_after = time.perf_counter() - t0
                break
            if i % 4 == 0:
                others.append(_timed_get(srv.url + MODELS, timeout=5)[1])
        s.close()
        assert closed_after is not None and 9.0 < closed_after < 12.5, closed_after
        assert others and max(others) < 1.0, others
        # a normal keep-alive client is not affected
        with httpx.Client(timeout=10) as c:
            assert all(c.get(srv.url + MODELS).status_code == 200 for _ in range(3))
    finally:
        srv.stop()


# ============================================================================ interrupt, cancel
@pytest.fixture(scope="module")
def speech_b64(arctic_wav) -> str:
    return base64.b64encode(Path(arctic_wav).read_bytes()).decode()


@pytest.fixture(scope="module")
def portrait_b64(astronaut) -> str:
    return base64.b64encode(png_bytes(astronaut)).decode("ascii")


def _generate_async(url, body, headers=None):
    box = {}

    def run():
        try:
            box["response"] = httpx.post(url + GEN, json=body, headers=headers or {}, timeout=300)
        except httpx.HTTPError as exc:
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    return t, box


def _wait_running(url, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if httpx.get(url + MODELS, timeout=5).json()["queue"]["running"]:
            return
        time.sleep(0.05)
    raise AssertionError("the job did not start")


def test_another_sessions_interrupt_does_not_stop_an_api_job(live, portrait_b64, speech_b64):
    fn = _fn_index(live.url, "th_interrupt")
    t, box = _generate_async(live.url, {"image": portrait_b64, "audio": speech_b64, "options": dict(LITE, seed=3)})
    _wait_running(live.url)
    for _ in range(3):                                      # a visitor presses Interrupt, in its own sessions
        r = httpx.post(live.url + "/run/predict", json={"fn_index": fn, "data": [None],
                                                         "session_hash": uuid.uuid4().hex[:11]}, timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(0.3)
    t.join(300)
    assert "response" in box, box
    assert box["response"].status_code == 200, box["response"].text[:300]
    assert box["response"].json()["frames"] == 100


def test_api_cancel_route_stops_only_the_named_request(live, portrait_b64, speech_b64):
    body = {"image": portrait_b64, "audio": speech_b64, "options": dict(LITE, seed=5), "return_video": False}
    id_a, id_b = uuid.uuid4().hex, uuid.uuid4().hex
    ta, a = _generate_async(live.url, body, {"X-Talking-Head-Job": id_a})
    _wait_running(live.url)
    tb, b = _generate_async(live.url, dict(body, options=dict(LITE, seed=6)), {"X-Talking-Head-Job": id_b})
    end = time.monotonic() + 30
    while httpx.get(live.url + MODELS, timeout=5).json()["queue"]["waiting"] < 1:
        assert time.monotonic() < end
        time.sleep(0.05)
    assert httpx.post(f"{live.url}/talking-head/v1/generate/{uuid.uuid4().hex}/cancel", timeout=10).status_code == 404
    r = httpx.post(f"{live.url}/talking-head/v1/generate/{id_b}/cancel", timeout=10)   # B waits: cancelled, A runs on
    assert r.status_code == 200 and r.json()["cancelled"] is True
    tb.join(60)
    assert b["response"].status_code == 499 and b["response"].json()["error"] == "GenerationInterrupted"
    assert ta.is_alive()                                    # A still renders
    ta.join(300)
    assert a["response"].status_code == 200, a["response"].text[:300]
    # a running job stops too, at its next chunk, and leaves no video; the id is free again afterwards
    videos = sorted(live.out.glob("*.mp4"))
    # 24 s of speech, so the job surely still renders when the cancel arrives (4 s of lite at 256 px now takes
    # about a second, and the cancel came too late for it)
    import io as _io

    import soundfile as sf
    x, sr = sf.read(_io.BytesIO(base64.b64decode(speech_b64)), dtype="float32")
    buf = _io.BytesIO()
    sf.write(buf, np.tile(x, 6), sr, format="WAV")
    long_body = dict(body, audio=base64.b64encode(buf.getvalue()).decode(), options=dict(LITE, seed=7))
    tc, c = _generate_async(live.url, long_body, {"X-Talking-Head-Job": id_a})
    _wait_running(live.url)
    assert httpx.post(f"{live.url}/talking-head/v1/generate/{id_a}/cancel", timeout=10).status_code == 200
    tc.join(120)
    assert c["response"].status_code == 499
    assert sorted(live.out.glob("*.mp4")) == videos
    assert not [p for p in live.out.glob("*.json") if json.loads(p.read_text()).get("seed") in (6, 7)]
