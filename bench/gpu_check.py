#!/usr/bin/env python3
"""One GPU check (issue 16): goldens on the device in fp32 and fp16, the renderer benchmark, and an end-to-end
SadTalker + Wav2Lip run on 60 s of speech, with frames/s, peak GPU memory and the golden errors.

    bench/gpu_check.sh                              # the whole check on CUDA (<= 8 min on an H200), logged
    python bench/gpu_check.py --device cuda         # the same without the wrapper
    python bench/gpu_check.py --device cpu --quick  # CPU smoke test: tiny sizes, every path but the CUDA calls

Steps, each timed and printed as one ``[step] ...`` line of figures (plus detail lines):

1. ``env``: torch version, device name, CUDA version, free device memory.
2. ``goldens``: every official-network golden of ``$SADTALKER_REFERENCE_DIR/goldens`` that the test suite
   reproduces on the CPU (Wav2Lip, ReconNet, ExpNet / Audio2Coeff, PoseVAE, MappingNet 70 / 73, KPDetector,
   the SPADE generator and the fast renderer ``FaceRenderer``), loaded from the synthetic official checkpoints
   (shared/reference/synth_ckpt.py, the test cache ``$SADTALKER_SYNTH_DIR``) and fed the golden inputs on the
   device, in fp32 and under fp16 autocast: max |ours - golden| and the suite's tolerance
   ``1e-4 + 1e-5 * max|golden|`` (tests/conftest.golden_tol). fp32 must be within it; fp16 is reported only
   (flagged when not finite). On the CPU fp16 is skipped.
3. ``bench``: ``bench/sadtalker.py --device cuda --fp16 --batch 1 4 16`` in a subprocess, its summary lines.
4. ``e2e``: ``sadtalker_ext.pipeline.generate`` (engine sadtalker, lipsync wav2lip, precision fp16 on CUDA) on
   the astronaut photo and 60 s of speech (CMU ARCTIC a0007 repeated with 0.5 s pauses): wall time, frames/s,
   peak device memory; the video is checked with ``sadtalker_ext.io.probe`` (frame count, duration).
5. ``summary``: one line per step, ok / FAILED; exit status 1 when an fp32 golden is out of tolerance or a step
   crashed.

Peak memory: ``torch.cuda.max_memory_allocated`` per step on CUDA; on the CPU the process's peak RSS so far
(``ru_maxrss``, which never goes down). ``--quick`` (for the CPU smoke test, tests/test_gpu_check.py): batch
sizes 1 2, one repeat and round, a 0.6 s clip.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REF = Path(os.environ.get("SADTALKER_REFERENCE_DIR") or next(
    (p for p in (REPO.parent / "shared" / "reference", REPO / "shared" / "reference") if (p / "goldens").is_dir()),
    REPO.parent / "shared" / "reference"))
SYNTH = Path(os.environ.get("SADTALKER_SYNTH_DIR", Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"))
SADTALKER_FILE = "SadTalker_V0.0.2_256.safetensors"
PAUSE_S = 0.5


def golden_tol(golden) -> float:
    """The suite's acceptance bound (tests/conftest.golden_tol, shared/reference/README.md)."""
    import numpy as np
    return 1e-4 + 1e-5 * float(np.max(np.abs(golden)))


class Device:
    """The device under test and its CUDA-only calls (no-ops, or CPU stand-ins, elsewhere)."""

    def __init__(self, name: str):
        import torch
        self.torch = torch
        self.dev = torch.device(name)
        self.cuda = self.dev.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device")

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.dev)

    def peak(self) -> str:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)
            return f"peak GPU mem {self.torch.cuda.max_memory_allocated(self.dev) / 2**30:.2f} GiB"
        return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (CPU)"

    def precisions(self):
        """(label, autocast dtype or None); fp16 only on CUDA."""
        return [("fp32", None)] + ([("fp16", self.torch.float16)] if self.cuda else [])

    def autocast(self, dtype):
        if dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.dev.type, dtype=dtype)


def line(step: str, text: str):
    print(f"[{step}] {text}", flush=True)


# ------------------------------------------------------------------------------------------------
# 1. environment
# ------------------------------------------------------------------------------------------------

def step_env(d: Device, args) -> dict:
    torch = d.torch
    if d.cuda:
        free, total = torch.cuda.mem_get_info(d.dev)
        props = torch.cuda.get_device_properties(d.dev)
        what = (f"device {torch.cuda.get_device_name(d.dev)} (sm {props.major}{props.minor}), "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                f"free {free / 2**30:.1f} / {total / 2**30:.1f} GiB")
    else:
        with open("/proc/meminfo") as f:
            mem = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in f)}
        what = (f"device cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), CUDA none "
                f"(torch built with {torch.version.cuda}), free {mem['MemAvailable'] / 2**20:.1f} / "
                f"{mem['MemTotal'] / 2**20:.1f} GiB RAM")
    line("env", f"torch {torch.__version__}, python {sys.version.split()[0]}, {what}, "
                f"load average {os.getloadavg()[0]:.2f}")
    return {}


