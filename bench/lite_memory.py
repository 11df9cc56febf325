"""Peak RSS of the lite engine end to end for short and long speech: does memory grow with the audio?

Each run is a fresh process that writes the speech as a 16 kHz WAV (CMU ARCTIC a0007 repeated),
then runs ``generate(portrait, wav_path, out.mp4)`` as the CLI does (the astronaut portrait,
default options but the engine, size and phoneme path) and reports its peak RSS and wall time.
Peak RSS counts the workers too (the pocketsphinx aligner runs in ``python -m
sadtalker_ext.audio.phonemes``): ``rss_mb`` is the peak of main process + its live descendants,
sampled from /proc every 50 ms by this parent (never less than the main process's ``ru_maxrss``,
``main_mb``); ``workers_mb`` is the sampled peak of the descendants alone. (The children's
``ru_maxrss`` is no measure: it includes the forked copy of the parent before ``exec``.) Prints one line per run and, per phoneme path
and size, the ratio long / short (target <= 1.15: issue 15's "memory does not grow with the
audio's length"), with the load average before and after each run.

    python bench/lite_memory.py [--sizes 256 512] [--minutes 1 30] [--phonemes acoustic auto]

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
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"minutes": minutes, "size": size, "wall": wall, "frames": res.num_frames,
                      "main_mb": main, "viseme_source": res.info.get("viseme_source")}))


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """Resident KB of ``pid`` with its live descendants, and of the descendants alone (Linux /proc)."""
    total, todo, own = 0, [pid], 0
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        if p == pid:
                            own = int(line.split()[1])
                        break
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total, total - own


def run(minutes: float, size: int, phonemes: str) -> dict:
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, __file__, "--child", str(minutes), str(size), phonemes],
                             stdout=out, stderr=err, text=True, cwd=REPO,
                             env=dict(os.environ, GLOG_minloglevel="2"))
        peak = workers = 0
        while p.poll() is None:
            tree, kids = _tree_rss_kb(p.pid)
            peak, workers = max(peak, tree), max(workers, kids)
            time.sleep(0.05)
        out.seek(0), err.seek(0)
        if p.returncode != 0:
            raise SystemExit(err.read()[-3000:])
        r = json.loads(out.read().strip().splitlines()[-1])
    # the sampled tree peak can miss a short spike: never report less than the main process's own peak
    r["rss_mb"] = max(peak / 1024.0, r["main_mb"])
    r["workers_mb"] = workers / 1024.0
    r["load"] = (load0, os.getloadavg()[0])
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--minutes", type=float, nargs=2, default=[1.0, 30.0], metavar=("SHORT", "LONG"))
    ap.add_argument("--phonemes", nargs="+", default=["acoustic", "auto"], choices=("auto", "acoustic", "pocketsphinx"))
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        child(float(a.child[0]), int(a.child[1]), a.child[2])
        return
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for phonemes in a.phonemes:
        for size in a.sizes:
            rows = []
            for minutes in a.minutes:
                r = run(minutes, size, phonemes)
                rows.append(r)
                print(f"lite {size}x{size}, phonemes {phonemes}, {minutes:4g} min speech: peak RSS "
                      f"{r['rss_mb']:6.0f} MB (main {r['main_mb']:.0f}, largest worker {r['workers_mb']:.0f}), "
                      f"{r['frames']} frames in {r['wall']:6.0f} s, visemes {r['viseme_source']}, "
                      f"load {r['load'][0]:.1f} -> {r['load'][1]:.1f}", flush=True)
            print(f"lite {size}x{size}, phonemes {phonemes}: peak RSS ratio {a.minutes[1]:g} min / "
                  f"{a.minutes[0]:g} min: {rows[1]['rss_mb'] / rows[0]['rss_mb']:.3f} (target <= 1.15)", flush=True)


if __name__ == "__main__":
    main()
