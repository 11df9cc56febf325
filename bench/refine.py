"""img2img refinement: SD calls, wall time per video-second and flicker, "every" vs "keyframes" mode.

Frames: the lite engine's rendering of the bundled portrait speaking the first ``--seconds`` of CMU
ARCTIC a0007 (landmarks included). Backend: the tiny randomly initialised SD pipeline of
:mod:`sadtalker_ext.refine.testing` (offline; its "refinement" is noise, so the figures measure the
machinery - call counts, overheads, temporal stability - not image quality), or a real model with
``--sd-checkpoint``.

Runs: every frame with the same seed/noise (default), every frame with per-frame seeds, and keyframes
only (one keyframe every ``--key-every`` seconds, optical flow in between). For each: backend calls,
frames sent to SD, wall time, process CPU time (all threads; steadier than wall time on a shared
machine) and time inside the SD backend per video-second, and the **flicker** figure - the mean
absolute difference (0..255) between consecutive face crops (each frame's landmark box resized to
128x128), for the refined video and for the unrefined one.

    python bench/refine.py [--seconds 2] [--key-every 1.0] [--steps 4] [--strength 0.5] [--batch 4]
                           [--device cpu] [--sd-checkpoint PATH] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def lite_frames(seconds: float):
    """(frames uint8 [n, H, W, 3], landmarks float32 [n, 478, 2]) from the lite engine."""
    import numpy as np

    from sadtalker_ext.audio.decode import AudioClip, load_audio
    from sadtalker_ext.cli.main import demo_inputs
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import iter_frames

    img, wav = demo_inputs()
    clip = load_audio(wav)
    n = int(round(seconds * clip.sample_rate))
    clip = AudioClip(clip.samples[:n], clip.sample_rate)
    frames, lms = [], []
    for chunk in iter_frames(img, clip, GenerateOptions(engine="lite", size=512, phonemes="acoustic")):
        frames.append(chunk.frames)
        lms.append(chunk.landmarks)
    return np.concatenate(frames), np.concatenate(lms)


def flicker(frames, lms, size: int = 128) -> float:
    """Mean |crop_t - crop_(t-1)| over consecutive frames; crop = landmark box resized to size x size."""
    import cv2
    import numpy as np
    crops = []
    for f, lm in zip(frames, lms):
        x0, y0 = np.floor(lm.min(axis=0)).astype(int)
        x1, y1 = np.ceil(lm.max(axis=0)).astype(int)
        x0, y0 = max(0, x0), max(0, y0)
        crops.append(cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32))
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(crops[1:], crops[:-1])]))


class Counting:
    def __init__(self, inner):
        self.inner, self.calls, self.frames, self.seconds = inner, 0, 0, 0.0
        self.name = getattr(inner, "name", "backend")

    def native_size(self):
        return self.inner.native_size()

    def __call__(self, req):
        t = time.perf_counter()
        out = self.inner(req)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.frames += len(req.images)
        return out


def run_mode(backend, frames, lms, schedule, fps: int = 25) -> dict:
    import numpy as np

    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.engines.base import FrameChunk, RunContext
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.refine.stage import RefineStage

    n = len(frames)
    counting = Counting(backend)
    stage = RefineStage(schedule, counting)
    ctx = RunContext(audio=AudioClip(np.zeros(640 * n, np.float32), 16000), options=GenerateOptions(),
                     num_frames=n, fps=fps)
    chunks = (FrameChunk(s, frames[s:s + 25], lms[s:s + 25]) for s in range(0, n, 25))
    t, cpu = time.perf_counter(), time.process_time()
    out = np.concatenate([c.frames for c in stage(chunks, ctx)])
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    secs = n / fps
    return {"sd_calls": counting.calls, "sd_frames": counting.frames, "wall_s": wall,
            "wall_per_video_s": wall / secs, "cpu_per_video_s": cpu / secs, "sd_s_per_video_s": counting.seconds / secs,
            "other_s_per_video_s": (wall - counting.seconds) / secs,
            "flicker": flicker(out, lms), "max_buffered": stage.stats.max_buffered}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--key-every", type=float, default=1.0, help="seconds between keyframes (keyframes mode)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sd-checkpoint", default=None, help="a real SD model instead of the tiny random one")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import torch
    if args.device == "cpu":
        torch.set_num_threads(2)
    from sadtalker_ext.refine.backends import DiffusersBackend
    from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule
    from sadtalker_ext.refine.testing import build_tiny_pipeline

    t = time.perf_counter()
    frames, lms = lite_frames(args.seconds)
    print(f"frames: {len(frames)} x {frames.shape[2]}x{frames.shape[1]} (lite engine, {time.perf_counter() - t:.1f} s)")
    if args.sd_checkpoint:
        backend = DiffusersBackend(args.sd_checkpoint, device=args.device).load()
    else:
        backend = DiffusersBackend(pipeline=build_tiny_pipeline(), device=args.device)
    print(f"backend: {args.sd_checkpoint or 'tiny random SD pipeline'} on {args.device}, native "
          f"{backend.native_size()} px, {args.steps} steps, strength {args.strength}")
    n = len(frames)
    base = dict(denoising_strength=args.strength, steps=args.steps, cfg_scale=5.0, seed=1234, prompt="a face")
    keys = [Keyframe(frame=int(round(k * 25 * args.key_every)), **(base if k == 0 else {}))
            for k in range(int((n - 1) // (25 * args.key_every)) + 1)]
    if keys[-1].frame != n - 1:
        keys.append(Keyframe(frame=n - 1))
    every = [Keyframe(frame=0, **base)]
    runs = {
        "every (same noise)": KeyframeSchedule(every, mode="every", batch_size=args.batch),
        "every (per-frame seed)": KeyframeSchedule(every, mode="every", batch_size=args.batch, same_noise=False),
        f"keyframes (every {args.key_every:g} s)": KeyframeSchedule(keys, mode="keyframes"),
    }
    run_mode(backend, frames[:2], lms[:2], KeyframeSchedule(every, mode="every"))   # warm-up
    results = {"unrefined_flicker": flicker(frames, lms), "frames": n, "seconds": n / 25, "runs": {}}
    print(f"\nunrefined flicker (mean |face crop t - t-1|, 0..255): {results['unrefined_flicker']:.2f}\n")
    print(f"{'mode':28s} {'SD calls':>8s} {'SD frames':>9s} {'wall/video-s':>12s} {'CPU/video-s':>11s} "
          f"{'SD/video-s':>10s} {'rest/video-s':>12s} {'flicker':>8s} {'x unrefined':>11s}")
    for name, sched in runs.items():
        r = run_mode(backend, frames, lms, sched.validate())
        results["runs"][name] = r
        print(f"{name:28s} {r['sd_calls']:8d} {r['sd_frames']:9d} {r['wall_per_video_s']:11.2f}s "
              f"{r['cpu_per_video_s']:10.2f}s {r['sd_s_per_video_s']:9.2f}s {r['other_s_per_video_s']:11.2f}s {r['flicker']:8.2f} "
              f"{r['flicker'] / results['unrefined_flicker']:10.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
