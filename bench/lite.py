"""Lite engine speed and memory on this machine.

Prints: render frames/s at 256 and 512 (motion -> frames, no encoding), end-to-end real-time
factor (wall time / audio duration, everything from decoding to the finished MP4) for 10 s and
60 s of speech (CMU ARCTIC a0007 repeated), and each run's peak RSS (separate processes).
Targets on the 2-core CPU: end-to-end >= 25 fps at 512 (RTF <= 1.0); RSS(60 s) <= 1.25 x RSS(10 s).

    python bench/lite.py [--frames 200] [--skip-e2e]
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


def e2e_child(seconds: float, size: int) -> None:
    """Run in a fresh process: make the speech, generate, print JSON with wall time and peak RSS."""
    import numpy as np

    from sadtalker_ext.audio.decode import AudioClip, load_audio
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate

    img, wav = demo_inputs()
    base = load_audio(wav)
    reps = int(np.ceil(seconds / base.duration))
    x = np.tile(base.samples, reps)[: int(seconds * base.sample_rate)]
    clip = AudioClip(samples=x, sample_rate=base.sample_rate)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = generate(img, clip, Path(d) / "bench.mp4", GenerateOptions(engine="lite", size=size))
        wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "size": size, "wall": wall, "frames": res.num_frames,
                      "rss_mb": rss, "viseme_source": res.info.get("viseme_source")}))


def e2e(seconds: float, size: int) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", str(seconds), str(size)], capture_output=True,
                       text=True, cwd=REPO, env=dict(os.environ, GLOG_minloglevel="2"))
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--child", nargs=2, type=float)
    a = ap.parse_args()
    if a.child:
        e2e_child(a.child[0], int(a.child[1]))
        return
    print(f"cpu cores: {os.cpu_count()}")
    for size in (256, 512):
        print(f"render only  {size}x{size}: {render_fps(size, a.frames):6.1f} frames/s")
    if a.skip_e2e:
        return
    rows = [e2e(s, 512) for s in (10.0, 60.0)]
    for r in rows:
        fps = r["frames"] / r["wall"]
        print(f"end to end 512, {r['seconds']:4.0f} s speech: wall {r['wall']:6.1f} s  RTF {r['wall'] / r['seconds']:.2f}"
              f"  ({fps:.1f} frames/s)  peak RSS {r['rss_mb']:.0f} MB  visemes: {r['viseme_source']}")
    print(f"peak RSS ratio 60 s / 10 s: {rows[1]['rss_mb'] / rows[0]['rss_mb']:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
