"""``batch --ray`` on a Ray cluster that the test starts: ``ray start --head`` on 127.0.0.1 with 2
CPUs (2 worker processes), its own ports and temp folder, lite engine, 256 px, 2 s of speech.

8 jobs complete with the models loaded once per worker process (counted by the workers); a worker
SIGKILLed mid-job -> its job is retried on the other worker and every video exists exactly once,
with no partial file. Ray is a test dependency (install.py --test installs ray==2.60.0): a missing
Ray fails these tests, it does not skip them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import batch_inputs

REPO = Path(__file__).resolve().parents[1]
NAMES = ["astronaut", "cameraman", "astronaut-mirror", "astronaut-crop", "lfw-0", "lfw-1", "astronaut", "cameraman"]


@pytest.fixture(scope="module")
def cluster():
    import importlib.util
    assert importlib.util.find_spec("ray") is not None, "Ray is missing: python install.py --test (ray==2.60.0)"
    from sadtalker_ext.batch.ray_cluster import LocalCluster
    c = LocalCluster(num_cpus=2).start()
    try:
        yield c
    finally:
        c.stop()
        assert c.pids() == []


@pytest.fixture(scope="module")
def eight_jobs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-in")
    ins = batch_inputs.write_inputs(folder, speech_seconds=2.0)
    lines = ["image,audio,text,output"]
    for i, name in enumerate(NAMES):
        speech = (f"{ins['speech'].name},," if i not in (3, 6) else ",Hello from the batch.,")
        lines.append(f"{ins[name].name},{speech}{i + 1:02d}-{name}")
    path = folder / "jobs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), GLOG_minloglevel="2")


def _check_videos(out: Path) -> list[dict]:
    import av
    assert sorted(p.stem for p in out.glob("*.mp4")) == [f"{i + 1:02d}-{n}" for i, n in enumerate(NAMES)]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".batch.lock"]  # no partial file
    for p in out.glob("*.mp4"):
        side = json.loads(p.with_suffix(".json").read_text())
        with av.open(str(p)) as c:
            assert sum(1 for _ in c.decode(video=0)) == side["frames"] > 20
        assert not side["source"]["image"].startswith("/tmp/th-ray-job")  # the driver's paths, not the worker's
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    done = [r for r in recs if r["status"] == "done"]
    assert sorted(r["job"] for r in done) == sorted(p.stem for p in out.glob("*.mp4"))  # each exactly once
    return recs


def test_eight_jobs_on_two_workers_load_models_once_each(cluster, eight_jobs, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "sadtalker_ext", "batch", str(eight_jobs), "--out", str(out),
                        "--engine", "lite", "--size", "256", "--phonemes", "acoustic", "--ray", cluster.address],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 done, 0 skipped (done before), 0 failed" in p.stderr
    workers = re.findall(r"ray worker pid (\d+): models loaded (\d+)x \(face models (\d+)x\), (\d+) jobs", p.stderr)
    assert len(workers) == 2, p.stderr[-2000:]
    assert all(int(eng) == 1 and int(face) == 1 for _, eng, face, _ in workers)  # once per worker, not per job
    assert sum(int(n) for *_, n in workers) == 8 and all(int(n) >= 1 for *_, n in workers)
    recs = _check_videos(out)
    assert {r["worker"].split("@")[0] for r in recs} == {pid for pid, *_ in workers}
    assert os.getpid() not in {int(pid) for pid, *_ in workers}  # the jobs ran in the cluster's processes
    # resume on the cluster too: nothing to run
    p = subprocess.run([sys.executable, "-m", "sadtalker_ext", "batch", str(eight_jobs), "--out", str(out),
                        "--engine", "lite", "--size", "256", "--phonemes", "acoustic", "--ray", cluster.address],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert p.returncode == 0 and "0 done, 8 skipped (done before)" in p.stderr, p.stderr[-2000:]


def test_worker_sigkilled_mid_job_every_video_exactly_once(cluster, eight_jobs, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(REPO / "tests" / "batch_ray_driver.py"), str(eight_jobs), str(out),
                        cluster.address, "--kill-at", "3"], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(res["killed"]) == 1, res
    victim = res["killed"][0]
    assert (res["done"], res["failed"]) == (8, 0), res["errors"]
    recs = _check_videos(out)
    died = [r for r in recs if r["status"] == "failed"]
    assert [(r["job"], r["error_type"]) for r in died] == [(victim["job"], "WorkerDied")]  # killed mid-job
    assert str(victim["pid"]) in died[0]["error"]
    redo = [r for r in recs if r["status"] == "done" and r["job"] == victim["job"]]
    assert len(redo) == 1 and redo[0]["attempt"] == 2 and not redo[0]["worker"].startswith(f"{victim['pid']}@")
    # the killed worker's models were loaded once; the restarted one (a new process) loaded its own once
    assert all(w["engine_loads"] == 1 and w["face_model_loads"] == 1 for w in res["workers"])
    assert victim["pid"] in {w["pid"] for w in res["workers"]}
