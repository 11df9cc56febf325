"""``batch --ray auto|ADDRESS``: the jobs of a jobs file on a Ray cluster (optional: ``pip install ray==2.60.0``).

One actor per worker (``num_gpus=1`` each for the neural engines, ``num_cpus=1`` for lite) holds a
:class:`~sadtalker_ext.batch.worker.Worker`: it loads the engine and the face models once, then takes
jobs one at a time. The driver (the ``batch`` command) reads each input file once and ships its bytes
through Ray's object store, so workers need no shared file system; a worker renders into its own
temporary folder and returns the video and sidecar bytes, and only the driver writes into the output
folder (hidden temporary name, renamed when complete) and ``results.jsonl``. So a worker killed
mid-job leaves nothing behind: the driver records the attempt as failed (``WorkerDied``), gives the
job to another worker, and the video appears exactly once. Dead actors are restarted by Ray (at most
``MAX_RESTARTS`` times each) and take jobs again once they answer.

The package itself travels to the cluster as a ``py_modules`` runtime environment, so the workers
need only the dependencies (``install.py`` on each node, or a cluster image with them).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Callable

from ..errors import DependencyError, OptionError, TalkingHeadError
from .jobsfile import BatchJob
from .results import OutputFolder
from .runner import Summary, begin, is_permanent, record

log = logging.getLogger(__name__)

MAX_RESTARTS = 3
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class WorkerDied(TalkingHeadError):
    """The Ray worker running a job died (killed, out of memory, node lost); the job is retried."""

    http_status = 503


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _ray(loopback: bool = False):
    """Import ray; for a cluster on this machine's loopback address, first make Ray keep 127.0.0.1
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported; else Ray swaps the loopback
    address for the eth0 one and the driver cannot reach the head). A remote cluster needs the
    driver's real address, so the setting is left alone then."""
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from .ray_cluster import pydantic_v1_installed
    if pydantic_v1_installed():
        # Ray 2.60's serializer imports ray._common.pydantic_compat, which raises on pydantic 1 (the
        # WebUI's pin) but works without pydantic: hide it from this process, which does not use it
        mod = sys.modules.get("pydantic", False)
        if mod is False:
            sys.modules["pydantic"] = None  # `import pydantic` raises ImportError from now on
        elif mod is not None:
            raise DependencyError("Ray 2.60 does not run beside pydantic 1, which this process has loaded "
                                  "(the WebUI's); run `python -m sadtalker_ext batch --ray` in its own process")
    try:
        import ray
    except ImportError:
        raise DependencyError("batch --ray needs Ray: pip install \"ray==2.60.0\" (or python install.py "
                              "--ray); without --ray the batch runs on this machine") from None
    if loopback:
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set
    return ray


class BatchActor:
    """The actor's class (wrapped by ``ray.remote`` in :func:`actor_class`)."""

    def __init__(self, warm_options: dict | None = None):
        from ..options import GenerateOptions
        from .worker import Worker
        self.worker = Worker()
        if warm_options is not None:
            opts = dict(warm_options)
            if isinstance(opts.get("pads"), list):
                opts["pads"] = tuple(opts["pads"])
            self.worker.warm_up(GenerateOptions.from_dict(opts))

    def stats(self) -> dict:
        return self.worker.stats()

    def run(self, spec: dict, files: dict) -> dict:
        """Run one job whose input files come as ``{field: (suffix, bytes)}``; returns
        ``{"ok": True, "info", "video": bytes, "sidecar": bytes, "stats"}`` or ``{"ok": False,
        "error", "error_type", "permanent"}`` for a TalkingHeadError (other exceptions propagate)."""
        from .jobsfile import BatchJob
        tmp = Path(tempfile.mkdtemp(prefix="th-ray-job-"))
        try:
            for name, payload in files.items():
                suffix, data = payload
                p = tmp / f"input-{name}{suffix}"
                p.write_bytes(data)
                spec = dict(spec, **{name: str(p)})
            job = BatchJob.from_spec(spec)
            out = tmp / "out"
            out.mkdir()
            try:
                info = self.worker.run(job, out)
            except TalkingHeadError as exc:
                return {"ok": False, "error": exc.message, "error_type": type(exc).__name__,
                        "permanent": is_permanent(exc), "stats": self.worker.stats()}
            return {"ok": True, "info": info, "video": (out / info["output"]).read_bytes(),
                    "sidecar": (out / info["sidecar"]).read_bytes(), "stats": self.worker.stats()}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _running_cluster_known() -> bool:
    """True when ``ray.init(address="auto")`` has a cluster to find (RAY_ADDRESS, or a ``ray start``
    of this machine's default temp folder)."""
    return bool(os.environ.get("RAY_ADDRESS")) or Path(tempfile.gettempdir(), "ray", "ray_current_cluster").is_file()


