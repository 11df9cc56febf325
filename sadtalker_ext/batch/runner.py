"""Plans and runs a batch: which jobs to skip (done), retry (failed) or give up; runs them locally.

Resuming: a job is done when results.jsonl has a ``done`` line with its key (inputs' sha256 +
options) and its video and sidecar are still there, or when its sidecar already records the key
(the run was killed between writing the video and the results line). A job that failed gets at
most ``1 + retries`` attempts in all, counted over every run of the same folder; an input error
(missing file, broken image, no face) is not retried within one run, since it fails again the same
way, but counts as one attempt.

Ctrl-C (KeyboardInterrupt) or a crash loses only the job in flight: every video is renamed into
place only when complete, its results line follows it, and the next run removes the temporary
files a killed run left.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import GenerationInterrupted, InputError, TalkingHeadError
from .jobsfile import BatchJob
from .results import OutputFolder

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """todo: jobs to run, with the attempts each has left; skipped: done earlier; given_up: out of
    attempts; recovered: skipped jobs whose video and sidecar are there but whose results line is
    missing (the run was killed in between): the runner writes their ``done`` line."""

    todo: list[tuple[BatchJob, int]] = field(default_factory=list)
    skipped: list[BatchJob] = field(default_factory=list)
    given_up: list[BatchJob] = field(default_factory=list)
    recovered: list[BatchJob] = field(default_factory=list)


def plan(jobs: Iterable[BatchJob], folder: OutputFolder, retries: int) -> Plan:
    """Split ``jobs`` by what ``folder``'s results.jsonl says (see the module docstring)."""
    states = folder.read()
    out = Plan()
    for job in jobs:
        st = states.get(job.key)
        if folder.is_done(job.key, st, job.output):
            out.skipped.append(job)
            if st is None or st.done is None:
                out.recovered.append(job)
            continue
        left = 1 + retries - (st.failures if st else 0)
        if left <= 0:
            out.given_up.append(job)
        else:
            out.todo.append((job, left))
    return out


