"""Many avatars: jobs files, resumable batch runs, and their Ray backend.

* :mod:`.jobsfile`: CSV/JSON jobs -> validated :class:`BatchJob` (inputs, options, output, key);
* :mod:`.results`: the output folder: ``results.jsonl``, lock, leftovers of killed runs;
* :mod:`.worker`: one process's runner, engines loaded once;
* :mod:`.runner`: resume plan, retries, progress bars, the local run;
* :mod:`.ray_backend`: the same jobs on a Ray cluster, one actor per worker (optional: ``ray``);
* :mod:`.cli`: ``python -m sadtalker_ext batch``.

Imports nothing heavy at package import.
"""
from __future__ import annotations

__all__ = ["jobsfile", "results", "worker", "runner", "cli"]