# ------------------------------------------------------------------------------------------------
# 2. goldens
# ------------------------------------------------------------------------------------------------

def _synthetic_checkpoints() -> Path:
    """The test suite's synthetic official checkpoints (tests/conftest.synthetic_checkpoints builds the same)."""
    SYNTH.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(REF / "synth_ckpt.py"), str(SYNTH)], check=True, stdout=subprocess.DEVNULL)
    return SYNTH


def _npz(name):
    import numpy as np
    with np.load(REF / "goldens" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _golden_cases(d: Device, ckpts: Path):
    """(name, run) pairs: run(autocast dtype or None) -> {output: (ours ndarray, golden ndarray)}.
    Each loader and golden input as in the CPU tests (tests/test_*golden*.py)."""
    torch, dev = d.torch, d.dev
    from sadtalker_ext.models.loading import SafetensorsCheckpoint
    st_file = SafetensorsCheckpoint(ckpts / SADTALKER_FILE)

    def t(a):
        return torch.from_numpy(a).to(dev)

    def cpu(x):
        return x.detach().float().cpu().numpy()

    def wav2lip(dtype):
        from sadtalker_ext.lipsync.wav2lip_net import load_wav2lip
        g = _npz("wav2lip")
        net = load_wav2lip(ckpts / "wav2lip.pth", device=dev)
        with torch.no_grad(), d.autocast(dtype):
            out = net.forward_with_embedding(t(g["mel"]), t(g["face"]))
        return {"prediction": (cpu(out.prediction), g["prediction"]),
                "audio_embedding": (cpu(out.audio_embedding), g["audio_embedding"])}

    def recon_net(dtype):
        from sadtalker_ext.face.recon_net import load_recon_net
        g = _npz("recon_net")
        net = load_recon_net(st_file).to(dev)
        with torch.no_grad(), d.autocast(dtype):
            out = net(t(g["image"]))
        return {"coeffs_257": (cpu(out), g["coeffs_257"])}

    a2c = {}

    def audio2coeff_net():
        from sadtalker_ext.motion.sadtalker import load_audio2coeff
        if "net" not in a2c:
            net = load_audio2coeff(st_file)
            net.exp_net.to(dev)
            net.pose_net.to(dev)
            a2c["net"] = net
        return a2c["net"]

    def audio2coeff(dtype):
        from sadtalker_ext.motion.sadtalker import recorded_noise
        e, g = _npz("audio2exp"), _npz("audio2coeff")
        with d.autocast(dtype):
            out = audio2coeff_net().generate(e["indiv_mels"][0], e["ref"][0], e["ratio_gt"][0], int(g["class_id"][0]),
                                      noise_fn=recorded_noise(t(g["z"])))
        return {"coeff_3dmm": (out, g["coeff_3dmm"]), "exp_coeff_pred": (out[None, :, :64], e["exp_coeff_pred"])}

    def audio2pose(dtype):
        from sadtalker_ext.motion.sadtalker import predict_pose, recorded_noise
        g = _npz("audio2pose")
        with torch.no_grad(), d.autocast(dtype):
            motion, pose = predict_pose(audio2coeff_net().pose_net, t(g["indiv_mels"]), t(g["ref"][:, 0, 64:70]),
                                        t(g["class_id"]), noise_fn=recorded_noise(t(g["z"])),
                                        num_frames=int(g["num_frames"]))
        return {"pose_motion_pred": (cpu(motion), g["pose_motion_pred"]), "pose_pred": (cpu(pose), g["pose_pred"])}

    def mapping(dtype):
        from sadtalker_ext.motion.sadtalker import load_mapping
        g = _npz("mapping")
        res = {}
        for variant, filename in (("crop70", "mapping_00229-model.pth.tar"), ("full73", "mapping_00109-model.pth.tar")):
            net = load_mapping(ckpts / filename).to(dev)
            for role, key in (("source", "source_semantics"), ("driving", "target_semantics")):
                with torch.no_grad(), d.autocast(dtype):
                    out = net(t(g[f"{variant}_{key}"]))
                for head in ("yaw", "pitch", "roll", "t", "exp"):
                    name = f"{variant}_{role}_{head}"
                    res[name] = (cpu(out[head]), g[name])
        return res

    def kp_detector(dtype):
        from sadtalker_ext.render.facevid2vid.checkpoint import load_kp_detector
        g = _npz("keypoints")
        net = load_kp_detector(st_file, device=dev)
        with torch.no_grad(), d.autocast(dtype):
            kp = net(t(g["source_image"]))
        return {"kp_canonical": (cpu(kp), g["kp_canonical"])}

    gen = {}

    def generator(dtype):
        from sadtalker_ext.render.facevid2vid.checkpoint import load_generator
        g = _npz("generator")
        if "net" not in gen:
            gen["net"] = load_generator(st_file, device=dev)
        with torch.no_grad(), d.autocast(dtype):
            out = gen["net"](t(g["source_image"]), t(g["kp_driving"]), t(g["kp_source"]))
        return {k: (cpu(out[k]), g[k]) for k in ("prediction", "occlusion_map", "mask", "deformation")}

    def face_renderer(dtype):
        # the engine's fast renderer on this device (on CUDA, fp16 is its --precision fp16, not autocast)
        from sadtalker_ext.render.facevid2vid.checkpoint import load_generator
        from sadtalker_ext.render.facevid2vid.fast import FaceRenderer
        g = _npz("generator")
        fr = FaceRenderer(load_generator(st_file, device=dev), device=dev, dtype=dtype or torch.float32)
        try:
            fr.prepare_source(t(g["source_image"]), t(g["kp_source"]))
            pred = fr.render(t(g["kp_driving"]))
        finally:
            fr.close()
        return {"prediction": (cpu(pred), g["prediction"])}

    return [("wav2lip", wav2lip), ("recon_net", recon_net), ("audio2coeff", audio2coeff),
            ("audio2pose", audio2pose), ("mapping", mapping), ("kp_detector", kp_detector),
            ("generator", generator), ("face_renderer", face_renderer)]


def step_goldens(d: Device, args) -> dict:
    import numpy as np
    ckpts = _synthetic_checkpoints()
    failed, flagged, n = [], [], 0
    for name, run in _golden_cases(d, ckpts):
        for label, dtype in d.precisions():
            d.reset_peak()
            t0 = time.perf_counter()
            try:
                outs = run(dtype)
                d.sync()
            except Exception as exc:  # noqa: BLE001 - one network's crash must not hide the others
                line("golden", f"{name} {label}: CRASHED {type(exc).__name__}: {exc}")
                traceback.print_exc()
                failed.append(f"{name} {label} (crashed)")
                continue
            secs = time.perf_counter() - t0
            parts, worst = [], 0.0
            for out, (ours, want) in outs.items():
                ours = np.asarray(ours, dtype=np.float64)
                tol = golden_tol(want)
                if ours.shape != want.shape:
                    err, finite = float("inf"), False
                else:
                    finite = bool(np.all(np.isfinite(ours)))
                    err = float(np.max(np.abs(ours - want))) if finite else float("nan")
                ok = finite and err <= tol
                worst = max(worst, err / tol if finite else float("inf"))
                n += 1
                mark = "" if ok else (" NOT FINITE" if not finite else " OVER")
                parts.append(f"{out} {err:.2e} (tol {tol:.2e}){mark}")
                if label == "fp32" and not ok:
                    failed.append(f"{name}.{out} fp32")
                elif not finite:
                    flagged.append(f"{name}.{out} {label} non-finite")
            verdict = ("ok" if worst <= 1 else "OVER TOLERANCE") if label == "fp32" else "reported"
            line("golden", f"{name} {label}: {verdict}, worst err/tol {worst:.3g}, {secs:.2f} s, {d.peak()}; "
                           + "; ".join(parts))
        if d.cuda:
            d.torch.cuda.empty_cache()
    skipped = "" if d.cuda else ", fp16 skipped (CPU)"
    line("goldens", f"{n} outputs compared, fp32 failures {len(failed)}, fp16 non-finite {len(flagged)}{skipped}")
    if failed:
        raise AssertionError("fp32 goldens out of tolerance or crashed: " + ", ".join(failed))
    return {"flagged": flagged}


# ------------------------------------------------------------------------------------------------
# 3. renderer benchmark (bench/sadtalker.py)
# ------------------------------------------------------------------------------------------------

def step_bench(d: Device, args) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "sadtalker.py"), "--device", str(d.dev)]
    cmd += ["--fp16"] if d.cuda else []
    cmd += ["--batch", "1", "2", "--repeats", "1"] if args.quick else ["--batch", "1", "4", "16", "--repeats", "3"]
    cmd += ["--rounds", "1"]
    line("bench", "running " + " ".join(cmd[1:]))
    limit = args.bench_timeout or (240.0 if d.cuda else 1200.0)
    # its own process group, stopped as a whole (with the per-path children it starts) on a timeout or when this
    # script is stopped (SIGTERM from gpu_check.sh's time limit raises SystemExit, see main)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"bench/sadtalker.py ran past {limit:.0f} s (stopped)") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    rows = [ln for ln in stdout.splitlines() if ln.startswith(("batch ", "device ", "prepare_source"))]
    for ln in rows:
        line("bench", ln.strip())
    if proc.returncode != 0 or not any(ln.startswith("batch ") for ln in rows):
        sys.stdout.write(stdout[-4000:])
        sys.stdout.write(stderr[-4000:])
        raise RuntimeError(f"bench/sadtalker.py exited {proc.returncode}")
    return {}


