"""Driver of the Ray tests, run in its own process (Ray 2.60 refuses the pydantic 1 that the test
process has loaded for the API tests): ``python batch_ray_driver.py JOBS OUT ADDRESS [--kill-at N]``.

Runs the jobs with :func:`run_ray`; with ``--kill-at N`` it SIGKILLs the worker process that got
the N-th job, 0.3 s after handing it over (the job is then rendering). Prints one JSON line: the
summary, the events seen and the killed PID.
"""
import argparse
import json
import os
import signal
import threading
import time

from sadtalker_ext.batch.jobsfile import load_jobs
from sadtalker_ext.batch.ray_backend import run_ray
from sadtalker_ext.options import GenerateOptions

ap = argparse.ArgumentParser()
ap.add_argument("jobs")
ap.add_argument("out")
ap.add_argument("address")
ap.add_argument("--kill-at", type=int, default=0)
args = ap.parse_args()

events, killed = [], []


def on_event(kind, data):
    events.append([kind, data, time.time()])
    dispatches = [e for e in events if e[0] == "dispatch"]
    if kind == "dispatch" and args.kill_at and len(dispatches) == args.kill_at and data["pid"]:
        def kill(pid=data["pid"]):
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed.append({"pid": pid, "job": data["job"]})
        threading.Thread(target=kill, daemon=True).start()


jobs = load_jobs(args.jobs, GenerateOptions(engine="lite", size=256, phonemes="acoustic"))
s = run_ray(jobs, args.out, address=args.address, retries=2, quiet=True, on_event=on_event)
print(json.dumps({"done": s.done, "failed": s.failed, "skipped": s.skipped, "errors": s.errors,
                  "workers": s.workers, "events": events, "killed": killed, "seconds": s.seconds}))
