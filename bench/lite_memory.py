"""Peak RSS of the lite engine end to end for short and long speech: does memory grow with the audio?

Each run is a fresh process that writes the speech as a 16 kHz WAV (CMU ARCTIC a0007 repeated),
then runs ``generate(portrait, wav_path, out.mp4)`` as the CLI does (the astronaut portrait,
default options but the engine and size) and reports its peak RSS (``ru_maxrss``, which includes
every library loaded) and wall time. Prints one line per run and, per size, the ratio
long / short (target <= 1.15: the README's "memory does not grow with the audio's length").

    python bench/lite_memory.py [--sizes 256 512] [--minutes 1 30] [--phonemes auto|acoustic]

A 30-minute run takes a long while on two cores (pocketsphinx aligns all of it, then 45,000
frames are rendered and encoded); run it under ``nice``.
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


def child(minutes: float, size: int, phonemes: str) -> None:
    import numpy as np
    import soundfile as sf

    from sadtalker_ext.audio.decode import load_audio
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate

    img, wav = demo_inputs()
    with tempfile.TemporaryDirectory() as d:
        base = load_audio(wav)
        n = int(minutes * 60 * base.sample_rate)
        x = np.tile(base.samples, int(np.ceil(n / len(base.samples))))[:n]
        speech = Path(d) / "speech.wav"
        sf.write(str(speech), x, base.sample_rate, subtype="PCM_16")
        del x, base
        t = time.perf_counter()
        res = generate(img, speech, Path(d) / "out.mp4",
                       GenerateOptions(engine="lite", size=size, phonemes=phonemes))
        wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"minutes": minutes, "size": size, "wall": wall, "frames": res.num_frames,
                      "rss_mb": rss, "viseme_source": res.info.get("viseme_source")}))


def run(minutes: float, size: int, phonemes: str) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", str(minutes), str(size), phonemes],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ, GLOG_minloglevel="2"))
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--minutes", type=float, nargs=2, default=[1.0, 30.0], metavar=("SHORT", "LONG"))
    ap.add_argument("--phonemes", default="auto", choices=("auto", "acoustic", "pocketsphinx"))
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        child(float(a.child[0]), int(a.child[1]), a.child[2])
        return
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, phonemes {a.phonemes}", flush=True)
    for size in a.sizes:
        rows = []
        for minutes in a.minutes:
            r = run(minutes, size, a.phonemes)
            rows.append(r)
            print(f"lite {size}x{size}, {minutes:4g} min speech: peak RSS {r['rss_mb']:6.0f} MB, "
                  f"{r['frames']} frames in {r['wall']:6.0f} s, visemes {r['viseme_source']}", flush=True)
        print(f"lite {size}x{size}: peak RSS ratio {a.minutes[1]:g} min / {a.minutes[0]:g} min: "
              f"{rows[1]['rss_mb'] / rows[0]['rss_mb']:.3f} (target <= 1.15)", flush=True)


if __name__ == "__main__":
    main()
