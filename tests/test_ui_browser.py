"""A real browser drives the standalone UI (``python -m sadtalker_ext ui`` on 127.0.0.1): Debian's chromium,
headless, through Playwright (no browser download: ``executable_path=/usr/bin/chromium``).

Chromium is a system package, so it cannot come from ``install.py`` (pip only, also run by the WebUI inside
its venv) and ``.ci/run`` is fixed to the README's command: when it is missing and we are root (CI, the
dev machines) the module fixture installs it with ``apt-get install -y chromium`` once; elsewhere the
tests are skipped with the command to run.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("SADTALKER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LONG_REPEATS = 15        # the 4 s ARCTIC sentence 15 times: 60 s, 1500 frames at 25 fps
LONG_FRAMES = 1500
SCREENSHOT = Path(os.environ.get("SADTALKER_UI_SCREENSHOT", "/tmp/ui.png"))

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")


def _ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing; install it with: sudo apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=900)
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The standalone UI in a subprocess: (url, output dir). Engine choice 'auto' sees no checkpoints."""
    work = tmp_path_factory.mktemp("ui_server")
    out = work / "outputs"
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "SADTALKER_CHECKPOINTS": "",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sadtalker_ext", "ui", "--host", "127.0.0.1", "--port",
                             str(port), "--output-dir", str(out)], cwd=str(work), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the UI server exited: {(work / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the UI server did not answer: {(work / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    exe = _ensure_chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(exe), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, arctic_wav):
    """The astronaut photo as a PNG, the ARCTIC speech (4 s, wav) and the same speech tiled to 60 s (FLAC).

    The long speech is only ever interrupted: 1500 frames keep the run going for tens of seconds, so the
    Interrupt click lands mid-run even when the browser shows progress late on a loaded machine."""
    import soundfile as sf
    from PIL import Image
    from skimage import data
    d = tmp_path_factory.mktemp("ui_inputs")
    png = d / "astronaut.png"
    Image.fromarray(data.astronaut()).save(png)
    speech, sr = sf.read(str(arctic_wav), dtype="int16")
    long_speech = d / "speech_60s.flac"   # FLAC: gradio would need ffmpeg to decode it; the tab does not
    sf.write(str(long_speech), np.tile(speech, LONG_REPEATS), sr, format="FLAC")
    return png, Path(arctic_wav), long_speech


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#th_generate")
    return page


def _fill(page, image: Path, audio: Path) -> None:
    page.set_input_files("#th_image input[type=file]", str(image))
    page.set_input_files("#th_audio input[type=file]", str(audio))
    page.wait_for_selector("#th_audio audio")          # the upload landed (player shown)
    page.click("#th_opt_engine input")                  # engine: lite (weights-free, fast on CPU)
    page.click('#th_opt_engine li[data-value="lite"]')
    page.wait_for_function("() => document.querySelector('#th_opt_engine input').value === 'lite'")


def _files(folder: Path) -> set:
    return {p.name for p in folder.rglob("*")} if folder.exists() else set()


def test_generate_in_the_browser_shows_a_playable_4s_video(server, browser, inputs):
    url, out = server
    png, speech, _ = inputs
    page = _open(browser, url)
    try:
        _fill(page, png, speech)
        page.click("#th_generate")
        page.wait_for_selector("#th_status .th-running", timeout=30_000)
        handle = page.wait_for_function(
            """() => { const v = document.querySelector('#th_video video');
                       return v && v.readyState >= 2 && isFinite(v.duration) && v.duration > 0 ? v : null; }""",
            timeout=150_000)
        info = page.evaluate(
            """async (v) => { v.muted = true; await v.play(); await new Promise(r => setTimeout(r, 600));
                              const t = v.currentTime; v.pause();
                              return {duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                                      error: v.error ? v.error.code : null, played: t}; }""", handle)
        status = page.inner_text("#th_status")
        page.wait_for_selector("#th_history img")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        page.close()
    assert info["error"] is None
    assert abs(info["duration"] - 4.0) < 0.25, info
    assert (info["width"], info["height"]) == (512, 512)
    assert info["played"] > 0.1, info  # it really plays
    assert "Saved" in status and "engine lite" in status
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) == 1 and mp4s[0].with_suffix(".json").is_file()
    import json
    source = json.loads(mp4s[0].with_suffix(".json").read_text())["source"]
    assert source["image"]["file"] == png.name and source["image"]["origin"] == "upload", source  # its base name
    assert source["audio"]["file"] and abs(source["audio"]["duration_s"] - 4.0) < 0.1, source


def _server_log_tail(out: Path, n: int = 3000) -> str:
    log = out.parent / "server.log"
    return log.read_text(errors="replace")[-n:] if log.is_file() else "(no server log)"


def _wait_status(page, js_test: str, timeout_ms: int) -> bool:
    """Wait until ``js_test(statusText)`` holds; False on timeout (the caller reports what it saw)."""
    try:
        page.wait_for_function(f"() => ({js_test})(document.querySelector('#th_status').innerText)",
                               timeout=timeout_ms)
        return True
    except sync_api.TimeoutError:
        return False


#: What gradio 3.41's queue prints when one step of a streaming event fails inside it: the event ends
#: and its page hears nothing more (gradio-app/gradio#9411, open upstream; not reproduced here outside
#: CI). The interrupt test runs once more on a fresh page when the first attempt ended that way.
GRADIO_LOST_EVENT = "'AsyncRequest' object has no attribute '_json_response_data'"


def _interrupt_once(browser, url, png, speech) -> dict:
    page = _open(browser, url)
    seen = []
    try:
        _fill(page, png, speech)
        page.click("#th_generate")
        # wait until frames are being rendered (mid-run), then interrupt
        rendering = _wait_status(page, f"t => /frame \\d+\\/{LONG_FRAMES}/.test(t)", 90_000)
        seen.append(page.inner_text("#th_status"))
        if rendering:
            page.click("#th_interrupt")
            # the run ends one way or another; which way is asserted with what the page showed
            _wait_status(page, "t => t.includes('Interrupted') || t.includes('Saved') || t.includes('rror')",
                         120_000)
            seen.append(page.inner_text("#th_status"))
        video_src = page.evaluate("() => { const v = document.querySelector('#th_video video'); "
                                  "return v ? v.src : null; }")
    finally:
        page.close()
    return {"rendering": rendering, "seen": seen, "video_src": video_src,
            "interrupted": rendering and "Interrupted: no video was written" in seen[-1]}


def test_interrupt_in_the_browser_leaves_no_output(server, browser, inputs):
    url, out = server
    png, _, long_speech = inputs
    before = _files(out)
    log_before = _server_log_tail(out, 10**7)
    r = _interrupt_once(browser, url, png, long_speech)
    if not r["interrupted"] and GRADIO_LOST_EVENT in _server_log_tail(out, 10**7)[len(log_before):]:
        import warnings
        warnings.warn(f"gradio's queue lost the event ({GRADIO_LOST_EVENT}); page showed {r['seen']!r}; "
                      "running the scenario once more")
        # let the first run end: an interrupted one stops within a chunk, one never interrupted (the page
        # never showed frames) writes its whole video, which is left out of the second attempt's check
        deadline = time.time() + (20 if r["rendering"] else 240)
        while time.time() < deadline and not any(
                n.endswith(".json") and not n.startswith(".") for n in _files(out) - before):
            time.sleep(1)
        time.sleep(2)
        before = _files(out)
        r = _interrupt_once(browser, url, png, long_speech)
    report = (f"status at the Interrupt click and at the end: {r['seen']!r}; new files: "
              f"{sorted(_files(out) - before)}; server log:\n{_server_log_tail(out)}")
    assert r["rendering"], "the page never showed frames being rendered; " + report
    assert r["interrupted"], report
    assert not r["video_src"]
    assert _files(out) == before, sorted(_files(out) - before)  # no mp4, no sidecar, no partial file
