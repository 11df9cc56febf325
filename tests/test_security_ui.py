"""The tab's gradio handlers open only files the client uploaded (gradio's upload folder) or the output folder,
whatever path a payload names (issue 15, item 1), on gradio 3.41 (this venv, as in A1111) and 4.40 (the cached
gradio 4 venv, as in Forge).

The probe serves the standalone page over HTTP and sends hostile payloads to **every** event its ``/config``
lists (found from the Blocks' config, not a hand list): each file-like input in turn names a server file or a
URL (a canary HTTP server records any fetch), each text input a server folder or file, every other input
keeps a valid value (real uploads of the astronaut and the ARCTIC clip). ``run_job`` and the model download
are replaced by recorders, so what a handler *would* read (the audio bytes, the image, every path option, the
download folder) is recorded without rendering. It then checks: no response carries a server file's content
or the secret folder's path, no job got a server file's media or a path under the secret folder, no download
went there, nothing was fetched, and no copy of a secret file appeared anywhere (gradio's temp folder
included) nor any file under the secret folder.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_ui_build import GRADIO4_VENV, gradio4_python  # noqa: F401  (the cached gradio 4.40 venv)

REPO = Path(__file__).resolve().parents[1]


def _probe(repo: str, work: str, wav: str, astronaut: str) -> dict:
    """Serve the page, attack every event, report what leaked (JSON-able). Runs as a script in either venv."""
    import base64
    import hashlib
    import http.server
    import io
    import os
    import shutil
    import socket
    import threading
    import time
    import urllib.request
    import uuid
    from pathlib import Path

    import numpy as np
    work = Path(work)
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio-tmp")   # this probe's own upload / temp folder
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from PIL import Image
    astro = np.asarray(Image.open(astronaut).convert("RGB"))

    secret_root = work / "server-private"
    secret = secret_root / "files"
    escape = secret_root / "made-by-client"                   # must never come to exist
    secret.mkdir(parents=True)
    marker = "TOP-SECRET-" + uuid.uuid4().hex
    (secret / "passwd.txt").write_text(marker + "\nroot:x:0:0\n")
    (secret / "keys.json").write_text(json.dumps({"keyframes": [{"time": 0.0}], "note": marker}))
    shutil.copy(wav, secret / "private.wav")
    with open(secret / "private.wav", "ab") as f:             # same audio, different bytes: own hash
        f.write(marker.encode())
    Image.fromarray(astro[:96, :80]).save(secret / "private.png")   # 80x96: its own shape
    shutil.copy(secret / "private.png", secret / "private.mp4")
    secret_hashes = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in secret.iterdir()}
    before_secret = sorted(str(p) for p in secret_root.rglob("*"))

    hits = []

    class Canary(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(marker.encode())
        do_HEAD = do_GET

        def log_message(self, *a):
            pass
    canary = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=canary.serve_forever, daemon=True).start()
    canary_url = f"http://127.0.0.1:{canary.server_address[1]}/secret.wav"

    import sadtalker_ext.jobs as jobs
    import sadtalker_ext.models.download as dl
    from sadtalker_ext.errors import DownloadError, GenerationInterrupted
    seen_jobs, seen_downloads = [], []

    def record_job(host, image, audio, options, **kw):
        entry = {"image_shape": list(np.asarray(image).shape) if image is not None else None,
                 "audio": None, "paths": {}}
        if isinstance(audio, (str, os.PathLike)) and os.path.isfile(audio):
            entry["audio"] = hashlib.sha256(Path(audio).read_bytes()).hexdigest()
        for name in ("checkpoints", "ref_eyeblink", "ref_pose", "refine", "lipsync_debug", "sd_checkpoint"):
            v = getattr(options, name, None)
            if isinstance(v, (str, os.PathLike)):
                entry["paths"][name] = os.path.realpath(v)
                if os.path.isfile(v):
                    entry["paths"][name + "_sha"] = hashlib.sha256(Path(v).read_bytes()).hexdigest()
        seen_jobs.append(entry)
        raise GenerationInterrupted("probe: recorded, not run")

    def record_download(spec, dest, progress=None, **kw):
        seen_downloads.append(os.path.realpath(dest))
        raise DownloadError("probe: offline")
    jobs.run_job = record_job
    dl.download = record_download

    from sadtalker_ext.ui import compat
    from sadtalker_ext.ui.standalone import serve
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_dir = work / "outputs"
    page, url = serve("127.0.0.1", port, out_dir, block=False)
    url = url.rstrip("/") + "/"
    g4 = compat.major() >= 4

    def post(path, body, ctype="application/json"):
        req = urllib.request.Request(url + path, data=body, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode("utf8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf8", "replace")

    def upload(path):
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{Path(path).name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + \
            f"\r\n--{boundary}--\r\n".encode()
        status, text = post("upload", body, f"multipart/form-data; boundary={boundary}")
        assert status == 200, (status, text)
        return json.loads(text)[0]

    def file_payload(path, name):
        if g4:
            return {"path": path, "url": path if "://" in path else None, "orig_name": name,
                    "meta": {"_type": "gradio.FileData"}}
        return {"name": path, "data": None, "is_file": True, "orig_name": name}

    legit_png = work / "portrait.png"
    Image.fromarray(astro[::2, ::2]).save(legit_png)    # 256x256
    legit_wav = upload(wav)
    if g4:
        legit_image = file_payload(upload(legit_png), "portrait.png")
    else:
        legit_image = "data:image/png;base64," + base64.b64encode(legit_png.read_bytes()).decode()

    with urllib.request.urlopen(url + "config", timeout=30) as r:
        config = json.loads(r.read())
    comps = {c["id"]: c for c in config["components"]}
    FILE_LIKE = {"file", "audio", "video", "image", "model3d", "uploadbutton"}

    def benign(cid):
        c = comps.get(cid, {})
        kind, props = c.get("type"), c.get("props", {})
        if kind == "audio":
            return file_payload(legit_wav, "speech.wav")
        if kind == "image":
            return legit_image if props.get("elem_id") == "th_image" else None
        if kind in FILE_LIKE or kind == "state":
            return None
        return props.get("value")

    def hostile_values(cid):
        kind = comps.get(cid, {}).get("type")
        if kind in FILE_LIKE:
            target = {"audio": "private.wav", "image": "private.png", "video": "private.mp4"}.get(kind, "passwd.txt")
            if kind == "file":
                return [file_payload(str(secret / "passwd.txt"), "passwd.txt"),
                        file_payload(str(secret / "keys.json"), "keys.json"), file_payload(canary_url, "x.wav")]
            vals = [file_payload(str(secret / target), target), file_payload(canary_url, "x.wav")]
            if kind == "image" and not g4:
                vals.append(str(secret / target))            # gradio 3 images are base64: a path string
            return vals
        if kind == "textbox":
            return [str(escape), str(secret), str(secret / "passwd.txt"), str(secret / "private.png")]
        return []

    responses, events = [], 0
    deps = config["dependencies"]
    for i, dep in enumerate(deps):
        if dep.get("backend_fn") is False:
            continue
        fn_index = dep.get("id", i)
        inputs = list(dep.get("inputs", []))
        events += 1
        base = [benign(cid) for cid in inputs]
        cases = [list(base)]
        for k, cid in enumerate(inputs):
            for v in hostile_values(cid):
                case = list(base)
                case[k] = v
                cases.append(case)
        for case in cases:
            session = uuid.uuid4().hex[:11]
            for _ in range(40):                                   # a generator answers one step per call
                body = json.dumps({"data": case, "fn_index": fn_index, "session_hash": session,
                                   "event_data": None})
                status, text = post("run/predict", body.encode())
                responses.append({"fn": fn_index, "status": status, "text": text[:100000], "sent": body})
                try:
                    more = json.loads(text).get("is_generating", False)
                except (ValueError, AttributeError):
                    more = False
                if not more:
                    break
    for t in threading.enumerate():                                # jobs / downloads the events started
        if t.name.startswith("talking-head"):
            t.join(60)

    leaks = []
    for r in responses:   # a secret's content, or the name of a secret file the request did not name itself
        named = [n for n in secret_hashes.values() if n in r["text"] and n not in r["sent"]]
        if marker in r["text"] or named:
            leaks.append(f"fn {r['fn']} answered with a secret's content or listing: {r['text'][:300]}")
    for j in seen_jobs:
        if j["audio"] in secret_hashes:
            leaks.append(f"a job was given the server's {secret_hashes[j['audio']]}")
        if j["image_shape"] and j["image_shape"][:2] == [96, 80]:
            leaks.append("a job was given the server's private.png")
        for name, v in j["paths"].items():
            if v in secret_hashes or str(v).startswith(str(secret_root)):
                leaks.append(f"a job was given {name} = {v}")
    for d in seen_downloads:
        if d.startswith(str(secret_root)):
            leaks.append(f"a download was sent to the client's folder {d}")
    if hits:
        leaks.append(f"the server fetched client URLs: {hits[:5]}")
    for p in work.rglob("*"):                                      # copies of the secrets anywhere else
        if p.is_file() and not str(p).startswith(str(secret_root)):
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            if h in secret_hashes:
                leaks.append(f"a copy of {secret_hashes[h]} was written to {p}")
    after_secret = sorted(str(p) for p in secret_root.rglob("*"))
    if after_secret != before_secret:
        leaks.append(f"files appeared under the server's private folder: {sorted(set(after_secret) - set(before_secret))[:5]}")
    page.close()
    canary.shutdown()
    return {"version": list(compat.version()), "events": events, "requests": len(responses),
            "jobs": len(seen_jobs), "downloads": len(seen_downloads), "leaks": leaks,
            "fns": sorted({r["fn"] for r in responses})}


PROBE_SCRIPT = ("import json, sys\nsys.path.insert(0, sys.argv[1])\n"
                + textwrap.dedent(inspect.getsource(_probe))
                + "print('RESULT' + json.dumps(_probe(*sys.argv[1:5])))\n")


def _run(python: Path, tmp_path: Path, wav: Path, astronaut) -> dict:
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GRADIO_TEMP_DIR")}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.run([str(python), "-c", PROBE_SCRIPT, str(REPO), str(tmp_path), str(wav),
                           str(tmp_path / "astronaut.png")],
                          capture_output=True, text=True, timeout=540, env=env, cwd=str(tmp_path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT"):])


def _check(result: dict, major: int) -> None:
    assert result["version"][0] == major
    # every event of the tab was attacked (the generate, interrupt, history, models, download, refine panel ones)
    assert result["events"] >= 10 and len(result["fns"]) == result["events"], result
    assert result["requests"] > 3 * result["events"]
    assert result["leaks"] == [], "\n".join(result["leaks"])


def test_no_event_of_the_tab_opens_a_server_path_under_gradio3(tmp_path, arctic_wav, astronaut):
    gradio = pytest.importorskip("gradio")
    assert gradio.__version__.startswith("3.41")
    result = _run(Path(sys.executable), tmp_path, arctic_wav, astronaut)
    _check(result, 3)
    assert result["jobs"] >= 1  # benign inputs do reach the job: the probe can see what a job gets


def test_no_event_of_the_tab_opens_a_server_path_under_gradio4(gradio4_python, tmp_path, arctic_wav, astronaut):  # noqa: F811
    result = _run(gradio4_python, tmp_path, arctic_wav, astronaut)
    _check(result, 4)
    assert result["jobs"] >= 1


# ------------------------------------------------------------------------------------------- interrupt
def test_interrupt_stops_only_the_session_that_pressed_it(tmp_path, monkeypatch, astronaut, arctic_wav, request):
    """Two sessions run at once (the second waits for the host's lock): each Interrupt, with its session's
    token (the gr.State gradio keeps on the server), stops that session's run only; the host-wide stop is
    used only while that run holds the host's lock."""
    pytest.importorskip("gradio")
    import threading
    import time

    import numpy as np

    import sadtalker_ext.jobs as jobs
    from sadtalker_ext.errors import GenerationInterrupted
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.ui import tab
    from test_ui_build import _inputs, as_upload

    host = LocalHost(output_dir=tmp_path / "out")
    host_stops = []
    real_interrupt = host.interrupt
    host.interrupt = lambda: (host_stops.append(time.monotonic()), real_interrupt())
    ui = tab.build_blocks(host).talking_head_ui
    wav = str(as_upload(arctic_wav, request))

    def fake_run_job(h, image, audio, options, **kw):
        with h.job("talking-head", 0):
            for i in range(6000):
                if h.interrupted():
                    raise GenerationInterrupted("interrupted")
                h.progress(i + 1, 6000, f"frame {i + 1}", np.zeros((8, 8, 3), np.uint8))
                time.sleep(0.01)
        raise GenerationInterrupted("ran to the end")   # the test never lets a run finish
    monkeypatch.setattr(jobs, "run_job", fake_run_job)

    steps = {"a": [], "b": []}

    def run(name):
        for step in ui.generate(*_inputs(ui, astronaut, wav)):
            steps[name].append(step)
    ta = threading.Thread(target=run, args=("a",))
    ta.start()
    while not any("frame" in s[0] for s in steps["a"]):
        time.sleep(0.01)
    tb = threading.Thread(target=run, args=("b",))
    tb.start()
    while not steps["b"]:
        time.sleep(0.01)
    token_a, token_b = steps["a"][0][5], steps["b"][0][5]
    assert token_a and token_b and token_a != token_b
    assert "Interrupting" in ui.interrupt(token_b)         # b waits for the lock: only its own flag is set
    tb.join(10)
    assert "Interrupted" in steps["b"][-1][0] and host_stops == []
    assert ta.is_alive() and "frame" in steps["a"][-1][0]  # a renders on
    assert "Interrupting" in ui.interrupt(token_a)
    ta.join(10)
    assert "Interrupted" in steps["a"][-1][0] and len(host_stops) == 1
    assert "Nothing is running" in ui.interrupt(token_a)   # a finished token stops nothing
