"""Asynchronous jobs of the HTTP API (POST/GET/DELETE /talking-head/v1/jobs) on the lite engine:
submit 5, poll, fetch, cancel (queued and mid-render), disconnect and reconnect over a real
server, a full queue -> 429, only the submitter sees a job, and the /generate error shape."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import batch_inputs  # noqa: E402
from sadtalker_ext import api  # noqa: E402
from sadtalker_ext.host.base import LocalHost  # noqa: E402

JOBS = "/talking-head/v1/jobs"
OPTS = {"engine": "lite", "size": 256, "phonemes": "acoustic"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("jobs-in")
    short = batch_inputs.write_inputs(folder / "short", speech_seconds=1.2)
    long = batch_inputs.write_inputs(folder / "long", speech_seconds=12.0)
    return {"png": short["astronaut"].read_bytes(), "png2": short["cameraman"].read_bytes(),
            "wav": short["speech"].read_bytes(), "long_wav": long["speech"].read_bytes()}


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _body(inputs, wav="wav", png="png", **opts):
    return {"image": _b64(inputs[png]), "audio": _b64(inputs[wav]), "options": dict(OPTS, **opts)}


def _app(tmp_path, **kw):
    app = fastapi.FastAPI()
    host = LocalHost(output_dir=tmp_path / "out", models_dir=tmp_path / "models")
    queue = api.mount(app, host, **kw)
    return app, host, queue


@contextlib.contextmanager
def _gpu_busy(host):
    """Hold the host's job lock (as a WebUI generation would): jobs queue up behind it."""
    with host.job("someone else's txt2img", 0):
        yield


def _wait(client, job_id, states=("done", "failed", "cancelled"), timeout=180, **kw):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"{JOBS}/{job_id}", **kw)
        assert r.status_code == 200, r.text
        if r.json()["status"] in states:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {states}: {r.json()}")


