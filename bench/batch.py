"""Batch throughput: 8 jobs of 10 s speech, locally and on a 2-worker local Ray cluster.

Each run is the real command (``python -m sadtalker_ext batch JOBS --out DIR [--ray ADDRESS]``) in a
fresh process, timed from start to exit. Prints, for each backend: jobs/min (8 jobs / wall time),
the start-up cost (wall time minus the jobs' own time: process start, imports, Ray connection,
workers loading their models) and the per-job overhead (a job's time as the runner saw it --
for Ray from hand-over to the video saved by the driver -- minus the time ``generate`` itself took
in the worker, from the sidecar: hashing, input/output transfer, scheduling, sidecar and results
line). The Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs) is started before the timing and
its start-up is printed separately.

Inputs: the 6 skimage portraits of the tests (astronaut, mirror, crop, cameraman, 2 LFW faces;
two used twice) x 10 s of CMU ARCTIC a0007 repeated; lite engine, 256 px, acoustic mouth shapes.

    python bench/batch.py [--speech 10] [--jobs 8] [--skip-ray]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

FLAGS = ["--engine", "lite", "--size", "256", "--phonemes", "acoustic"]


def make_jobs(folder: Path, n: int, speech_s: float) -> Path:
    import batch_inputs  # the tests' real inputs
    ins = batch_inputs.write_inputs(folder, speech_seconds=speech_s)
    names = ["astronaut", "cameraman", "astronaut-mirror", "astronaut-crop", "lfw-0", "lfw-1"]
    lines = ["image,audio,output"] + [f"{ins[names[i % len(names)]]},{ins['speech']},job-{i:02d}" for i in range(n)]
    path = folder / "jobs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(jobs: Path, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_minloglevel="2")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sadtalker_ext", "--quiet", "batch", str(jobs), "--out", str(out), *FLAGS, *extra],
                       cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"batch failed ({p.returncode}): {p.stderr[-2000:]}")
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    done = [r for r in recs if r["status"] == "done"]
    gen = [json.loads((out / r["sidecar"]).read_text())["seconds"] for r in done]
    job_s = [r["seconds"] for r in done]
    return {"jobs": len(done), "wall_s": wall, "jobs_per_min": 60 * len(done) / wall,
            "startup_s": wall - sum(job_s) / max(1, len({r["worker"] for r in done})),
            "overhead_per_job_s": statistics.mean(a - g for a, g in zip(job_s, gen)),
            "generate_s_mean": statistics.mean(gen), "workers": sorted({r["worker"] for r in done})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--speech", type=float, default=10.0, help="seconds of speech per job")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        jobs = make_jobs(tmp / "in", args.jobs, args.speech)
        rows = {"local": run(jobs, tmp / "local", [])}
        if not args.skip_ray:
            from sadtalker_ext.batch.ray_cluster import LocalCluster
            t0 = time.perf_counter()
            with LocalCluster(num_cpus=2) as cluster:
                cluster_s = time.perf_counter() - t0
                rows["ray (2 workers)"] = run(jobs, tmp / "ray", ["--ray", cluster.address])
            print(f"ray cluster start (ray start --head, not in the figures below): {cluster_s:.1f} s")
    print(f"{args.jobs} jobs x {args.speech:g} s speech, lite 256 px")
    print(f"{'backend':<16} {'jobs/min':>9} {'wall s':>8} {'start-up s':>11} {'overhead/job s':>15} "
          f"{'generate s/job':>15} workers")
    for name, r in rows.items():
        print(f"{name:<16} {r['jobs_per_min']:>9.1f} {r['wall_s']:>8.1f} {r['startup_s']:>11.1f} "
              f"{r['overhead_per_job_s']:>15.3f} {r['generate_s_mean']:>15.2f} {len(r['workers'])}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
