"""``python -m sadtalker_ext batch JOBS --out DIR [--retries N] [--ray auto|ADDRESS] [options]``.

The generation options on the command line are every job's defaults; a jobs file's columns
override them per job. Exit status: 0 when every job is done, 1 when some failed (their one-line
errors are in ``DIR/results.jsonl`` and printed), 2 for an unusable jobs file or option, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub, add_generation_options) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("batch", help="run a CSV/JSON file of jobs (resumable; optionally on a Ray cluster)",
                       description="Run every job of a jobs file; re-running the same command resumes.")
    p.add_argument("jobs", help="jobs file: CSV with a header (image|video, audio|text, output, options...) or JSON")
    p.add_argument("--out", required=True, help="output folder (videos, sidecars, results.jsonl)")
    p.add_argument("--retries", type=int, default=2,
                   help="attempts after the first for a failed job, over all runs (default: %(default)s)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on a Ray cluster: 'auto' (the cluster this machine belongs to, or a new "
                        "local one), or the head's address, e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001")
    p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="workers on the cluster (default: one per GPU for neural engines, else one per CPU)")
    add_generation_options(p)
    p.set_defaults(func=run)
    return p


def run(args, options_from_args=None) -> int:
    from . import sigint
    from ..errors import OptionError
    from ..batch.jobsfile import load_jobs

    if options_from_args is None:
        from .main import _options as options_from_args
    if args.retries < 0 or args.retries > 100:
        raise OptionError("--retries must be in 0..100")
    base = options_from_args(args)
    jobs = load_jobs(args.jobs, base)
    quiet = bool(getattr(args, "quiet", False))
    if args.ray:
        from ..batch.ray_backend import run_ray
        summary = run_ray(jobs, args.out, address=args.ray, retries=args.retries, quiet=quiet,
                          actors=args.ray_actors)
    else:
        from ..batch.runner import run_local
        summary = run_local(jobs, args.out, retries=args.retries, quiet=quiet, should_stop=sigint.pressed)
    if not quiet:
        for w in summary.workers:
            print(f"ray worker pid {w['pid']}: models loaded {w['engine_loads']}x (face models "
                  f"{w['face_model_loads']}x), {w['jobs_run']} jobs", file=sys.stderr)
        for err in summary.errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"batch: {summary.line()}; results in {args.out}/results.jsonl", file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


__all__ = ["add_parser", "run"]
