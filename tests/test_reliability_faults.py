"""Reliability: faults in the middle of a run. After each one: a clear one-line error (or exit 130
for Ctrl-C), no partial output and no temporary file left, and the next run works.

* Ctrl-C (SIGINT) sent to ``python -m sadtalker_ext generate`` while it starts, while it analyses a
  10-minute clip, and while it encodes (after its first progress line).
* The host's interrupt (``LocalHost.interrupt()``) during prepare, during motion, after the first
  chunk and after the last chunk (before the file is committed).
* Disk full while encoding: ENOSPC injected into the container's ``mux`` (Python API, CLI, HTTP);
  a real write limit (RLIMIT_FSIZE) on a CLI subprocess; a real full tmpfs where mounting is allowed.
* A download cut mid-way (connection dropped, then the process interrupted): the ``.part`` file is
  kept and the next call resumes it with a Range request (test_models_manager.py covers the
  protocol cases: 206/200/416, hash and size mismatch, mirrors).
* Out of GPU memory, injected as ``torch.cuda.OutOfMemoryError`` / ``RuntimeError("CUDA out of
  memory")`` in the Wav2Lip network, while loading the SadTalker networks and in the SadTalker render
  loop: the run fails with one-line ``OutOfMemory`` (HTTP 503) after the failed run's tensors are
  freed and ``torch.cuda.empty_cache()`` is called.

The HTTP client disconnect is in test_reliability_server.py (it needs a real server).
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip
from sadtalker_ext.engines.lite import LiteEngine
from sadtalker_ext.errors import GenerationInterrupted, OutOfMemory, OutputError
from sadtalker_ext.host.base import LocalHost
from sadtalker_ext.jobs import run_job
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import generate

from test_reliability_common import (LITE, TALLY, FullDiskContainer as _FullDiskContainer, check_video, leftovers, one_line, png_bytes,  # noqa: E402
                                     summary, wav_bytes)  # noqa: F401  (summary: autouse)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speech(arctic_wav) -> np.ndarray:
    from sadtalker_ext.audio.decode import load_audio
    return load_audio(arctic_wav).samples


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut, speech):
    """portrait.png, short.wav (0.6 s), ten_minutes.wav (19 MB) in a module folder."""
    root = tmp_path_factory.mktemp("faults-inputs")
    (root / "portrait.png").write_bytes(png_bytes(astronaut))
    (root / "short.wav").write_bytes(wav_bytes(speech[8000:17600], 16000))
    reps = int(np.ceil(600 * 16000 / len(speech)))
    (root / "ten_minutes.wav").write_bytes(wav_bytes(np.tile(speech, reps)[:600 * 16000], 16000))
    return root


def _survived():
    TALLY.add("faults_survived")


# ============================================================================ Ctrl-C on the CLI
def _cli(files, out: Path, audio: str, quiet: bool = True):
    cmd = [sys.executable, "-m", "sadtalker_ext"] + (["--quiet"] if quiet else []) + [
        "generate", "--image", str(files / "portrait.png"), "--audio", str(files / audio), "--out", str(out),
        "--engine", "lite", "--size", "256", "--phonemes", "acoustic"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc, needle: bytes, timeout: float) -> bytes:
    """stderr of ``proc`` until ``needle`` appears (progress lines end with \\r, not \\n)."""
    buf = b""
    end = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while needle not in buf:
        left = end - time.monotonic()
        assert left > 0, f"no {needle!r} in {buf[-400:]!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            data = os.read(fd, 65536)
            assert data, f"process ended before {needle!r}: {buf[-400:]!r}"
            buf += data
    return buf


@pytest.mark.parametrize("point", ["starting", "analysing", "encoding"])
def test_cli_ctrl_c(point, files, tmp_path):
    """SIGINT at three points of ``generate`` on a 10-minute clip: exit 130, one line, nothing left."""
    TALLY.add("faults_injected")
    out = tmp_path / "out" / "talk.mp4"
    out.parent.mkdir()
    proc = _cli(files, out, "ten_minutes.wav", quiet=point != "encoding")
    early = b""
    try:
        if point == "starting":
            time.sleep(0.3)            # python is still importing the package
        elif point == "analysing":
            time.sleep(3.0)            # decoding / face analysis / motion of 15,000 frames
        else:
            early = _read_until(proc, b"frame ", timeout=120)  # frames are being encoded
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (early + stderr).decode("utf8", "replace")
    # 130, or killed by SIGINT (-2, the shell shows 130): Python ends that way when the interrupt
    # reached a PyRun_* evaluation before the CLI caught it
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, stderr[-800:])
    assert "Traceback" not in stderr
    assert stderr.rstrip().splitlines()[-1] in ("interrupted; no video was written",
                                                "interrupted: generation was interrupted; no video was written")
    assert leftovers(out.parent) == []
    _survived()


def test_cli_runs_after_ctrl_c(files, tmp_path):
    TALLY.add("cases_tried")
    out = tmp_path / "ok.mp4"
    proc = _cli(files, out, "short.wav")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr.decode()
    check_video(out, 15, sample_rate=16000)
    assert leftovers(tmp_path) == ["ok.json", "ok.mp4"]  # the video and its sidecar
    TALLY.add("outcomes_matched")


# ============================================================================ host interrupt
class InterruptingEngine:
    """The lite engine, calling ``host.interrupt()`` right after ``prepare`` or ``motion``."""

    name = "lite"

    def __init__(self, host, point):
        self.inner, self.host, self.point = LiteEngine(), host, point

    def prepare(self, image, options):
        src = self.inner.prepare(image, options)
        if self.point == "prepare":
            self.host.interrupt()
        return src

    def output_size(self, source):
        return self.inner.output_size(source)

    def motion(self, source, ctx):
        m = self.inner.motion(source, ctx)
        if self.point == "motion":
            self.host.interrupt()
        return m

    def frames(self, source, motion, ctx):
        return self.inner.frames(source, motion, ctx)


class ProbeHost(LocalHost):
    def __init__(self, *a, point="", **kw):
        super().__init__(*a, on_progress=self._progress_hook, **kw)
        self.point = point
        self.calls = []
        self.steps = []  # the pipeline's reports before the first frame (done 0): which step runs

    def _progress_hook(self, done, total, text, preview):
        if not done:
            self.steps.append(text)
            return
        self.calls.append((done, total))
        if (self.point == "first_chunk" and len(self.calls) == 1) or (self.point == "last_chunk" and done == total):
            self.interrupt()

    def engine_for(self, options):
        return InterruptingEngine(self, self.point)


@pytest.mark.parametrize("point", ["prepare", "motion", "first_chunk", "last_chunk"])
def test_host_interrupt(point, astronaut, speech, tmp_path):
    TALLY.add("faults_injected")
    host = ProbeHost(output_dir=tmp_path / "out", point=point)
    clip = AudioClip(speech[8000:8000 + 32000], 16000)  # 2 s: 50 frames, chunks of 10
    opts = GenerateOptions(**LITE, chunk_size=10)
    with pytest.raises(GenerationInterrupted) as err:
        run_job(host, astronaut, clip, opts)
    assert one_line(str(err.value))
    expected_calls = {"prepare": 0, "motion": 0, "first_chunk": 1, "last_chunk": 5}[point]
    assert len(host.calls) == expected_calls and (point != "last_chunk" or host.calls[-1] == (50, 50))
    assert host.steps == ["lite: finding the face", "lite: analysing the speech"][:1 if point == "prepare" else 2]
    assert leftovers(host.output_dir()) == []        # no mp4, no sidecar, no .part
    assert not host.interrupted() and not LocalHost._lock.locked()
    host.point = ""                                  # the next job on the same host works
    job = run_job(host, astronaut, clip, opts)
    check_video(job.path, 50, sample_rate=16000)
    assert sorted(leftovers(host.output_dir())) == sorted([job.path.name, job.sidecar.name])
    _survived()


# ============================================================================ disk full
@pytest.fixture
def full_disk(monkeypatch):
    import av
    real_open = av.open
    hits = []

    def fake_open(file, mode="r", *a, **kw):
        c = real_open(file, mode, *a, **kw)
        if mode == "w":
            hits.append(file)
            return _FullDiskContainer(c, budget=5)
        return c
    monkeypatch.setattr(av, "open", fake_open)
    return hits


@pytest.mark.parametrize("frontend", ["python", "cli", "http"])
def test_disk_full_while_encoding(frontend, full_disk, files, astronaut, tmp_path, capfd, monkeypatch):
    TALLY.add("faults_injected")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "talk.mp4"
    image, audio = files / "portrait.png", files / "short.wav"
    if frontend == "python":
        with pytest.raises(OutputError) as err:
            generate(image, audio, out, GenerateOptions(**LITE, chunk_size=5))
        message = str(err.value)
    elif frontend == "cli":
        from sadtalker_ext.cli.main import main
        capfd.readouterr()
        rc = main(["--quiet", "generate", "--image", str(image), "--audio", str(audio), "--out", str(out),
                   "--engine", "lite", "--size", "256", "--phonemes", "acoustic", "--chunk-size", "5"])
        stderr = capfd.readouterr().err
        assert rc == 2 and "Traceback" not in stderr
        message = [ln for ln in stderr.splitlines() if ln.startswith("error:")][0]
    else:
        fastapi = pytest.importorskip("fastapi")
        from fastapi.testclient import TestClient

        from sadtalker_ext import api
        app = fastapi.FastAPI()
        host = LocalHost(output_dir=out_dir)
        api.mount(app, host)
        with TestClient(app) as client:
            TALLY.add("requests_sent")
            resp = client.post("/talking-head/v1/generate", files={"image": ("p.png", image.read_bytes()),
                                                                  "audio": ("a.wav", audio.read_bytes())},
                               data={"options": json.dumps({**LITE, "chunk_size": 5})})
            assert resp.status_code == 507 and resp.json()["error"] == "OutputError", resp.text
            message = resp.json()["detail"]
            monkeypatch.undo()  # the disk has room again: the same app serves the next request
            TALLY.add("requests_sent")
            ok = client.post("/talking-head/v1/generate", files={"image": ("p.png", image.read_bytes()),
                                                                "audio": ("a.wav", audio.read_bytes())},
                             data={"options": json.dumps(LITE)})
            assert ok.status_code == 200, ok.text
            TALLY.add("requests_served")
            check_video(out_dir / ok.json()["filename"], 15, sample_rate=16000)
            (out_dir / ok.json()["filename"]).unlink()
            (out_dir / ok.json()["sidecar"]).unlink()
    assert full_disk, "the fault was not injected"
    assert "disk full" in message and one_line(message), message
    assert leftovers(out_dir) == []
    _survived()


def test_write_limit_on_a_real_process(files, arctic_wav, tmp_path):
    """RLIMIT_FSIZE (40 kB) on the CLI: the kernel refuses the writes (EFBIG); nothing is left."""
    resource = pytest.importorskip("resource")
    TALLY.add("faults_injected")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    out = tmp_path / "talk.mp4"
    p = subprocess.run([sys.executable, "-m", "sadtalker_ext", "--quiet", "generate", "--image",
                        str(files / "portrait.png"), "--audio", str(arctic_wav), "--out", str(out),
                        "--engine", "lite", "--size", "256", "--phonemes", "acoustic"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert p.returncode == 2, p.stderr[-800:]
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot write" in lines[0] and "File too large" in lines[0], p.stderr[-800:]
    assert leftovers(tmp_path) == []
    _survived()


def test_disk_full_on_a_small_tmpfs(files, arctic_wav, tmp_path):
    """A 64 kB tmpfs (where this process may mount one): real ENOSPC, a clear error, no file, space back."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here (the injected and RLIMIT tests cover it)")
    try:
        TALLY.add("faults_injected")
        with pytest.raises(OutputError) as err:
            generate(files / "portrait.png", arctic_wav, mnt / "talk.mp4",
                     GenerateOptions(**LITE))
        assert "disk full" in str(err.value) and one_line(str(err.value))
        assert leftovers(mnt) == []
        st = os.statvfs(mnt)
        assert st.f_bfree == st.f_blocks  # every byte is free again
        _survived()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ============================================================================ download cut mid-way