def connect(address: str, runtime_env: dict):
    """``ray.init`` for ``address`` ("auto": the known cluster, else a new one on 127.0.0.1 with one
    worker slot per CPU). Returns the ray module and the LocalCluster it started (or None)."""
    cluster = None
    if address == "auto" and not _running_cluster_known():
        from .ray_cluster import LocalCluster
        log.info("no running Ray cluster found; starting one on 127.0.0.1")
        cluster = LocalCluster(num_cpus=os.cpu_count() or 1).start()
        address = cluster.address
    ray = _ray(loopback=address != "auto" and _is_loopback(address))
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if cluster is not None:
            cluster.stop()
        raise OptionError(f"cannot connect to the Ray cluster at {address} ({' '.join(str(exc).split())[:200]}); "
                          f"check the address (HOST:6379) and that the cluster runs") from None
    return ray, cluster


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save(folder: OutputFolder, job: BatchJob, res: dict) -> dict:
    """Write the worker's video then its sidecar (with the driver's input paths) into ``folder``."""
    import json
    side = json.loads(res["sidecar"])
    side["source"] = {k: str(getattr(job, k)) for k in ("image", "video", "audio") if getattr(job, k) is not None}
    if job.text is not None:
        side["source"].update(text=job.text, tts=job.tts)
    video = folder.path / job.output
    _write_atomic(video, res["video"])
    _write_atomic(video.with_suffix(".json"), json.dumps(side, indent=2, default=str).encode())
    return res["info"]


