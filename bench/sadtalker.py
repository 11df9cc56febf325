#!/usr/bin/env python3
"""SadTalker face-renderer speed: the straightforward per-frame generator forward (as the official
``make_animation`` loop calls it) against :class:`FaceRenderer` (source encoded once, batched frames).

    python bench/sadtalker.py                         # CPU, 256 px, batch sizes 1 2 4 8
    python bench/sadtalker.py --batch 1 4 --threads 2 --repeats 2
    python bench/sadtalker.py --device cuda --fp16    # CUDA, float16 autocast for both paths
    python bench/sadtalker.py --bf16 --batch 1 2       # CPU bfloat16 autocast (AVX512-BF16 / AMX CPUs)
    python bench/sadtalker.py --no-baseline --batch 8 16
    python bench/sadtalker.py --load 2 --frames 12     # quiet vs 2 busy processes: baseline, fast, auto

Weights: --checkpoint, else the synthetic SadTalker_V0.0.2_256.safetensors of the test cache
($SADTALKER_SYNTH_DIR or ~/.cache/sd-talking-head/synthetic-ckpts, built with
shared/reference/synth_ckpt.py when missing), else PyTorch's default initialisation (the speed does
not depend on the values). Input: the astronaut photo (skimage) resized to --size, random source
keypoints and per-frame driving keypoints around them.

For every batch size B it times one call of B frames (the best of --repeats): the baseline is
``generator(source, kp_driving, kp_source)`` with the source repeated B times (B = 1 is the official
per-frame loop), the fast path is ``FaceRenderer.render`` after one ``prepare_source``. Frames are
moved to the CPU in both. Each path runs in its own fresh Python process (so neither inherits the
other's heap or caches), and the two alternate for --rounds rounds so that both sample the same
periods of a shared machine's load; the best time of all rounds is kept. Printed: frames/s, ms/frame,
process CPU seconds per frame (all threads), the speed-up at the same B and against the per-frame
baseline, and the figures of every round. ``--allocator tuned`` (default) runs both paths with the glibc allocator kept
from returning large blocks (see sadtalker_ext/render/facevid2vid/alloc.py), ``default`` leaves
glibc as it is. On CUDA, TF32 is left as torch's defaults set it. No assertions: figures only.

``--load N`` (issue 16) measures what a user meets on a shared machine: each path renders a run of
``--frames`` frames in batches of the largest ``--batch`` (after two warm-up frames), first on the
quiet machine, then with N busy background processes (each a 1-thread torch convolution loop, compute
and memory-bandwidth bound, started before and stopped after each child), and prints wall ms/frame
quiet and loaded for the per-frame baseline, the fast path and ``auto`` (the engine's renderer on the
CPU: :class:`~sadtalker_ext.render.facevid2vid.adaptive.AdaptiveRenderer`, whose probes of the
slower path are inside the timed run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SADTALKER_FILE = "SadTalker_V0.0.2_256.safetensors"
_RESULT = "RESULT "


def _synthetic_checkpoint() -> Path | None:
    """The cached synthetic SadTalker file, built with synth_ckpt.py when possible."""
    out = Path(os.environ.get("SADTALKER_SYNTH_DIR",
                              Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"))
    path = out / SADTALKER_FILE
    if path.is_file():
        return path
    ref = Path(os.environ.get("SADTALKER_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
    script = ref / "synth_ckpt.py"
    if script.is_file():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(script), str(out), "--files", SADTALKER_FILE],
                       check=True, stdout=subprocess.DEVNULL)
        if path.is_file():
            return path
    return None


def render_speed(args) -> dict:
    import numpy as np
    import torch
    from skimage import data, transform

    from sadtalker_ext.render.facevid2vid.alloc import cpu_allocator_tuned
    from sadtalker_ext.render.facevid2vid.checkpoint import load_generator
    from sadtalker_ext.render.facevid2vid.fast import FaceRenderer
    from sadtalker_ext.render.facevid2vid.generator import OcclusionAwareSPADEGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32
    if args.fp16 and device.type != "cuda":
        raise SystemExit("--fp16 needs --device cuda")

    ckpt = args.checkpoint or _synthetic_checkpoint()
    if ckpt is not None:
        gen = load_generator(ckpt, device=device)
        weights = str(ckpt)
    else:
        gen = OcclusionAwareSPADEGenerator().eval().requires_grad_(False).to(device)
        weights = "default initialisation"

    size = args.size
    img = data.astronaut()[0:240, 105:345].astype(np.float32) / 255.0
    img = transform.resize(img, (size, size, 3), anti_aliasing=True).astype(np.float32)
    source = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)
    rng = np.random.default_rng(0)
    kp_source = torch.from_numpy(rng.uniform(-0.6, 0.6, (1, 15, 3)).astype(np.float32)).to(device)
    max_b = max(args.batch)
    kp_all = (kp_source + torch.from_numpy(
        0.05 * rng.standard_normal((max_b, 15, 3)).astype(np.float32)).to(device))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def baseline(b):
        with torch.inference_mode(), autocast():
            out = gen(source.expand(b, -1, -1, -1), kp_all[:b], kp_source.expand(b, -1, -1))
            return out["prediction"].float().cpu()

    renderer = None
    if args.only == "auto":
        from sadtalker_ext.render.facevid2vid.adaptive import make_renderer
        renderer = make_renderer(gen, device, dtype)
        renderer.paths["fast"].tune_allocator = False  # the bench sets the allocator mode itself
    if args.only == "fast":  # the baseline process holds no prepared copies of the weights
        # the bench decides the allocator mode itself (same for both paths)
        renderer = FaceRenderer(gen, device=device, dtype=dtype, tune_allocator=False,
                                winograd=None if args.winograd == "auto" else args.winograd == "on",
                                parallel_frames=args.parallel_frames)

    def fast(b):
        return renderer.render(kp_all[:b])

    def timed(fn, b):
        """Best wall time of --repeats calls, and the process CPU time of that call."""
        best = (float("inf"), 0.0)
        for _ in range(max(1, args.repeats)):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn(b)
            sync()
            best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
        return best

    info = {"header": f"device {device} ({torch.get_num_threads()} CPU threads), dtype {dtype}, "
                      f"size {size}, allocator {args.allocator}, torch {torch.__version__}",
            "weights": weights}
    times = {}
    with cpu_allocator_tuned(args.allocator == "tuned" and device.type == "cpu"):
        if args.only in ("fast", "auto"):
            t0 = time.perf_counter()
            renderer.prepare_source(source, kp_source)
            sync()
            info["prepare_ms"] = 1000 * (time.perf_counter() - t0)
        fn = fast if args.only in ("fast", "auto") else baseline
        for _ in range(2):  # warm-up (kernel selection, lazily made weights, allocator)
            fn(1)
        if args.frames:  # a run of --frames frames in batches of the largest --batch
            b = max(args.batch)
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, args.frames, b):
                fn(min(b, args.frames - i))
            sync()
            times[args.frames] = (time.perf_counter() - t0, time.process_time() - c0)
            if args.only == "auto":
                info["auto"] = {"frames": renderer.frames, "estimates": renderer.estimates,
                                "winner": renderer.winner}
        else:
            for b in args.batch:
                times[b] = timed(fn, b)
    info["times"] = {str(b): list(t) for b, t in times.items()}
    return info


_LOAD = """
import torch, time, sys
torch.set_num_threads(1)
x = torch.randn(1, 64, 256, 256)
w = torch.randn(64, 64, 3, 3)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    x = torch.nn.functional.conv2d(x, w, padding=1).tanh_()
"""


@contextlib.contextmanager
def busy(n: int, seconds: float = 3600.0):
    """N background processes keeping a core and the memory bus busy until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD, str(seconds)]) for _ in range(n)]
    try:
        if procs:
            time.sleep(2.0)  # let them start
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def compare_load(args) -> list:
    """Each path (baseline, fast, auto) on a run of --frames frames, quiet then with --load busy processes;
    the three alternate for --rounds rounds (so they sample the same periods of a shared machine) and the
    median of the rounds is reported."""
    import statistics

    paths = ["baseline", "fast", "auto"]
    rows = []
    header = False
    for load in (0, args.load):
        for r in range(max(1, args.rounds)):
            for p in paths:
                with busy(load):
                    t0 = time.time()
                    res = _child(args, p)
                wall, cpu = res["times"][str(args.frames)]
                extra = ""
                if "auto" in res:
                    a = res["auto"]
                    extra = (f"  (frames fast/plain {a['frames']['fast']}/{a['frames']['plain']}, "
                             f"winner {a['winner']})")
                row = {"load": load, "round": r + 1, "path": p, "ms_per_frame": 1000 * wall / args.frames,
                       "cpu_s_per_frame": cpu / args.frames, **({"auto": res["auto"]} if "auto" in res else {})}
                rows.append(row)
                if not header:
                    header = True
                    print(res["header"])
                    print(f"weights: {res['weights']}; run of {args.frames} frames in batches of "
                          f"{max(args.batch)}; load = busy background processes (1-thread conv loops)")
                print(f"load {load} round {r + 1}: {p:8s} {row['ms_per_frame']:7.0f} ms/frame "
                      f"({row['cpu_s_per_frame']:5.2f} cpu-s/frame, child {time.time() - t0:.0f} s, "
                      f"load average {os.getloadavg()[0]:.2f}){extra}", flush=True)
    for load in (0, args.load):
        med = {p: statistics.median(r["ms_per_frame"] for r in rows if r["load"] == load and r["path"] == p)
               for p in paths}
        base = med["baseline"]
        print(f"load {load}, median of {max(1, args.rounds)} round(s): baseline {base:.0f}, fast {med['fast']:.0f}, "
              f"auto {med['auto']:.0f} ms/frame; fast x{base / med['fast']:.2f}, auto x{base / med['auto']:.2f} "
              f"vs the per-frame baseline (> 1 is faster)")
    return rows