@dataclass
class Summary:
    """Counts of a run: done now, skipped (done before), failed now, given up (no attempts left)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    given_up: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)  # per worker process: pid, engine/face-model loads, jobs

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.given_up == 0 and not self.interrupted

    def line(self) -> str:
        s = (f"{self.done} done, {self.skipped} skipped (done before), {self.failed} failed"
             + (f", {self.given_up} given up (out of retries)" if self.given_up else "")
             + f" in {self.seconds:.1f} s")
        return s + (" -- interrupted" if self.interrupted else "")


def is_permanent(exc: BaseException) -> bool:
    """True for errors that a retry would repeat (the job's own inputs or options)."""
    return isinstance(exc, InputError)


def write_recovered(p: Plan, folder: OutputFolder) -> None:
    """The missing ``done`` lines of ``p.recovered`` (read from their sidecars)."""
    for job in p.recovered:
        rec = record(job, "done", 0, 0.0, "recovered", info={"sidecar": Path(job.output).with_suffix(".json").name})
        rec["recovered"] = True
        folder.append(rec)


def begin(jobs: list[BatchJob], folder: OutputFolder, retries: int, quiet: bool,
          summary: "Summary") -> "tuple[Plan, Progress]":
    """What every runner does first in its open output folder: remove what a killed run of these jobs left,
    plan them (the jobs skipped as done and given up are counted in ``summary``), write the records the
    plan recovered, and open the progress bars. Returns (plan, bars)."""
    folder.remove_leftovers([j.output for j in jobs])
    p = plan(jobs, folder, retries)
    summary.skipped, summary.given_up = len(p.skipped), len(p.given_up)
    write_recovered(p, folder)
    return p, Progress(len(jobs), len(p.skipped) + len(p.given_up), quiet)


def record(job: BatchJob, status: str, attempt: int, seconds: float, worker: str, *,
           info: dict | None = None, exc: BaseException | None = None) -> dict:
    """The results.jsonl line of one attempt."""
    rec = {"job": job.name, "line": job.line, "key": job.key, "status": status, "output": job.output,
           "attempt": attempt, "seconds": round(seconds, 3), "worker": worker, "error": None,
           "error_type": None}
    if info:
        rec["sidecar"] = info.get("sidecar")
        rec["frames"] = info.get("frames")
        rec["engine"] = info.get("engine")
    if exc is not None:
        if isinstance(exc, TalkingHeadError):
            msg = exc.message
        else:
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        rec["error"], rec["error_type"] = msg[:500], type(exc).__name__
    return rec


class Progress:
    """Two tqdm bars on stderr: jobs of the run and frames of the job in flight (none when quiet)."""

    def __init__(self, total: int, initial: int, quiet: bool):
        self.quiet = quiet
        self.overall = self.job = None
        if quiet:
            return
        from tqdm import tqdm
        self._tqdm = tqdm
        self.overall = tqdm(total=total, initial=initial, desc="jobs", unit="job", position=0,
                            file=sys.stderr, dynamic_ncols=True)

    def start(self, name: str) -> None:
        if self.quiet:
            return
        if self.job is not None:
            self.job.close()
        self.job = self._tqdm(total=0, desc=name[:30], unit="frame", position=1, leave=False,
                              file=sys.stderr, dynamic_ncols=True)

    def frames(self, done: int, total: int, text: str = "", preview=None) -> None:
        if self.job is None:
            return
        if self.job.total != total:
            self.job.total = total
        self.job.n = done
        self.job.refresh()

    def finish(self, status: str) -> None:
        if self.quiet:
            return
        if self.job is not None:
            self.job.close()
            self.job = None
        self.overall.set_postfix_str(status, refresh=False)
        self.overall.update(1)

    def write(self, text: str) -> None:
        if self.quiet:
            return
        self._tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        for bar in (self.job, self.overall):
            if bar is not None:
                bar.close()


def run_local(jobs: list[BatchJob], out_dir: str | Path, *, retries: int = 2, quiet: bool = False,
              should_stop: Callable[[], bool] | None = None, worker=None) -> Summary:
    """Run ``jobs`` one after another in this process; see the module docstring.

    Returns a Summary. Raises OptionError when another run holds ``out_dir``; KeyboardInterrupt is
    caught (the job in flight is dropped, ``summary.interrupted`` set).
    """
    from .worker import Worker

    t0 = time.perf_counter()
    summary = Summary()
    with OutputFolder(Path(out_dir)) as folder:
        p, bars = begin(jobs, folder, retries, quiet, summary)
        worker = worker or Worker()
        try:
            for job, left in p.todo:
                used, before = 0, 1 + retries - left  # attempts of earlier runs
                if job.error is not None:  # its own inputs/options are unusable: recorded as they are
                    folder.append(dict(record(job, "failed", before + 1, 0.0, worker.name),
                                       error=job.error, error_type=job.error_type))
                    summary.failed += 1
                    summary.errors.append(f"{job.name}: {job.error}")
                    bars.write(f"failed: {summary.errors[-1]}")
                    bars.finish("failed")
                    continue
                while used < left:
                    used += 1
                    attempt_t = time.perf_counter()
                    bars.start(job.name)
                    try:
                        info = worker.run(job, folder.path, progress=bars.frames, should_stop=should_stop)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # one job's failure is recorded; the batch goes on
                        if not isinstance(exc, TalkingHeadError):
                            log.warning("batch job %s failed", job.name, exc_info=True)
                        if isinstance(exc, GenerationInterrupted) and should_stop and should_stop():
                            raise KeyboardInterrupt from exc
                        folder.append(record(job, "failed", before + used, time.perf_counter() - attempt_t,
                                             worker.name, exc=exc))
                        if is_permanent(exc) or used >= left:
                            summary.failed += 1
                            summary.errors.append(f"{job.name}: {record(job, 'failed', 0, 0, '', exc=exc)['error']}")
                            bars.write(f"failed: {summary.errors[-1]}")
                            bars.finish("failed")
                            break
                        continue
                    folder.append(record(job, "done", before + used, time.perf_counter() - attempt_t, worker.name,
                                         info=info))
                    summary.done += 1
                    bars.finish("ok")
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bars.close()
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["Plan", "Summary", "plan", "begin", "run_local", "record", "is_permanent"]