def run_ray(jobs: list[BatchJob], out_dir: str | Path, *, address: str = "auto", retries: int = 2,
            quiet: bool = False, actors: int | None = None, on_event: Callable[[str, dict], None] | None = None,
            poll_s: float = 0.5) -> Summary:
    """Run ``jobs`` on the Ray cluster at ``address`` ("auto" or HOST:PORT / ray://HOST:PORT).

    actors: number of workers (default: the cluster's GPUs for neural engines, else its CPUs;
    never more than the jobs to run). on_event(kind, data), for tests and monitoring: "actor"
    ({"slot", "pid", ...stats}) when a worker is ready, "dispatch" ({"job", "slot", "pid"}).
    Returns a Summary whose ``workers`` lists each worker process's stats (engine and face-model
    loads, jobs run). Raises DependencyError without Ray, OptionError for an unreachable cluster.
    """
    t0 = time.perf_counter()
    summary = Summary()
    with OutputFolder(Path(out_dir)) as folder:
        p, bars = begin(jobs, folder, retries, quiet, summary)
        todo = [(j, left) for j, left in p.todo]
        if not todo:
            bars.close()
            summary.seconds = time.perf_counter() - t0
            return summary
        # jobs whose own inputs/options are unusable fail here, without a worker
        runnable = deque()
        for job, left in todo:
            if job.error is not None:
                folder.append(dict(record(job, "failed", 2 + retries - left, 0.0, "driver"),
                                   error=job.error, error_type=job.error_type))
                summary.failed += 1
                summary.errors.append(f"{job.name}: {job.error}")
                bars.finish("failed")
            else:
                runnable.append([job, 1 + retries - left])  # job, attempts used (this run and earlier ones)
        if not runnable:
            bars.close()
            summary.seconds = time.perf_counter() - t0
            return summary
        neural = any(j.options.engine != "lite" for j, _ in runnable)
        warm = runnable[0][0].options.to_dict()
        ray, cluster = connect(address, {"py_modules": [str(PACKAGE_DIR)],
                                         "env_vars": {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}})
        from ray.exceptions import RayActorError
        try:
            res = ray.cluster_resources()
            if actors is None:
                actors = int(res.get("GPU", 0)) if neural else int(res.get("CPU", 1))
            actors = max(1, min(int(actors), len(runnable)))
            if neural and res.get("GPU", 0) < 1:
                log.warning("the Ray cluster has no GPU; neural-engine workers will wait for one")
            Actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=0,
                               **({"num_gpus": 1} if neural else {"num_cpus": 1}))(BatchActor)
            slots = [Actor.remote(_jsonable(warm)) for _ in range(actors)]
            # a slot is free when it answered stats(); busy while a job runs; pending while (re)starting
            pending = {slot.stats.remote(): i for i, slot in enumerate(slots)}
            busy: dict = {}  # ref -> (slot index, job entry, t0)
            free: deque = deque()
            pids: dict[int, int] = {}
            stats_by_pid: dict[int, dict] = {}
            file_refs: dict[str, object] = {}

            def files_of(job: BatchJob) -> dict:
                out = {}
                for k in ("image", "video", "audio"):
                    path = getattr(job, k)
                    if path is not None:
                        key = str(path)
                        if key not in file_refs:
                            file_refs[key] = (path.suffix, path.read_bytes())
                        out[k] = file_refs[key]
                return out

            def fail(entry, msg, etype, permanent, worker, started):
                job, used = entry
                rec = dict(record(job, "failed", used, time.perf_counter() - started, worker), error=msg,
                           error_type=etype)
                folder.append(rec)
                if permanent or used >= 1 + retries:
                    summary.failed += 1
                    summary.errors.append(f"{job.name}: {msg}")
                    bars.write(f"failed: {job.name}: {msg}")
                    bars.finish("failed")
                else:
                    runnable.appendleft([job, used])  # retried by the next free worker

            while runnable or busy:
                while free and runnable:
                    i = free.popleft()
                    entry = runnable.popleft()
                    entry[1] += 1
                    job = entry[0]
                    try:
                        ref = slots[i].run.remote(job.spec(), files_of(job))
                    except OSError as exc:  # the input vanished since it was hashed
                        fail(entry, f"cannot read the inputs of {job.name}: {exc.strerror or exc}", "InputError",
                             True, "driver", time.perf_counter())
                        free.append(i)
                        continue
                    busy[ref] = (i, entry, time.perf_counter())
                    if on_event:
                        on_event("dispatch", {"job": job.name, "slot": i, "pid": pids.get(i)})
                if not pending and not busy and not free:
                    for entry in runnable:
                        fail(entry, "no Ray worker is left (all died more than their restarts)", "WorkerDied",
                             True, "driver", time.perf_counter())
                    runnable.clear()
                    break
                ready, _ = ray.wait(list(busy) + list(pending), num_returns=1, timeout=poll_s)
                for ref in ready:
                    if ref in pending:
                        i = pending.pop(ref)
                        try:
                            st = ray.get(ref)
                        except RayActorError:
                            log.warning("Ray worker %d is gone for good", i)
                            continue
                        pids[i] = st["pid"]
                        stats_by_pid[st["pid"]] = st
                        free.append(i)
                        if on_event:
                            on_event("actor", dict(st, slot=i))
                        continue
                    i, entry, entry_t = busy.pop(ref)
                    job = entry[0]
                    try:
                        out = ray.get(ref)
                    except RayActorError as exc:
                        worker = f"{pids.get(i)}"
                        fail(entry, f"the Ray worker (pid {worker}) died while running the job "
                                    f"({type(exc).__name__}); retried on another worker", "WorkerDied", False, worker, entry_t)
                        pending[slots[i].stats.remote()] = i  # back once Ray has restarted it
                        continue
                    except Exception as exc:  # a bug in the worker: recorded, the batch goes on
                        fail(entry, " ".join(f"{type(exc).__name__}: {exc}".split())[:300], type(exc).__name__,
                             False, str(pids.get(i)), entry_t)
                        free.append(i)
                        continue
                    stats_by_pid[out["stats"]["pid"]] = out["stats"]
                    free.append(i)
                    if not out["ok"]:
                        fail(entry, out["error"], out["error_type"], out["permanent"], str(pids.get(i)), entry_t)
                        continue
                    info = _save(folder, job, out)
                    folder.append(record(job, "done", entry[1], time.perf_counter() - entry_t,
                                         out["stats"]["worker"], info=info))
                    summary.done += 1
                    bars.finish("ok")
            summary.workers = sorted(stats_by_pid.values(), key=lambda s: s["pid"])
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bars.close()
            for slot in locals().get("slots", []):
                try:
                    ray.kill(slot, no_restart=True)
                except Exception:  # already dead
                    pass
            ray.shutdown()
            if cluster is not None:
                cluster.stop()
    summary.seconds = time.perf_counter() - t0
    return summary


def _jsonable(d):
    import json
    return json.loads(json.dumps(d, default=str))


__all__ = ["run_ray", "BatchActor", "WorkerDied", "MAX_RESTARTS"]
