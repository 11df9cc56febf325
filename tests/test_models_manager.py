"""Model manager: registry, lookup order, status, and the resumable verified downloader.

The downloader is tested against an in-process HTTP server on 127.0.0.1 that serves bytes from
memory, honours (or, on request, ignores) ``Range`` and can drop the connection after N bytes.
No test touches any other host; every network call has a timeout of a few seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.cli import models_cmd
from sadtalker_ext.errors import CheckpointError, DownloadError, OptionError
from sadtalker_ext.models import locate, registry
from sadtalker_ext.models.download import check_file, download, sha256_file
from sadtalker_ext.models.registry import ModelFile

DATA = np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
DATA_SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 16_384
TIMEOUT = 5.0


# --------------------------------------------------------------------------- local HTTP server
class LocalServer:
    """Threaded HTTP server on 127.0.0.1 serving ``data`` at ``/file.bin``.

    ``drop_after`` / ``drop_times``: the next ``drop_times`` responses send the full headers but
    only ``drop_after`` body bytes, then close the connection. ``ignore_range``: answer every
    request with 200 and the whole body. ``requests`` records (Range header, status) per request.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.drop_after = 0
        self.drop_times = 0
        self.ignore_range = False
        self.requests = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path != "/file.bin":
                    # record before answering: the client's next request (another thread) must
                    # not be recorded first
                    with server.lock:
                        server.requests.append((self.headers.get("Range"), 404))
                    self.send_error(404)
                    return
                data = server.data
                rng = self.headers.get("Range")
                start, code = 0, 200
                if rng and not server.ignore_range:
                    m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                    start = int(m.group(1))
                    if start >= len(data):
                        with server.lock:
                            server.requests.append((rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    code = 206
                body = data[start:]
                with server.lock:
                    server.requests.append((rng, code))
                    drop = server.drop_times > 0
                    if drop:
                        server.drop_times -= 1
                self.send_response(code)
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if drop:
                    self.wfile.write(body[:server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LocalServer(DATA)
    yield srv
    srv.close()


def _spec(url, *, size=len(DATA), sha=DATA_SHA, name="tiny.bin", urls=None) -> ModelFile:
    return ModelFile(name=name, urls=tuple(urls) if urls else (url,), size=size, sha256=sha,
                     engine="test", stage="test", licence="test", description="test file")


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# --------------------------------------------------------------------------- registry
def test_registry_entries_are_complete_and_consistent():
    names = [f.name for f in registry.FILES]
    assert names == ["SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors",
                     "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar",
                     "wav2lip_gan.pth", "wav2lip.pth", "GFPGANv1.4.pth", "codeformer.pth"]
    for f in registry.FILES:
        assert f.urls and all(u.startswith("https://") for u in f.urls), f.name
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.name
        assert f.size is None or f.size > 1_000_000, f.name
        assert f.licence and f.description and f.checksum_source
        assert f.engine in registry.ENGINES
    st = registry.get_file("SadTalker_V0.0.2_256.safetensors")
    # shared/reference/README.md: a file written with the official layout is 725,066,984 bytes.
    assert st.size == 725_066_984
    assert st.urls[0] == ("https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc/"
                          "SadTalker_V0.0.2_256.safetensors")
    assert "non-commercial" in registry.get_file("wav2lip.pth").licence
    assert registry.get_file("codeformer-v0.1.0.pth").name == "codeformer.pth"
    for engine in registry.ENGINES.values():  # every requirement names a registered file
        for alts in engine.requirements:
            for n in alts:
                assert registry.get_file(n).engine == engine.name
    assert [f.name for f in registry.default_downloads("wav2lip")] == ["wav2lip_gan.pth"]
    with pytest.raises(OptionError):
        registry.get_file("nope.pth")
    with pytest.raises(OptionError):
        registry.get_engine("nope")


def test_sadtalker_safetensors_size_matches_reference_layout(reference_dir):
    """The registered size equals the size the README derives from the official layout."""
    text = (reference_dir / "README.md").read_text(encoding="utf-8")
    assert "725,066,984 bytes" in text
    assert registry.get_file("SadTalker_V0.0.2_512.safetensors").size == 725_066_984


# --------------------------------------------------------------------------- downloader
def test_resume_after_interrupted_transfer(server, tmp_path):
    server.drop_after, server.drop_times = 100_000, 1
    path = download(_spec(server.url), tmp_path, timeout=TIMEOUT, chunk_size=CHUNK,
                    retries=2, retry_delay=0.0)
    assert path == tmp_path / "tiny.bin"
    assert path.read_bytes() == DATA
    assert not (tmp_path / "tiny.bin.part").exists()
    assert server.requests == [(None, 200), ("bytes=100000-", 206)]


def test_resume_across_calls_keeps_part_file(server, tmp_path):
    server.drop_after, server.drop_times = 120_000, 1
    spec = _spec(server.url)
    with pytest.raises(DownloadError) as info:
        download(spec, tmp_path, timeout=TIMEOUT, chunk_size=CHUNK, retries=0)
    part = tmp_path / "tiny.bin.part"
    assert part.stat().st_size == 120_000
    assert not (tmp_path / "tiny.bin").exists()  # never a final file before verification
    assert "120000 of 300000" in str(info.value)
    path = download(spec, tmp_path, timeout=TIMEOUT, chunk_size=CHUNK)
    assert path.read_bytes() == DATA
    assert not part.exists()
    assert server.requests[-1] == ("bytes=120000-", 206)


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    server.drop_after, server.drop_times = 100_000, 1
    calls = []
    path = download(_spec(server.url), tmp_path, timeout=TIMEOUT, chunk_size=CHUNK,
                    retry_delay=0.0, progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == DATA
    assert server.requests == [(None, 200), ("bytes=100000-", 200)]
    restart = [i for i, (d, _) in enumerate(calls) if d == 0]
    assert len(restart) == 2  # progress restarted from 0 with the second (full) response
    assert calls[-1] == (len(DATA), len(DATA))


def test_complete_part_file_and_416(server, tmp_path):
    """A .part file that already holds every byte is verified and renamed (server answers 416)."""
    (tmp_path / "tiny.bin.part").write_bytes(DATA)
    spec = _spec(server.url, size=None)  # unknown size: the server must be asked
    path = download(spec, tmp_path, timeout=TIMEOUT)
    assert path.read_bytes() == DATA
    assert server.requests == [(f"bytes={len(DATA)}-", 416)]


def test_hash_mismatch_rejected_and_partial_removed(server, tmp_path):
    spec = _spec(server.url, sha=hashlib.sha256(b"another file").hexdigest())
    with pytest.raises(DownloadError) as info:
        download(spec, tmp_path, timeout=TIMEOUT, chunk_size=CHUNK)
    msg = str(info.value)
    assert "sha256" in msg and server.url in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_rejected_before_download(server, tmp_path):
    spec = _spec(server.url, size=len(DATA) + 1, sha=None)
    with pytest.raises(DownloadError) as info:
        download(spec, tmp_path, timeout=TIMEOUT)
    assert f"announces {len(DATA)} bytes, expected {len(DATA) + 1}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_size_and_hash_are_not_verified(server, tmp_path):
    path = download(_spec(server.url, size=None, sha=None), tmp_path, timeout=TIMEOUT)
    assert path.read_bytes() == DATA


def test_progress_increasing_and_ends_at_total(server, tmp_path):
    calls = []
    download(_spec(server.url), tmp_path, timeout=TIMEOUT, chunk_size=CHUNK,
             progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert len(calls) >= len(DATA) // CHUNK
    assert all(b > a for a, b in zip(done, done[1:]))
    assert {t for _, t in calls} == {len(DATA)}
    assert calls[-1] == (len(DATA), len(DATA))


def test_offline_connection_refused_gives_manual_placement_message(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/file.bin"
    dest = tmp_path / "ckpts"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(_spec(url), dest, timeout=2.0, retry_delay=0.0)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "\n" not in msg
    assert "Could not download tiny.bin" in msg and "refused" in msg.lower()
    assert f"Download it by hand from {url} and put it in {dest}" in msg
    assert not (dest / "tiny.bin").exists() and not (dest / "tiny.bin.part").exists()


def test_mirrors_are_tried_in_order(server, tmp_path):
    dead = f"http://127.0.0.1:{_closed_port()}/file.bin"
    missing = server.url.replace("/file.bin", "/missing.bin")
    spec = _spec(server.url, urls=[dead, missing, server.url])
    path = download(spec, tmp_path, timeout=TIMEOUT, retry_delay=0.0)
    assert path.read_bytes() == DATA
    assert server.requests == [(None, 404), (None, 200)]


def test_existing_verified_file_needs_no_network(server, tmp_path):
    (tmp_path / "tiny.bin").write_bytes(DATA)
    assert download(_spec(server.url), tmp_path, timeout=TIMEOUT) == tmp_path / "tiny.bin"
    assert server.requests == []
    # a corrupt file at the final name is replaced only by a verified copy
    (tmp_path / "tiny.bin").write_bytes(b"x" * len(DATA))
    download(_spec(server.url), tmp_path, timeout=TIMEOUT)
    assert (tmp_path / "tiny.bin").read_bytes() == DATA


def test_check_file_and_sha256(tmp_path):
    p = tmp_path / "tiny.bin"
    p.write_bytes(DATA)
    assert sha256_file(p) == DATA_SHA
    assert check_file(p, _spec("http://127.0.0.1/")) is None
    assert check_file(p, _spec("http://127.0.0.1/", size=1)) == f"size {len(DATA)} bytes, expected 1"
    assert check_file(p, _spec("http://127.0.0.1/", sha="0" * 64)).startswith("sha256 ")
    assert check_file(tmp_path / "none", _spec("http://127.0.0.1/")) == "missing"


# --------------------------------------------------------------------------- lookup order
def test_lookup_order_explicit_env_host_repo(tmp_path):
    name = "mapping_00229-model.pth.tar"
    dirs = {k: tmp_path / k for k in ("explicit", "env", "host", "repo")}
    for k, d in dirs.items():
        d.mkdir()
        (d / name).write_text(k)
    environ = {locate.ENV_VAR: str(dirs["env"])}
    kw = dict(host_dir=dirs["host"], environ=environ, repo_dir=dirs["repo"])
    assert locate.search_dirs(dirs["explicit"], **kw) == [dirs[k] for k in
                                                          ("explicit", "env", "host", "repo")]
    assert locate.find_file(name, checkpoints=dirs["explicit"], **kw).read_text() == "explicit"
    assert locate.find_file(name, **kw).read_text() == "env"
    assert locate.find_file(name, host_dir=dirs["host"], environ={},
                            repo_dir=dirs["repo"]).read_text() == "host"
    assert locate.find_file(name, environ={}, repo_dir=dirs["repo"]).read_text() == "repo"
    # a folder without the file does not stop the search; a .part file is never returned
    (dirs["explicit"] / name).unlink()
    (dirs["explicit"] / (name + ".part")).write_text("partial")
    assert locate.find_file(name, checkpoints=dirs["explicit"], **kw).read_text() == "env"
    assert locate.find_file(name, environ={}, repo_dir=tmp_path / "nowhere") is None
    assert locate.download_dir(dirs["explicit"], **kw) == dirs["explicit"]
    assert locate.download_dir(**kw) == dirs["env"]


def test_env_var_lists_several_dirs_and_duplicates_are_dropped(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    environ = {locate.ENV_VAR: os.pathsep.join([str(a), "", str(b)])}
    assert locate.search_dirs(a, b, environ=environ, repo_dir=a) == [a, b]
    assert locate.search_dirs(tmp_path / "gone", environ=environ, repo_dir=None,
                              existing_only=True) == [a, b]


def test_aliases_and_require_file(tmp_path, monkeypatch):
    _sparse(tmp_path / "codeformer-v0.1.0.pth", 10)
    assert locate.find_file("codeformer.pth", tmp_path) == tmp_path / "codeformer-v0.1.0.pth"
    with pytest.raises(CheckpointError) as info:
        locate.require_file("wav2lip_gan.pth", checkpoints=tmp_path, environ={}, repo_dir=None)
    msg = str(info.value)
    assert "wav2lip_gan.pth not found in: " + str(tmp_path) in msg
    assert "models download --engine wav2lip" in msg and "huggingface.co" in msg
    monkeypatch.setattr(locate, "DOWNLOAD_HINT", "click 'Download {engine} files' in the Models panel")
    with pytest.raises(CheckpointError) as info:
        locate.require_file("wav2lip_gan.pth", checkpoints=tmp_path, environ={}, repo_dir=None)
    assert "click 'Download wav2lip files' in the Models panel" in str(info.value)
    assert "models download" not in str(info.value)


def test_status_states_and_available_engines(tmp_path):
    d = tmp_path / "ckpt"
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"):
        _sparse(d / name, registry.get_file(name).size)
    _sparse(d / "mapping_00109-model.pth.tar.part", 1000)
    _sparse(d / "wav2lip.pth", 1234)  # not the official size
    by_name = {s.name: s for s in locate.status(dirs=[d])}
    assert by_name["SadTalker_V0.0.2_256.safetensors"].state == "ok"
    assert by_name["SadTalker_V0.0.2_256.safetensors"].path == d / "SadTalker_V0.0.2_256.safetensors"
    assert by_name["mapping_00109-model.pth.tar"].state == "partial"
    assert by_name["mapping_00109-model.pth.tar"].size == 1000
    assert not by_name["mapping_00109-model.pth.tar"].present
    assert by_name["wav2lip.pth"].state == "size-mismatch" and by_name["wav2lip.pth"].present
    assert by_name["GFPGANv1.4.pth"].state == "missing" and by_name["GFPGANv1.4.pth"].path is None
    assert [s.name for s in locate.status("wav2lip", [d])] == ["wav2lip_gan.pth", "wav2lip.pth"]
    # sadtalker lacks mapping_00109 (only a .part); wav2lip.pth is present (size aside)
    assert locate.available_engines([d]) == ["wav2lip"]
    assert locate.missing_for("sadtalker", [d]) == [("mapping_00109-model.pth.tar",)]
    _sparse(d / "mapping_00109-model.pth.tar", registry.get_file("mapping_00109-model.pth.tar").size)
    assert locate.engine_available("sadtalker", [d])
    assert locate.available_engines([d]) == ["sadtalker", "wav2lip"]


def test_status_verify_detects_hash_mismatch(tmp_path):
    good = ModelFile("good.bin", ("http://127.0.0.1/",), len(DATA), DATA_SHA, "test", "", "x", "x")
    bad = ModelFile("bad.bin", ("http://127.0.0.1/",), len(DATA), "f" * 64, "test", "", "x", "x")
    (tmp_path / "good.bin").write_bytes(DATA)
    (tmp_path / "bad.bin").write_bytes(DATA)
    quick = [s.state for s in locate.status(dirs=tmp_path, files=[good, bad])]
    assert quick == ["ok", "ok"]  # size only
    full = [s.state for s in locate.status(dirs=tmp_path, files=[good, bad], verify=True)]
    assert full == ["ok", "hash-mismatch"]


# --------------------------------------------------------------------------- CLI
def _parse(argv):
    parser = argparse.ArgumentParser(prog="sadtalker")
    parser.add_argument("--checkpoints", default="main-level")  # must not be clobbered
    sub = parser.add_subparsers(dest="command")
    models_cmd.add_parser(sub)
    return parser.parse_args(argv)


def test_models_status_output(tmp_path):
    d = tmp_path / "ckpt"
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar",
                 "mapping_00109-model.pth.tar"):
        _sparse(d / name, registry.get_file(name).size)
    _sparse(d / "wav2lip_gan.pth.part", registry.get_file("wav2lip_gan.pth").size // 4)
    args = _parse(["models", "status", "--checkpoints", str(d)])
    assert args.func is models_cmd.run and args.models_command == "status"
    out = io.StringIO()
    assert models_cmd.run(args, out=out, environ={}, repo_dir=None) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["file", "engine", "size", "status", "path"]
    row = {ln.split()[0]: ln for ln in lines[1:9]}
    assert set(row) == {f.name for f in registry.FILES}
    assert re.search(r"sadtalker\s+725\.1 MB\s+ok\s+" + re.escape(str(d)),
                     row["SadTalker_V0.0.2_256.safetensors"])
    assert "partial 25%" in row["wav2lip_gan.pth"]
    assert "missing (optional)" in row["SadTalker_V0.0.2_512.safetensors"]
    assert re.search(r"wav2lip\s+435\.8 MB\s+missing \(optional\)\s+-$", row["wav2lip.pth"])
    text = out.getvalue()
    assert f"  1. {d}" in text
    assert "engines available: sadtalker" in text
    assert "wav2lip needs: wav2lip_gan.pth or wav2lip.pth" in text

    out = io.StringIO()
    args = _parse(["models", "status", "--engine", "wav2lip", "--checkpoints", str(d)])
    assert models_cmd.run(args, out=out, environ={}, repo_dir=None) == 1
    assert "SadTalker_V0.0.2_256" not in out.getvalue()


def test_models_download_cli_end_to_end(server, tmp_path, monkeypatch):
    spec = _spec(server.url, name="wav2lip_gan.pth")
    monkeypatch.setattr(models_cmd.registry, "get_file", lambda name: spec)
    server.drop_after, server.drop_times = 50_000, 1
    dest = tmp_path / "dl"
    args = _parse(["models", "download", "--file", "wav2lip_gan.pth", "--checkpoints", str(dest),
                   "--timeout", "5"])
    out, err = io.StringIO(), io.StringIO()
    assert models_cmd.run(args, out=out, err=err, environ={}, repo_dir=None) == 0
    assert (dest / "wav2lip_gan.pth").read_bytes() == DATA
    assert f"wav2lip_gan.pth: ok ({dest / 'wav2lip_gan.pth'})" in out.getvalue()
    assert "100.0%" in err.getvalue()
    assert server.requests[-1] == ("bytes=50000-", 206)
    # second run: already there, no request
    n = len(server.requests)
    out = io.StringIO()
    assert models_cmd.run(args, out=out, err=io.StringIO(), environ={}, repo_dir=None) == 0
    assert "already present" in out.getvalue() and len(server.requests) == n


def test_models_download_cli_offline_reports_and_fails(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/file.bin"
    monkeypatch.setattr(models_cmd.registry, "get_file", lambda name: _spec(url, name=name))
    args = _parse(["models", "download", "--file", "wav2lip.pth", "--checkpoints", str(tmp_path),
                   "--timeout", "2"])
    err = io.StringIO()
    assert models_cmd.run(args, out=io.StringIO(), err=err, environ={}, repo_dir=None) == 1
    assert f"Download it by hand from {url} and put it in {tmp_path}" in err.getvalue()


def test_models_download_selection():
    sel = models_cmd._selected(_parse(["models", "download"]))
    assert [f.name for f in sel] == ["SadTalker_V0.0.2_256.safetensors",
                                     "mapping_00229-model.pth.tar",
                                     "mapping_00109-model.pth.tar", "wav2lip_gan.pth"]
    sel = models_cmd._selected(_parse(["models", "download", "--engine", "sadtalker", "--all"]))
    assert len(sel) == 4 and sel[1].name == "SadTalker_V0.0.2_512.safetensors"
    assert _parse(["models", "download"]).checkpoints == "main-level"
