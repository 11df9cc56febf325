"""``python -m sadtalker_ext batch``: a 12-job file of real photos x speech/text (one damaged image,
one missing file), resume, SIGKILL and Ctrl-C mid-run, retries, and the jobs file's validation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import batch_inputs
from sadtalker_ext.batch.jobsfile import load_jobs
from sadtalker_ext.batch.results import OutputFolder
from sadtalker_ext.batch.runner import run_local
from sadtalker_ext.errors import OptionError, OutOfMemory
from sadtalker_ext.options import GenerateOptions

REPO = Path(__file__).resolve().parents[1]
FAST = ["--engine", "lite", "--size", "256", "--phonemes", "acoustic"]


def _cli(jobs: Path, out: Path, *extra: str, popen: bool = False):
    cmd = [sys.executable, "-m", "sadtalker_ext", "batch", str(jobs), "--out", str(out), *FAST, *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_minloglevel="2")
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _frames(path: Path) -> tuple[int, int, int]:
    import av
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
        s = c.streams.video[0]
        return n, s.width, s.height


def _check_outputs(out: Path) -> None:
    """Exactly the 10 good videos, each decodable with its sidecar's frame count, no hidden leftovers."""
    videos = sorted(p.stem for p in out.glob("*.mp4") if not p.name.startswith("."))
    assert videos == batch_inputs.GOOD
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".batch.lock")
    assert hidden == [], f"partial files left: {hidden}"
    for stem in videos:
        side = json.loads((out / f"{stem}.json").read_text())
        n, w, h = _frames(out / f"{stem}.mp4")
        assert n == side["frames"] > 10
        assert (w, h) == (256, 256)
        assert len(side["batch"]["key"]) == 64


@pytest.fixture(scope="module")
def jobs_csv(tmp_path_factory) -> Path:
    return batch_inputs.twelve_jobs(tmp_path_factory.mktemp("batch-in"))


def test_twelve_jobs_then_resume_skips_the_ten(jobs_csv, tmp_path):
    out = tmp_path / "out"
    first = _cli(jobs_csv, out)
    assert first.returncode == 1, first.stderr[-2000:]  # some jobs failed
    _check_outputs(out)
    recs = _results(out)
    assert sorted(r["job"] for r in recs if r["status"] == "done") == batch_inputs.GOOD
    failed = {r["job"]: r for r in recs if r["status"] == "failed"}
    assert sorted(failed) == batch_inputs.BAD
    assert failed["11-broken"]["error_type"] == "ImageError" and "broken.png" in failed["11-broken"]["error"]
    assert failed["12-missing"]["error_type"] == "InputError" and "does not exist" in failed["12-missing"]["error"]
    for r in failed.values():
        assert "\n" not in r["error"] and len(r["error"]) < 300
    for r in recs:
        assert r["seconds"] >= 0 and len(r["key"]) == 64
    assert "10 done, 0 skipped (done before), 2 failed" in first.stderr
    assert "error: 11-broken: cannot read image" in first.stderr
    # the text jobs spoke their text (espeak-ng); the sidecar keeps it for reproduction
    side = json.loads((out / "04-crop-text.json").read_text())
    assert side["source"]["text"] == "Hello there." and side["options"]["size"] == 256
    assert json.loads((out / "07-astronaut-text.json").read_text())["options"]["expression_scale"] == 1.5
    assert json.loads((out / "03-mirror.json").read_text())["seed"] == 7
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}

    second = _cli(jobs_csv, out)
    assert second.returncode == 1
    assert "0 done, 10 skipped (done before), 2 failed" in second.stderr, second.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes  # not re-rendered
    new = _results(out)[len(recs):]
    assert sorted((r["job"], r["status"], r["attempt"]) for r in new) == [
        ("11-broken", "failed", 2), ("12-missing", "failed", 2)]  # the failed ones were retried
    # --retries 2 => 3 attempts in all: the third run tries once more, the fourth gives up
    assert _cli(jobs_csv, out).returncode == 1
    fourth = _cli(jobs_csv, out)
    assert "2 given up (out of retries)" in fourth.stderr, fourth.stderr[-1000:]
    assert len(_results(out)) == len(recs) + 4
    _check_outputs(out)


def test_sigkill_mid_run_then_rerun_has_no_duplicate_and_no_partial(jobs_csv, tmp_path):
    out = tmp_path / "out"
    proc = _cli(jobs_csv, out, popen=True)
    partial = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = sum(1 for r in _results(out) if r["status"] == "done") if (out / "results.jsonl").exists() else 0
            partial = [p.name for p in out.glob(".*.part*")] if out.exists() else []
            if done >= 3 and partial:
                proc.send_signal(signal.SIGKILL)  # in the middle of writing a video
                break
            time.sleep(0.005)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close(), proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-job"
    assert partial and any(out.glob(".*.part*")), "the kill did not land while a video was being written"
    done_before = {r["job"] for r in _results(out) if r["status"] == "done"}
    assert 3 <= len(done_before) < 10
    # every finished video survived the kill
    assert done_before <= {p.stem for p in out.glob("*.mp4") if not p.name.startswith(".")}

    again = _cli(jobs_csv, out)
    assert again.returncode == 1, again.stderr[-2000:]
    _check_outputs(out)  # exactly the 10 videos, the killed run's temporary file gone
    done = [r for r in _results(out) if r["status"] == "done"]
    assert sorted(r["job"] for r in done) == batch_inputs.GOOD  # one done line per job: no duplicate
    assert len({r["key"] for r in done}) == 10