def _child(args, path: str) -> dict:
    """Run one path in a fresh interpreter; returns its info dict."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", path,
           "--device", args.device, "--size", str(args.size), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--allocator", args.allocator,
           "--winograd", args.winograd, "--frames", str(args.frames), "--batch", *map(str, args.batch)]
    if args.fp16:
        cmd.append("--fp16")
    if args.bf16:
        cmd.append("--bf16")
    if args.parallel_frames:
        cmd.append("--parallel-frames")
    if args.checkpoint:
        cmd += ["--checkpoint", str(args.checkpoint)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT):])
    raise SystemExit(f"no result from the {path} child:\n{out}")


def compare(args) -> list:
    """Alternate fresh fast / baseline processes for --rounds rounds and print the best figures."""
    paths = ["fast"] + ([] if args.no_baseline else ["baseline"])
    best = {p: {} for p in paths}
    info = None
    for r in range(max(1, args.rounds)):
        for p in paths:
            res = _child(args, p)
            if info is None:
                info = res
                print(res["header"])
                print(f"weights: {res['weights']}")
            if "prepare_ms" in res and r == 0:
                print(f"prepare_source: {res['prepare_ms']:.0f} ms (once per video)")
            for b, (wall, cpu) in res["times"].items():
                b = int(b)
                print(f"  round {r + 1} {p:8s} batch {b:2d}: {1000 * wall / b:6.0f} ms/frame", flush=True)
                if b not in best[p] or wall < best[p][b][0]:
                    best[p][b] = (wall, cpu)
    results = []
    base1 = None
    if "baseline" in best and 1 in best["baseline"]:
        base1 = 1 / best["baseline"][1][0]
    print(f"best of {max(1, args.rounds)} round(s) x {max(1, args.repeats)} repeat(s):")
    for b in args.batch:
        row = {"batch": b}
        line = f"batch {b:2d}:"
        if "baseline" in best:
            tb, cb = best["baseline"][b]
            row["baseline_fps"], row["baseline_cpu_s"] = b / tb, cb / b
            line += (f" baseline {row['baseline_fps']:6.3f} fps ({1000 / row['baseline_fps']:6.0f}"
                     f" ms/frame, {row['baseline_cpu_s']:5.2f} cpu-s/frame) |")
        tf, cf = best["fast"][b]
        row["fast_fps"], row["fast_cpu_s"] = b / tf, cf / b
        line += (f" fast {row['fast_fps']:6.3f} fps ({1000 / row['fast_fps']:6.0f} ms/frame, "
                 f"{row['fast_cpu_s']:5.2f} cpu-s/frame)")
        if "baseline_fps" in row:
            line += f" | speed-up x{row['fast_fps'] / row['baseline_fps']:.2f} (same batch)"
        if base1:
            line += f", x{row['fast_fps'] / base1:.2f} vs per-frame baseline"
        results.append(row)
        print(line, flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA; --precision bf16)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--size", type=int, default=256, help="image side (256 or 512)")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per batch size (best kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--no-baseline", action="store_true", help="time the fast path only")
    ap.add_argument("--winograd", choices=["auto", "on", "off"], default="auto",
                    help="Winograd convs in the fast path (auto: on for CPU float32)")
    ap.add_argument("--parallel-frames", action="store_true",
                    help="fast path: split each batch over threads (helps on busy machines)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternations of the fast / baseline processes (best kept)")
    ap.add_argument("--load", type=int, default=None, metavar="N",
                    help="quiet vs N busy background processes: baseline, fast and auto on a run of --frames")
    ap.add_argument("--frames", type=int, default=0,
                    help="time a run of this many frames (batches of the largest --batch); default 8 with --load")
    ap.add_argument("--only", choices=["fast", "baseline", "auto"], default=None,
                    help=argparse.SUPPRESS)  # child mode: time one path, print a JSON result
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.load is not None and not args.frames:
        args.frames = 8
    if args.only:
        print(_RESULT + json.dumps(render_speed(args)), flush=True)
    elif args.load is not None:
        if max(args.batch) > 4 and args.batch == [1, 2, 4, 8]:
            args.batch = [4]
        compare_load(args)
    else:
        compare(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
