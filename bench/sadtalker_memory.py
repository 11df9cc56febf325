"""Peak memory of the SadTalker engine for 10 s vs 60 s of speech (target: RSS(60 s) <= 1.25 x RSS(10 s)).

Each run is a fresh process (``ru_maxrss`` of that process, read at its end) doing the whole
pipeline: the astronaut photo + CMU ARCTIC a0007 repeated to the wanted length -> preprocessing,
3DMM coefficients, motion for *every* frame of the audio -> mapping net + keypoints + renderer in
batches -> H.264/AAC MP4. Two modes, because the real renderer costs seconds per frame on a CPU:

* ``stub`` (default, all frames): the face-vid2vid generator is replaced by a stand-in that returns
  the source picture (its 400 MB of weights are not loaded either); everything else is the real
  engine, so all 250 / 1,500 frames stream through mapping, keypoints, resizing, chunking and the
  encoder. This measures how memory grows with the number of frames.
* ``real``: the real networks; motion for the whole audio, but only the first ``--frames-limit``
  frames are rendered and written. This measures the real working set (weights, renderer buffers),
  which does not depend on the audio length once rendering streams.

Weights: ``--checkpoints DIR`` (default: the synthetic files of the test suite in
~/.cache/sd-talking-head/synthetic-ckpts, built with shared/reference/synth_ckpt.py). Runtime on 2
CPU cores: about 1-2 minutes per stub run and 2-3 per real run.

    python bench/sadtalker_memory.py [--mode stub|real|both] [--seconds 10 60] [--frames-limit 8]
                                     [--size 256] [--batch-size 2] [--checkpoints DIR]
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
DEFAULT_CKPTS = Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"


def _install_stub() -> None:
    """Replace the generator + renderer by a stand-in returning the source picture."""
    import torch

    from sadtalker_ext.engines import sadtalker as st
    from sadtalker_ext.render.facevid2vid import checkpoint

    class StubRenderer:
        def prepare_source(self, image, kp_source):
            self.image = image.float().cpu()

        def render(self, kp_driving):
            b = kp_driving.shape[0]
            # depends on the keypoints so the mapping/keypoint work cannot be skipped
            shade = torch.sigmoid(kp_driving.float().cpu().mean(dim=(1, 2))).view(b, 1, 1, 1)
            return (self.image * (0.5 + 0.5 * shade)).contiguous()

    checkpoint.load_generator = lambda *a, **k: None
    st._make_renderer = lambda generator, device, dtype: StubRenderer()


def child(args) -> None:
    import numpy as np
    import torch

    from sadtalker_ext.audio.decode import AudioClip, load_audio
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.engines.sadtalker import SadTalkerEngine, SadTalkerMotion
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate

    torch.set_num_threads(args.threads)
    if args.mode == "stub":
        _install_stub()
    img, wav = demo_inputs()
    base = load_audio(wav)
    seconds = args.seconds[0]
    n = int(seconds * base.sample_rate)
    reps = -(-n // len(base.samples))
    clip = AudioClip(samples=np.tile(base.samples, reps)[:n].copy(), sample_rate=base.sample_rate)
    limit = args.frames_limit if args.mode == "real" else None

    class Engine(SadTalkerEngine):
        motion_frames = 0

        def frames(self, source, motion, ctx):
            Engine.motion_frames = len(motion)
            if limit is not None:
                motion = SadTalkerMotion(coeffs=motion.coeffs[:limit], info=motion.info)
            return super().frames(source, motion, ctx)

    opts = GenerateOptions(engine="sadtalker", size=args.size, checkpoints=str(args.checkpoints),
                           batch_size=args.batch_size, device="cpu").validate()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = generate(img, clip, Path(tmp) / "out.mp4", opts,
                       engine=Engine(checkpoints=str(args.checkpoints)))
        wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        peak_kb //= 1024
    print(json.dumps({"seconds": seconds, "mode": args.mode, "peak_rss_mb": peak_kb / 1024,
                      "frames_written": res.num_frames, "motion_frames": Engine.motion_frames,
                      "wall_s": wall}))


def run_child(args, mode: str, seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--seconds", str(seconds),
           "--frames-limit", str(args.frames_limit), "--size", str(args.size),
           "--batch-size", str(args.batch_size), "--checkpoints", str(args.checkpoints),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("stub", "real", "both"), default="stub")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--frames-limit", type=int, default=8, help="frames rendered in 'real' mode")
    ap.add_argument("--size", type=int, default=256, choices=(256, 512))
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoints", type=Path, default=DEFAULT_CKPTS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not (args.checkpoints / "SadTalker_V0.0.2_256.safetensors").is_file():
        print(f"no SadTalker checkpoints in {args.checkpoints}; build synthetic ones with "
              f"python ../shared/reference/synth_ckpt.py {args.checkpoints}", file=sys.stderr)
        return 2
    modes = ("stub", "real") if args.mode == "both" else (args.mode,)
    print(f"SadTalker engine peak RSS, size {args.size}, batch {args.batch_size}, "
          f"{args.threads} threads, CPU, weights from {args.checkpoints}")
    for mode in modes:
        what = ("all frames; generator replaced by a stand-in (not loaded)" if mode == "stub" else
                f"real networks; motion for all frames, only the first {args.frames_limit} rendered")
        print(f"\nmode {mode}: {what}")
        rows = []
        for s in args.seconds:
            r = run_child(args, mode, s)
            rows.append(r)
            print(f"  {s:5.0f} s audio: {r['motion_frames']:5d} motion frames, "
                  f"{r['frames_written']:5d} frames rendered+encoded, peak RSS "
                  f"{r['peak_rss_mb']:7.1f} MB, {r['wall_s']:6.1f} s", flush=True)
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
            verdict = "meets" if ratio <= 1.25 else "misses"
            print(f"  RSS({args.seconds[-1]:g} s) / RSS({args.seconds[0]:g} s) = {ratio:.3f} "
                  f"({verdict} the <= 1.25 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