def test_download_cut_then_interrupted_then_resumed(tmp_path):
    from test_models_manager import DATA, LocalServer, _spec

    from sadtalker_ext.errors import DownloadError
    from sadtalker_ext.models.download import download
    TALLY.add("faults_injected", 2)
    srv = LocalServer(DATA)
    try:
        spec = _spec(srv.url)
        srv.drop_after, srv.drop_times = 90_000, 1       # the connection breaks after 90 kB
        with pytest.raises(DownloadError) as err:
            download(spec, tmp_path, timeout=5, chunk_size=16384, retries=0)
        assert one_line(str(err.value))
        part = tmp_path / (spec.name + ".part")
        assert part.stat().st_size == 90_000 and not (tmp_path / spec.name).exists()

        def stop_at_200k(done, total):                   # then the user stops the next attempt
            if done >= 200_000:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            download(spec, tmp_path, progress=stop_at_200k, timeout=5, chunk_size=16384)
        kept = part.stat().st_size
        assert 200_000 <= kept < len(DATA) and not (tmp_path / spec.name).exists()
        path = download(spec, tmp_path, timeout=5, chunk_size=16384)   # and resumes where it was
        assert path.read_bytes() == DATA and not part.exists()
        assert [r for r, _ in srv.requests] == [None, "bytes=90000-", f"bytes={kept}-"]
        assert [code for _, code in srv.requests] == [200, 206, 206]
    finally:
        srv.close()
    _survived()
    _survived()


