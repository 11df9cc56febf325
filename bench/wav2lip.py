#!/usr/bin/env python3
"""Throughput of the Wav2Lip generator forward pass (frames per second).

    python bench/wav2lip.py                                  # CPU, batch 16/64/128, ~2 min on 2 cores
    python bench/wav2lip.py --device cuda --fp16 --batch 16 64 128 256
    python bench/wav2lip.py --checkpoint ~/.cache/sd-talking-head/synthetic-ckpts/wav2lip.pth

Weights: --checkpoint, else the synthetic wav2lip.pth of the test cache ($SADTALKER_SYNTH_DIR or
~/.cache/sd-talking-head/synthetic-ckpts, built by shared/reference/synth_ckpt.py) when present, else
PyTorch's default initialisation (speed hardly depends on the values).
Inputs: random mel chunks [B,1,80,16] and faces [B,6,96,96]. Each batch size gets one warm-up
forward, then forwards are repeated until --seconds have passed (at least --min-reps). On CUDA,
TF32 is disabled unless --tf32. Prints one line per batch size: median ms per forward, ms/frame,
frames/s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    ap.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--seconds", type=float, default=12.0, help="timed seconds per batch size")
    ap.add_argument("--min-reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.checkpoint is None:
        import os
        synth = Path(os.environ.get("SADTALKER_SYNTH_DIR",
                                    Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"))
        if (synth / "wav2lip.pth").is_file():
            args.checkpoint = synth / "wav2lip.pth"

    import torch
    from sadtalker_ext.lipsync.wav2lip_net import Wav2Lip, load_wav2lip

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    if args.checkpoint is not None:
        model = load_wav2lip(args.checkpoint, device=device, dtype=dtype)
    else:
        model = Wav2Lip().eval().requires_grad_(False).to(device=device, dtype=dtype)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    weights = args.checkpoint.name if args.checkpoint is not None else "default init"
    print(f"wav2lip forward | {where} | {str(dtype).replace('torch.', '')}"
          f"{' channels_last' if args.channels_last else ''} | weights {weights} | torch {torch.__version__}")
    gen = torch.Generator().manual_seed(0)
    for b in args.batch:
        mel = torch.randn(b, 1, 80, 16, generator=gen).to(device=device, dtype=dtype)
        face = torch.rand(b, 6, 96, 96, generator=gen).to(device=device, dtype=dtype)
        face = face.contiguous(memory_format=fmt)
        times = []
        with torch.inference_mode():
            model(mel, face)  # warm-up (kernel selection, allocator)
            sync()
            start = time.perf_counter()
            while len(times) < args.min_reps or time.perf_counter() - start < args.seconds:
                t0 = time.perf_counter()
                model(mel, face)
                sync()
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"batch {b:4d}: {med * 1e3:9.1f} ms/forward  {med * 1e3 / b:7.2f} ms/frame  "
              f"{b / med:8.1f} frames/s  ({len(times)} reps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