def _frames(data: bytes) -> int:
    import av
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def _check_error(r, status, error, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail", "error"} and body["error"] == error, body
    assert "\n" not in body["detail"] and all(w in body["detail"] for w in words), body


def test_submit_five_poll_fetch_and_cancel_one(tmp_path, inputs):
    app, host, queue = _app(tmp_path)
    client = TestClient(app)
    ids = []
    with _gpu_busy(host):
        for i in range(5):
            t0 = time.monotonic()
            r = client.post(JOBS, json=_body(inputs, png="png" if i % 2 else "png2", seed=i))
            assert r.status_code == 202, r.text
            assert time.monotonic() - t0 < 5  # answered at once, not after the render
            body = r.json()
            # the worker may take the first at once (it then waits for the busy host); the others wait
            assert body["status"] in (("queued", "running") if i == 0 else ("queued",)), body
            assert body["status_url"] == f"{JOBS}/{body['id']}"
            assert r.headers["location"] == body["status_url"]
            ids.append(body["id"])
        time.sleep(0.3)
        st = [client.get(f"{JOBS}/{i}").json() for i in ids]
        # the first is taken by the worker (waiting for the host), the others wait in order
        assert st[0]["status"] == "running" and [s["position"] for s in st] == [0, 1, 2, 3, 4]
        assert all(s["status"] == "queued" and s["progress"]["done"] == 0 for s in st[1:])
        r = client.delete(f"{JOBS}/{ids[3]}")
        assert r.status_code == 200 and r.json() == {"id": ids[3], "status": "cancelled"}
        _check_error(client.get(f"{JOBS}/{ids[3]}/result"), 409, "JobNotReady", "cancelled")
        _check_error(client.get(f"{JOBS}/{ids[1]}/result"), 409, "JobNotReady", "queued", "poll")
    finals = [_wait(client, i) for i in ids]
    assert [f["status"] for f in finals] == ["done", "done", "done", "cancelled", "done"]
    names = set()
    for f in finals:
        if f["status"] != "done":
            assert f["result"] is None and f["error"]["error"] == "Cancelled"
            continue
        assert f["progress"]["fraction"] == 1.0 and f["error"] is None and f["seconds"] > 0
        r = client.get(f"{JOBS}/{f['id']}/result")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert _frames(r.content) == f["result"]["frames"] == 30
        assert r.content == (host.output_dir() / f["result"]["filename"]).read_bytes()
        names.add(f["result"]["filename"])
    assert len(names) == 4 and sorted(p.name for p in host.output_dir().glob("*.mp4")) == sorted(names)
    _check_error(client.delete(f"{JOBS}/{ids[0]}"), 409, "JobNotReady", "already finished")
    queue.jobs.close()


def test_cancel_a_running_job_mid_render_leaves_no_file(tmp_path, inputs):
    app, host, queue = _app(tmp_path)
    client = TestClient(app)
    job = client.post(JOBS, json=_body(inputs, wav="long_wav")).json()["id"]
    st = _wait(client, job, states=("running",))
    deadline = time.monotonic() + 120
    while st["progress"]["done"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        st = client.get(f"{JOBS}/{job}").json()
    assert st["status"] == "running" and 0 < st["progress"]["done"] < st["progress"]["total"] == 300
    r = client.delete(f"{JOBS}/{job}")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    final = _wait(client, job)
    assert final["status"] == "cancelled" and final["progress"]["done"] < 300
    assert list(host.output_dir().iterdir()) == []  # no video, no partial file
    # the server goes on with the next job
    nxt = client.post(JOBS, json=_body(inputs)).json()["id"]
    assert _wait(client, nxt)["status"] == "done"
    queue.jobs.close()


@contextlib.contextmanager
def _server(app):
    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_jobs_survive_client_disconnect_and_reconnect(tmp_path, inputs):
    import httpx
    app, host, queue = _app(tmp_path)
    with _server(app) as base:
        # client 1: submit over a raw socket, read the 202, hang up while the job waits and runs
        body = json.dumps(_body(inputs, wav="long_wav")).encode()
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST " + JOBS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
        job = json.loads(reply.split(b"\r\n\r\n", 1)[1])["id"]
        # client 2 polls once while it renders and drops its connection mid-poll-loop
        with httpx.Client(base_url=base, timeout=30) as c2:
            st = c2.get(f"{JOBS}/{job}").json()
            assert st["status"] in ("queued", "running")
        # client 3, a fresh connection later: the job has gone on without anyone connected
        with httpx.Client(base_url=base, timeout=30) as c3:
            final = _wait(c3, job, timeout=240)
            assert final["status"] == "done", final
            video = c3.get(f"{JOBS}/{job}/result")
            assert video.status_code == 200 and _frames(video.content) == final["result"]["frames"] == 300
    queue.jobs.close()


def test_full_queue_answers_429_then_accepts_again(tmp_path, inputs):
    app, host, queue = _app(tmp_path, max_jobs=2)
    client = TestClient(app)
    with _gpu_busy(host):
        a = client.post(JOBS, json=_body(inputs)).json()["id"]
        b = client.post(JOBS, json=_body(inputs, seed=1)).json()["id"]
        r = client.post(JOBS, json=_body(inputs, seed=2))
        _check_error(r, 429, "QueueFull", "queue is full", "try again")
        assert r.headers["retry-after"] == "30"
        assert queue.jobs.status() == {"queued": 1, "running": 1, "max_jobs": 2}
    assert [_wait(client, j)["status"] for j in (a, b)] == ["done", "done"]
    r = client.post(JOBS, json=_body(inputs, seed=2))
    assert r.status_code == 202 and _wait(client, r.json()["id"])["status"] == "done"
    queue.jobs.close()


def test_only_the_submitter_sees_a_job(tmp_path, inputs):
    app, host, queue = _app(tmp_path, auth="alice:pw-a,bob:pw-b")
    client = TestClient(app)
    alice, bob = ("alice", "pw-a"), ("bob", "pw-b")
    assert client.post(JOBS, json=_body(inputs)).status_code == 401
    job = client.post(JOBS, json=_body(inputs), auth=alice).json()["id"]
    assert _wait(client, job, auth=alice)["status"] == "done"
    unknown = client.get(f"{JOBS}/{'x' * 24}", auth=bob)
    for r in (client.get(f"{JOBS}/{job}", auth=bob), client.get(f"{JOBS}/{job}/result", auth=bob),
              client.delete(f"{JOBS}/{job}", auth=bob)):
        _check_error(r, 404, "JobNotFound", "no such job")
        assert r.json() == unknown.json()  # someone else's job looks like no job at all
    assert client.get(f"{JOBS}/{job}", auth=("alice", "wrong")).status_code == 401
    assert client.get(f"{JOBS}/{job}/result", auth=alice).status_code == 200
    queue.jobs.close()

    # without --api-auth the id is the key: long, random, never sequential
    app, host, queue = _app(tmp_path / "open")
    client = TestClient(app)
    ids = [client.post(JOBS, json=_body(inputs, seed=i)).json()["id"] for i in range(3)]
    assert len(set(ids)) == 3 and all(len(i) >= 24 for i in ids)
    _check_error(client.get(f"{JOBS}/{ids[0][:-1] + ('A' if ids[0][-1] != 'A' else 'B')}"), 404, "JobNotFound")
    for i in ids:
        _wait(client, i)
    queue.jobs.close()


def test_bad_submissions_get_the_generate_error_shape(tmp_path, inputs):
    app, host, queue = _app(tmp_path)
    client = TestClient(app)
    _check_error(client.post(JOBS, json=_body(inputs, size=300)), 400, "OptionError", "--size must be 256 or 512")
    _check_error(client.post(JOBS, json=dict(_body(inputs), image=_b64(b"not an image at all" * 10))), 415,
                 "UnsupportedMediaType")
    _check_error(client.post(JOBS, content=b"x", headers={"content-type": "text/plain"}), 415, "UnsupportedMediaType")
    r = client.post(JOBS, files={"image": ("a.png", inputs["png"], "image/png"), "audio": ("a.wav", inputs["wav"])},
                    data={"options": json.dumps(OPTS)})
    assert r.status_code == 202 and _wait(client, r.json()["id"])["status"] == "done"  # multipart works too
    assert queue.jobs.status()["queued"] == 0
    queue.jobs.close()
