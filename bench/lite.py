"""Lite engine speed on this machine, as a user meets it.

Prints: render frames/s at 256 and 512 (motion -> frames, no encoding, in this process), then the
wall time of ``python -m sadtalker_ext generate --engine lite`` in a fresh process (start-up, speech
analysis, face, render and encoding: what a user waits for) on 10 s and 60 s of speech (CMU ARCTIC
a0007 repeated with pauses) and the astronaut photo, for the default mouth shapes (pocketsphinx
alignment) and ``--phonemes acoustic`` side by side, with the load average; ``--load N`` repeats
them with N busy background processes. Issue 16's targets at 512 px: 10 s of speech in <= 5 s and
60 s in <= 30 s (RTF <= 0.5).

    python bench/lite.py [--frames 200] [--skip-e2e] [--seconds 10 60] [--rounds 2] [--load 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def render_fps(size: int, frames: int) -> float:
    import numpy as np
    from skimage import data

    from sadtalker_ext.audio.decode import load_audio
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.engines.base import RunContext
    from sadtalker_ext.engines.lite import LiteEngine
    from sadtalker_ext.options import GenerateOptions

    img, wav = demo_inputs()
    clip = load_audio(wav)
    opts = GenerateOptions(engine="lite", size=size, phonemes="acoustic")
    eng = LiteEngine()
    src = eng.prepare(img, opts)
    ctx = RunContext(audio=clip, options=opts, num_frames=clip.num_frames())
    motion = eng.motion(src, ctx)
    n = len(motion)
    src.renderer.render_frame(motion.frame(0))
    t = time.perf_counter()
    for i in range(frames):
        src.renderer.render_frame(motion.frame(i % n))
    return frames / (time.perf_counter() - t)


def _speech(seconds: float, folder: Path) -> Path:
    """CMU ARCTIC a0007 (4 s) repeated with 0.3 s pauses to ``seconds`` of 16 kHz speech, as a WAV file."""
    import numpy as np
    import soundfile as sf

    from sadtalker_ext.cli.main import demo_inputs

    _, wav = demo_inputs()
    x, sr = sf.read(str(wav), dtype="float32")
    unit = np.concatenate([x, np.zeros(int(0.3 * sr), np.float32)])
    y = np.tile(unit, int(np.ceil(seconds * sr / len(unit))))[: int(seconds * sr)]
    path = folder / f"speech_{seconds:g}s.wav"
    sf.write(str(path), y, sr)
    return path


def cli_run(image: Path, speech: Path, out: Path, size: int, extra=()) -> dict:
    """One CLI run in a fresh process, timed as a user meets it (start-up, speech analysis, encoding).

    Returns wall seconds, the child's CPU seconds and peak RSS (MB, the largest process: the CLI or its
    alignment worker)."""
    cmd = [sys.executable, "-m", "sadtalker_ext", "--quiet", "generate", "--image", str(image), "--audio",
           str(speech), "--out", str(out), "--engine", "lite", "--size", str(size), *extra]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, GLOG_minloglevel="2"))
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return {"wall": wall, "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "rss_mb": r1.ru_maxrss / 1024.0}


_LOAD = """
import numpy as np, time, sys
a = np.random.rand(1 << 22)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    a = np.sqrt(a * 1.0001 + 0.5)
"""


def _busy(n: int):
    return [subprocess.Popen([sys.executable, "-c", _LOAD, "3600"]) for _ in range(n)]


def _load1() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description="lite engine speed: render fps and CLI wall time (issue 16)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2, help="CLI runs per case (best and all printed)")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="also run with N busy background processes (1 core each, numpy)")
    a = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, load average (1 min) at start: {_load1():.2f}")
    for size in (256, 512):
        print(f"render only  {size}x{size}: {render_fps(size, a.frames):6.1f} frames/s")
    if a.skip_e2e:
        return
    from PIL import Image
    from skimage import data
    targets = {10.0: 5.0, 60.0: 30.0}  # issue 16: wall <= RTF 0.5
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        image = d / "astronaut.png"
        Image.fromarray(data.astronaut()).save(image)
        speech = {s: _speech(s, d) for s in a.seconds}
        for load in sorted({0, a.load}):
            procs = _busy(load)
            try:
                if procs:
                    time.sleep(2.0)
                for s in a.seconds:
                    for label, extra in (("default (pocketsphinx)", ()), ("--phonemes acoustic", ("--phonemes", "acoustic"))):
                        runs = [cli_run(image, speech[s], d / "out.mp4", a.size, extra) for _ in range(a.rounds)]
                        best = min(r["wall"] for r in runs)
                        target = targets.get(s)
                        walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
                        verdict = "" if target is None else f"  target <= {target:.0f} s: {'met' if best <= target else 'NOT met'}"
                        print(f"CLI wall, {a.size} px, {s:4.0f} s speech, {label:23s} busy {load}: best {best:5.1f} s "
                              f"(RTF {best / s:.2f}; runs {walls}; "
                              f"cpu {runs[0]['cpu']:.1f} s; peak RSS {max(r['rss_mb'] for r in runs):.0f} MB; "
                              f"load avg {_load1():.2f}){verdict}", flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    main()