def test_ctrl_c_keeps_finished_videos_and_leaves_no_partial(jobs_csv, tmp_path):
    out = tmp_path / "out"
    proc = _cli(jobs_csv, out, popen=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.jsonl").exists() and len(_results(out)) >= 2 and any(out.glob(".*.part*")):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    names = {r["job"] for r in _results(out) if r["status"] == "done"}
    assert names and names == {p.stem for p in out.glob("*.mp4") if not p.name.startswith(".")}
    assert not list(out.glob(".*.part*"))


def test_jobs_file_json_overrides_and_per_job_errors(tmp_path):
    inputs = batch_inputs.write_inputs(tmp_path)
    jobs = [
        {"image": "astronaut.png", "audio": "speech.wav", "options": {"size": 256, "seed": 3}},
        {"image": "astronaut.png", "audio": "speech.wav", "size": 300},
        {"image": "astronaut.png", "audio": "speech.wav", "colour": "red"},
        {"image": "astronaut.png", "audio": "speech.wav", "text": "both"},
        {"video": "speech.wav", "audio": "speech.wav", "output": "../escape"},
        {"image": str(inputs["cameraman"]), "text": "Hi.", "lang": "ru", "output": "cam.mp4"},
    ]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": jobs}))
    got = load_jobs(path, GenerateOptions(engine="lite"))
    assert got[0].error is None and got[0].options.size == 256 and got[0].options.seed == 3
    assert got[0].image == inputs["astronaut"].resolve() and got[0].output == "001-astronaut.mp4"
    assert "--size must be 256 or 512" in got[1].error and got[1].error_type == "OptionError"
    assert "unknown column(s)/key(s) colour" in got[2].error
    assert "either 'audio' or 'text'" in got[3].error
    assert "plain file name" in got[4].error
    assert got[5].error is None and got[5].output == "cam.mp4" and got[5].options.language == "ru"
    # the key follows the inputs' bytes and the options
    again = load_jobs(path, GenerateOptions(engine="lite"))
    assert [j.key for j in again] == [j.key for j in got]
    assert load_jobs(path, GenerateOptions(engine="lite", seed=1))[5].key != got[5].key
    inputs["cameraman"].write_bytes(inputs["astronaut"].read_bytes())
    assert load_jobs(path, GenerateOptions(engine="lite"))[5].key != got[5].key


def test_jobs_file_errors_are_one_line(tmp_path):
    p = tmp_path / "jobs.csv"
    p.write_text("audio,output\nx.wav,a\n")
    with pytest.raises(OptionError, match="no 'image' or 'video' column"):
        load_jobs(p)
    p.write_text("image,audio,output\na.png,x.wav,same\nb.png,x.wav,SAME.mp4\n")
    with pytest.raises(OptionError, match="lines 2 and 3 both write"):
        load_jobs(p)
    p.write_text("[1, 2]")
    with pytest.raises(OptionError, match="JSON list of job objects"):
        load_jobs(p)
    with pytest.raises(OptionError, match="does not exist"):
        load_jobs(tmp_path / "nope.csv")


def test_transient_failures_are_retried_up_to_retries(tmp_path):
    """A job that runs out of memory twice succeeds on its third attempt with --retries 2; with
    --retries 1 it is given up after two attempts, over runs."""
    from sadtalker_ext.batch.worker import Worker
    inputs = batch_inputs.write_inputs(tmp_path / "in")
    p = tmp_path / "in" / "jobs.csv"
    p.write_text(f"image,audio\n{inputs['astronaut']},{inputs['speech']}\n")
    jobs = load_jobs(p, GenerateOptions(engine="lite", size=256, phonemes="acoustic"))

    class Flaky(Worker):
        def __init__(self, fails):
            super().__init__()
            self.fails = fails

        def run(self, job, out_dir, **kw):
            if self.fails > 0:
                self.fails -= 1
                raise OutOfMemory("the GPU ran out of memory (test)")
            return super().run(job, out_dir, **kw)

    s = run_local(jobs, tmp_path / "a", retries=2, quiet=True, worker=Flaky(2))
    assert (s.done, s.failed) == (1, 0)
    assert [r["status"] for r in _results(tmp_path / "a")] == ["failed", "failed", "done"]
    assert (tmp_path / "a" / "001-astronaut.mp4").is_file()

    s = run_local(jobs, tmp_path / "b", retries=1, quiet=True, worker=Flaky(5))
    assert (s.done, s.failed) == (0, 1)
    s = run_local(jobs, tmp_path / "b", retries=1, quiet=True, worker=Flaky(0))
    assert (s.done, s.given_up) == (0, 1)  # two attempts were used up in the first run
    assert not list((tmp_path / "b").glob("*.mp4"))


def test_one_run_per_output_folder(tmp_path):
    with OutputFolder(tmp_path / "o"):
        with pytest.raises(OptionError, match="another batch run is writing"):
            OutputFolder(tmp_path / "o").open()
    OutputFolder(tmp_path / "o").open().close()  # released


def test_only_this_batchs_leftovers_are_removed(tmp_path):
    """A killed run's temporary files of the jobs' outputs go; another writer's (e.g. a WebUI run into
    the same folder) stay."""
    inputs = batch_inputs.write_inputs(tmp_path / "in")
    p = tmp_path / "in" / "jobs.csv"
    p.write_text(f"image,audio,output\n{inputs['astronaut']},{inputs['speech']},anna\n")
    out = tmp_path / "out"
    out.mkdir()
    ours = [out / ".anna.1a2b3c4d.part.mp4", out / ".anna.json.part", out / ".anna.mp4.4242.part"]
    theirs = out / ".20261203-101010-lite-0.9f8e7d6c.part.mp4"
    for f in ours + [theirs]:
        f.write_bytes(b"\0" * 100)
    jobs = load_jobs(p, GenerateOptions(engine="lite", size=256, phonemes="acoustic"))
    s = run_local(jobs, out, quiet=True)
    assert s.done == 1 and not any(f.exists() for f in ours)
    assert theirs.exists()