# ============================================================================ out of GPU memory
torch_required = pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is None,
                                    reason="needs torch")


@pytest.fixture
def cache_probe(monkeypatch):
    """Records each ``torch.cuda.empty_cache()`` call with whether the failed run's tensor was freed."""
    import torch
    probe = {"calls": [], "refs": []}

    def empty_cache():
        probe["calls"].append([r() is None for r in probe["refs"]])
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    return probe


def _oom(probe, kind="typed"):
    import torch
    big = torch.empty(4_000_000)  # 16 MB held by the failing frame
    probe["refs"].append(weakref.ref(big))
    if kind == "typed":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a "
                                          "total capacity of 79.1 GiB of which 1.2 GiB is free.")
    raise RuntimeError("CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 7.79 GiB total capacity)")


@pytest.fixture
def wav2lip_dir(synthetic_checkpoints, tmp_path):
    d = tmp_path / "w2l"
    d.mkdir()
    os.symlink(synthetic_checkpoints / "wav2lip.pth", d / "wav2lip.pth")
    return d


def _check_released(probe):
    assert probe["calls"], "torch.cuda.empty_cache() was not called"
    assert all(all(c) for c in probe["calls"][-1:]), probe  # the tensor was gone when the cache was emptied


@torch_required
@pytest.mark.parametrize("frontend", ["python", "cli", "http"])
def test_out_of_gpu_memory_in_wav2lip(frontend, cache_probe, wav2lip_dir, files, tmp_path, capfd, monkeypatch):
    import torch

    from sadtalker_ext.lipsync import wav2lip_net
    torch.set_num_threads(min(2, torch.get_num_threads()))
    TALLY.add("faults_injected")
    real_forward = wav2lip_net.Wav2Lip.forward
    monkeypatch.setattr(wav2lip_net.Wav2Lip, "forward", lambda self, mel, face: _oom(cache_probe))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "talk.mp4"
    image, audio = files / "portrait.png", files / "short.wav"
    opts = dict(LITE, lipsync="wav2lip", wav2lip_batch_size=4)
    if frontend == "python":
        with pytest.raises(OutOfMemory) as err:
            generate(image, audio, out, GenerateOptions(**opts, checkpoints=str(wav2lip_dir)))
        message = str(err.value)
    elif frontend == "cli":
        from sadtalker_ext.cli.main import main
        capfd.readouterr()
        rc = main(["--quiet", "generate", "--image", str(image), "--audio", str(audio), "--out", str(out),
                   "--engine", "lite", "--size", "256", "--phonemes", "acoustic", "--lipsync", "wav2lip",
                   "--wav2lip-batch-size", "4", "--checkpoints", str(wav2lip_dir)])
        stderr = capfd.readouterr().err
        assert rc == 2 and "Traceback" not in stderr, stderr
        message = [ln for ln in stderr.splitlines() if ln.startswith("error:")][0]
    else:
        fastapi = pytest.importorskip("fastapi")
        from fastapi.testclient import TestClient

        from sadtalker_ext import api
        app = fastapi.FastAPI()
        host = LocalHost(output_dir=out_dir, models_dir=wav2lip_dir)
        api.mount(app, host)
        body = {"files": {"image": ("p.png", image.read_bytes()), "audio": ("a.wav", audio.read_bytes())},
                "data": {"options": json.dumps(opts)}}
        with TestClient(app) as client:
            TALLY.add("requests_sent")
            resp = client.post("/talking-head/v1/generate", **body)
            assert resp.status_code == 503 and resp.json()["error"] == "OutOfMemory", resp.text
            message = resp.json()["detail"]
            assert leftovers(out_dir) == []
            monkeypatch.setattr(wav2lip_net.Wav2Lip, "forward", real_forward)  # memory is back
            TALLY.add("requests_sent")
            ok = client.post("/talking-head/v1/generate", **body)
            assert ok.status_code == 200, ok.text
            TALLY.add("requests_served")
            check_video(out_dir / ok.json()["filename"], 15, sample_rate=16000)
            for name in (ok.json()["filename"], ok.json()["sidecar"]):
                (out_dir / name).unlink()
    assert "out of GPU memory (Tried to allocate 2.50 GiB)" in message and "--wav2lip-batch-size" in message
    assert one_line(message)
    _check_released(cache_probe)
    assert leftovers(out_dir) == []
    _survived()


