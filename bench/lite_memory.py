"""Peak RSS of the lite engine end to end for short and long speech: does memory grow with the audio?

For each run this parent writes the speech as a 16 kHz WAV (CMU ARCTIC a0007 repeated), then a fresh
process runs ``generate(portrait, wav_path, out.mp4)`` as the CLI does (the astronaut portrait,
default options but the engine, size and phoneme path) and reports its peak RSS and wall time.
Peak RSS counts the workers too (the pocketsphinx aligner runs in ``python -m
sadtalker_ext.audio.phonemes``): ``rss_mb`` is the peak of main process + its live descendants,
sampled from /proc every 50 ms by this parent (never less than the main process's ``ru_maxrss``,
``main_mb``; the descendants are the children of every thread, since the pocketsphinx worker is
started from the engine's alignment thread); ``workers_mb`` is the sampled peak of the descendants alone. (The children's
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


def write_speech(path: Path, minutes: float) -> None:
    """``minutes`` of CMU ARCTIC a0007 repeated, 16 kHz 16-bit WAV, written block by block (by the parent:
    the measured process never holds the track it is given)."""
    import soundfile as sf

    from sadtalker_ext.audio.decode import load_audio
    from sadtalker_ext.cli.main import demo_inputs

    base = load_audio(demo_inputs()[1])
    n = int(minutes * 60 * base.sample_rate)
    with sf.SoundFile(str(path), "w", base.sample_rate, 1, subtype="PCM_16") as f:
        for a in range(0, n, len(base.samples)):
            f.write(base.samples[:min(len(base.samples), n - a)])


def child(speech: str, size: int, phonemes: str) -> None:
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate

    img, _ = demo_inputs()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = generate(img, speech, Path(d) / "out.mp4",
                       GenerateOptions(engine="lite", size=size, phonemes=phonemes))
        wall = time.perf_counter() - t
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"size": size, "wall": wall, "frames": res.num_frames,
                      "main_mb": main, "viseme_source": res.info.get("viseme_source")}))


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (Linux /proc): the children of every thread of each process, not only
    of its main thread (the lite engine starts the pocketsphinx worker from its alignment thread, which
    ``/proc/PID/task/PID/children`` does not list). A child that has not called ``exec`` yet (same command
    line as its parent: a fork or vfork shares the parent's pages, which its VmRSS counts again) is
    left out."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            for k in kids:
                todo.append(k)
                if _cmdline(k) != _cmdline(p):
                    found.append(k)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """Resident KB of ``pid`` with its live descendants, and of the descendants alone (Linux /proc)."""
    kids = sum(_rss_kb(k) for k in descendants(pid))
    return _rss_kb(pid) + kids, kids


def run(minutes: float, size: int, phonemes: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        speech = Path(d) / "speech.wav"
        write_speech(speech, minutes)
        r = _measure(speech, size, phonemes)
    r["minutes"] = minutes
    return r


def _measure(speech: Path, size: int, phonemes: str) -> dict:
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, __file__, "--child", str(speech), str(size), phonemes],
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
        child(a.child[0], int(a.child[1]), a.child[2])
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