# ------------------------------------------------------------------------------------------------
# 4. end to end
# ------------------------------------------------------------------------------------------------

def speech(seconds: float):
    """CMU ARCTIC a0007 (4.0 s) repeated with 0.5 s pauses, cut to ``seconds``: an AudioClip at 16 kHz."""
    import numpy as np
    from sadtalker_ext.audio.decode import AudioClip, load_audio
    a = load_audio(REF / "audio" / "arctic_a0007.wav")
    piece = np.concatenate([a.samples, np.zeros(int(PAUSE_S * a.sample_rate), np.float32)])
    n = int(round(seconds * a.sample_rate))
    samples = np.tile(piece, n // len(piece) + 1)[:n].astype(np.float32)
    return AudioClip(samples, a.sample_rate)


def step_e2e(d: Device, args) -> dict:
    from skimage import data

    from sadtalker_ext.io.probe import probe
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.pipeline import generate
    ckpts = _synthetic_checkpoints()
    seconds = args.seconds if args.seconds else (0.6 if args.quick else 60.0)
    clip = speech(seconds)
    opts = GenerateOptions(engine="sadtalker", lipsync="wav2lip", size=256, preprocess="crop",
                           device=str(d.dev), precision="fp16" if d.cuda else "fp32",
                           batch_size=args.batch_size or (32 if d.cuda else 2),
                           wav2lip_batch_size=128 if d.cuda else 16, checkpoints=str(ckpts))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        out = Path(tmp) / "e2e.mp4"
        d.reset_peak()
        t0 = time.perf_counter()
        res = generate(data.astronaut(), clip, out, opts)
        d.sync()
        wall = time.perf_counter() - t0
        info = probe(out)
    expected = int(round(seconds * 25))
    line("e2e", f"{seconds:.1f} s of speech: {info.num_frames} frames ({info.width}x{info.height}, "
                f"{info.video_duration:.2f} s video, audio {info.audio_duration or 0:.2f} s) in {wall:.1f} s wall, "
                f"{info.num_frames / wall:.2f} frames/s, RTF {wall / seconds:.2f}, {d.peak()}; "
                f"engine {res.engine}, precision {opts.precision}, batch {opts.batch_size}")
    if abs(info.num_frames - expected) > 1 or abs(info.video_duration - seconds) > 0.1:
        raise AssertionError(f"video has {info.num_frames} frames / {info.video_duration:.2f} s, "
                             f"expected {expected} / {seconds:.2f} s")
    return {}


# ------------------------------------------------------------------------------------------------

STEPS = [("env", step_env), ("goldens", step_goldens), ("bench", step_bench), ("e2e", step_e2e)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (smoke test)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU smoke test)")
    ap.add_argument("--seconds", type=float, default=0.0, help="e2e speech length (default 60, --quick 0.6)")
    ap.add_argument("--batch-size", type=int, default=0, help="e2e SadTalker frames per pass (default 32 CUDA, 2 CPU)")
    ap.add_argument("--skip", nargs="*", default=[], choices=[s for s, _ in STEPS[1:]], help="steps to leave out")
    ap.add_argument("--bench-timeout", type=float, default=0.0,
                    help="seconds allowed to bench/sadtalker.py (default 240 on CUDA, 1200 on the CPU)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit's TERM still runs the clean-ups
    os.environ.setdefault("SADTALKER_REFERENCE_DIR", str(REF))  # for bench/sadtalker.py's synthetic weights
    d = Device(args.device)
    results = []
    t_all = time.perf_counter()
    for name, fn in STEPS:
        if name in args.skip:
            results.append((name, "skipped", 0.0))
            continue
        t0 = time.perf_counter()
        try:
            fn(d, args)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - each step runs; the summary names the failed ones
            traceback.print_exc()
            status = f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"
        secs = time.perf_counter() - t0
        results.append((name, status, secs))
        line(name, f"step {status.split(':')[0]} in {secs:.1f} s")
    print("=" * 72)
    for name, status, secs in results:
        line("summary", f"{name:8s} {secs:7.1f} s  {status}")
    bad = [n for n, s, _ in results if s.startswith("FAILED")]
    line("summary", f"total {time.perf_counter() - t_all:.1f} s on {d.dev}; "
                    + (f"FAILED: {', '.join(bad)}" if bad else "all steps ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
