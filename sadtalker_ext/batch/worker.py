"""Runs batch jobs in one process, with its engines (and their models) loaded once.

:class:`Worker` is what the local runner uses in the command's own process and what each Ray actor
holds (:mod:`sadtalker_ext.batch.ray_backend`): ``run(job, out_dir)`` writes ``<output>.mp4`` (via a
hidden temporary file renamed on success, see :class:`~sadtalker_ext.io.video_writer.VideoWriter`)
and then its sidecar, which records the job's key.
"""
from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .jobsfile import BatchJob


def face_model_loads() -> int:
    """How many times this process built the face detector/landmark models (mediapipe graphs)."""
    from ..face import landmarks
    return landmarks._detectors.cache_info().misses


class Worker:
    """One process's job runner. Engines are built on first use per (engine, checkpoints, device)
    and kept: models load once per worker, not once per job.

    ``stats()`` counts what was loaded, for tests and monitoring.
    """

    def __init__(self, host_dir: str | os.PathLike | None = None, name: str | None = None):
        self.host_dir = Path(host_dir) if host_dir else None
        self.name = name or f"{os.getpid()}@{os.uname().nodename if hasattr(os, 'uname') else 'local'}"
        self._engines: dict = {}
        self._lock = threading.Lock()
        self.engine_loads = 0
        self.jobs_run = 0

    def engine(self, options):
        from ..engines import get_engine, resolve_engine_name
        resolved = resolve_engine_name(options.engine, options.checkpoints, self.host_dir)
        key = (resolved, options.checkpoints or "", options.device)
        with self._lock:
            eng = self._engines.get(key)
            if eng is None:
                kw = {} if resolved == "lite" else {"device": None if options.device == "auto" else options.device}
                eng = get_engine(resolved, checkpoints=options.checkpoints, host_dir=self.host_dir, **kw)
                self._engines[key] = eng
                self.engine_loads += 1
            return eng

    def warm_up(self, options) -> None:
        """Load the engine for ``options`` and the face models now (before the first job)."""
        self.engine(options)
        from ..face import landmarks
        landmarks._detectors()

    def stats(self) -> dict:
        return {"worker": self.name, "pid": os.getpid(), "engine_loads": self.engine_loads,
                "face_model_loads": face_model_loads(), "jobs_run": self.jobs_run}

    def run(self, job: BatchJob, out_dir: str | os.PathLike, *,
            progress: Callable[[int, int, str, object], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict:
        """Make ``job``'s video in ``out_dir``; returns ``{"output", "sidecar", "frames", "seconds",
        "engine"}``. Raises the pipeline's TalkingHeadError subclasses; leaves no partial file."""
        from ..jobs import write_sidecar
        from ..pipeline import Callbacks, generate

        if job.error is not None:
            raise InputError(job.error)
        t0 = time.perf_counter()
        opts = job.options
        audio, events = job.audio, None
        if job.text is not None:
            from ..audio.tts.cli import speech_from_args
            args = types.SimpleNamespace(text=job.text, lang=job.tts.get("lang", opts.language),
                                         voice=job.tts.get("voice"), rate=job.tts.get("rate"),
                                         pitch=job.tts.get("pitch"), tts_engine=job.tts.get("tts_engine"))
            audio, events, opts = speech_from_args(args, opts)
        out = Path(out_dir) / job.output
        engine = None if job.video is not None else self.engine(opts)
        result = generate(job.image, audio, out, opts, engine=engine, video=job.video,
                          callbacks=Callbacks(progress=progress, should_stop=should_stop),
                          phoneme_events=events, host_dir=self.host_dir)
        source = {k: str(getattr(job, k)) for k in ("image", "video", "audio") if getattr(job, k) is not None}
        if job.text is not None:
            source["text"] = job.text
            source["tts"] = job.tts
        sidecar = write_sidecar(out, result, opts, source,
                                extra={"batch": {"key": job.key, "job": job.name, "line": job.line,
                                                 "worker": self.name}})
        self.jobs_run += 1
        return {"output": out.name, "sidecar": sidecar.name, "frames": result.num_frames,
                "seconds": round(time.perf_counter() - t0, 3), "engine": result.engine}


__all__ = ["Worker", "face_model_loads"]
