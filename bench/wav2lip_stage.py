#!/usr/bin/env python3
"""Throughput of the whole Wav2Lip-UHQ stage (frames per second): crops, mel windows, batched
network, paste-back with masks and colour matching.

    python bench/wav2lip_stage.py                              # CPU, batch 16/64/128, 256 px frames
    python bench/wav2lip_stage.py --frame-size 1080 --frames 128
    python bench/wav2lip_stage.py --device cuda --fp16 --batch 16 64 128 256
    python bench/wav2lip_stage.py --detect                     # landmarks found per frame (video input)

Weights: --checkpoint, else the synthetic wav2lip_gan.pth of the test cache ($SADTALKER_SYNTH_DIR or
~/.cache/sd-talking-head/synthetic-ckpts), else PyTorch's default initialisation (speed does not
depend on the values). Input: the astronaut photo (skimage) scaled to --frame-size (square), its
MediaPipe landmarks given with every chunk (as the lite engine does) unless --detect; audio: 16 kHz
noise of the needed length. Each batch size gets a warm-up run of one batch, then --frames frames in
chunks of --chunk-size. Prints per batch size: frames/s of the stage, ms/frame, the share spent in
the network forward, and the peak traced numpy memory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true", help="half-precision network (GPU)")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--frames", type=int, default=256, help="frames timed per batch size")
    ap.add_argument("--chunk-size", type=int, default=25)
    ap.add_argument("--frame-size", type=int, default=256, help="side of the square frames, px")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--detect", action="store_true", help="detect landmarks on every frame")
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from skimage import data

    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.engines.base import FrameChunk, RunContext
    from sadtalker_ext.face.landmarks import detect_faces
    from sadtalker_ext.lipsync.stage import Wav2LipStage
    from sadtalker_ext.lipsync.wav2lip_net import Wav2Lip, load_wav2lip
    from sadtalker_ext.options import GenerateOptions

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        synth = Path(os.environ.get("SADTALKER_SYNTH_DIR", Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"))
        if (synth / "wav2lip_gan.pth").is_file():
            args.checkpoint = synth / "wav2lip_gan.pth"
    dtype = torch.float16 if args.fp16 else torch.float32
    if args.checkpoint is not None:
        model = load_wav2lip(args.checkpoint, device=args.device, dtype=dtype)
    else:
        model = Wav2Lip().eval().requires_grad_(False).to(device=args.device, dtype=dtype)

    net_time = [0.0]
    forward = model.forward

    def timed_forward(mel, face):
        t0 = time.perf_counter()
        out = forward(mel, face)
        if out.is_cuda:
            torch.cuda.synchronize()
        net_time[0] += time.perf_counter() - t0
        return out
    model.forward = timed_forward

    s = args.frame_size
    frame = cv2.resize(data.astronaut(), (s, s), interpolation=cv2.INTER_AREA if s < 512 else cv2.INTER_CUBIC)
    lm = detect_faces(frame)[0].points[:, :2]
    rng = np.random.default_rng(0)

    def run(n, batch):
        clip = AudioClip((0.1 * rng.standard_normal(int(16000 * (n / 25 + 1)))).astype(np.float32), 16000)
        ctx = RunContext(audio=clip, options=GenerateOptions(), num_frames=n, fps=25)
        step = args.chunk_size

        def chunks():
            for st in range(0, n, step):
                k = min(step, n - st)
                yield FrameChunk(start=st, frames=np.repeat(frame[None], k, axis=0),
                                 landmarks=None if args.detect else np.repeat(lm[None], k, axis=0))
        stage = Wav2LipStage(model=model, batch_size=batch, device=args.device)
        done = 0
        for c in stage(chunks(), ctx):
            done += len(c)
        return done

    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"wav2lip stage | {where} | {str(dtype).replace('torch.', '')} | frames {s}x{s}, chunk {args.chunk_size}"
          f"{', landmarks detected' if args.detect else ''} | weights "
          f"{args.checkpoint.name if args.checkpoint else 'default init'} | torch {torch.__version__}")
    for b in args.batch:
        run(b, b)  # warm-up
        net_time[0] = 0.0
        tracemalloc.start()
        t0 = time.perf_counter()
        n = run(args.frames, b)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"batch {b:4d}: {n / dt:7.1f} frames/s  {dt * 1e3 / n:7.2f} ms/frame  network {100 * net_time[0] / dt:5.1f}%  "
              f"peak numpy {peak / 2**20:6.1f} MiB  ({n} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