@torch_required
def test_out_of_gpu_memory_loading_sadtalker(cache_probe, synthetic_checkpoints, astronaut, speech, tmp_path,
                                             monkeypatch):
    """The GPU is full while the SadTalker networks are moved onto it."""
    from sadtalker_ext.engines import sadtalker
    TALLY.add("faults_injected")
    monkeypatch.setattr(sadtalker, "_cached", lambda key, build: _oom(cache_probe, kind="text"))
    out = tmp_path / "talk.mp4"
    with pytest.raises(OutOfMemory) as err:
        generate(astronaut, AudioClip(speech[:8000], 16000), out,
                 GenerateOptions(engine="sadtalker", size=256, checkpoints=str(synthetic_checkpoints)))
    assert "out of GPU memory (Tried to allocate 512.00 MiB)" in str(err.value) and one_line(str(err.value))
    _check_released(cache_probe)
    assert leftovers(tmp_path) == []
    _survived()


@torch_required
def test_out_of_gpu_memory_in_the_sadtalker_render_loop(cache_probe, astronaut, speech, tmp_path):
    """The real ``SadTalkerEngine.frames`` loop on a (fake) CUDA source: the engine empties the
    cache itself, the pipeline once more after dropping the run; nothing is written."""
    import threading
    from types import SimpleNamespace

    import torch

    from sadtalker_ext.engines.sadtalker import SadTalkerEngine, SadTalkerMotion
    TALLY.add("faults_injected")

    class PreparedEngine(SadTalkerEngine):
        def prepare(self, image, options):
            models = SimpleNamespace(device=torch.device("cuda"), lock=threading.Lock(), renderer=None)
            return SimpleNamespace(models=models, output_size=(64, 64), token=object())

        def output_size(self, source):
            return source.output_size

        def motion(self, source, ctx):
            return SadTalkerMotion(coeffs=np.zeros((ctx.num_frames, 70), np.float32))

        def _driving_keypoints(self, source, coeffs, start, stop):
            _oom(cache_probe)

    out = tmp_path / "talk.mp4"
    with pytest.raises(OutOfMemory) as err:
        generate(astronaut, AudioClip(speech[:8000], 16000), out, GenerateOptions(engine="sadtalker", size=256),
                 engine=PreparedEngine())
    assert one_line(str(err.value))
    assert len(cache_probe["calls"]) >= 2  # the engine's own finally, then the pipeline's release
    _check_released(cache_probe)
    assert leftovers(tmp_path) == []
    _survived()
