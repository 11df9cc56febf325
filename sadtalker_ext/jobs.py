"""One generation job as the tab and the HTTP API run it: host lock, progress, interrupt, output
file in the host's output folder, and a JSON sidecar with everything needed to reproduce it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import GenerationInterrupted
from .host.base import Host
from .options import GenerateOptions
from .io.digest import sha256_file as _sha256_file
from .pipeline import Result, _host_restorer, generate

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """A saved video: ``path`` (mp4), ``sidecar`` (json) and the pipeline's Result."""

    path: Path
    sidecar: Path
    result: Result


def output_name(host: Host, options: GenerateOptions, stem: str = "talking-head") -> Path:
    """Reserve a new file name in the host's output folder: <date>-<time>-<engine>-<seed>[-N].mp4,
    <engine> being the engine that runs ("auto" resolved as the run resolves it: sadtalker when its
    files are found in ``options.checkpoints`` / the host's models folder, else lite).

    The name is taken atomically: the file is created empty with ``O_CREAT | O_EXCL``, so two jobs
    started in the same second (in threads or processes) never get the same name. The caller
    replaces it with the finished video (:meth:`VideoWriter.commit` renames onto it) or removes it
    (:func:`release_output`). A name whose JSON sidecar already exists is skipped too.
    Raises OutputError when the folder cannot be written or 1000 names are taken.
    """
    from .errors import OutputError

    folder = host.output_dir()
    from .engines import resolve_engine_name

    engine = resolve_engine_name(options.engine, options.checkpoints, host.models_dir())
    base = time.strftime("%Y%m%d-%H%M%S") + f"-{engine}-{options.seed}"
    for i in range(1000):
        p = folder / f"{base}{'' if i == 0 else f'-{i}'}.mp4"
        if os.path.lexists(p.with_suffix(".json")):
            continue
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create a video in {folder}: {exc.strerror or exc}; check the output "
                              f"folder setting") from None
        os.close(fd)
        return p
    raise OutputError(f"1000 videos named {base}* already exist in {folder}; clean up the output folder")


def release_output(path: Path) -> None:
    """Remove a name reserved by :func:`output_name` that never got its video (still 0 bytes)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:  # already gone, or replaced by a video
        pass


@contextlib.contextmanager
def _released_on_failure(path: Path | None):
    try:
        yield
    except BaseException:
        if path is not None:
            release_output(path)
        raise


def write_sidecar(out: Path, result: Result, options: GenerateOptions, source_info: dict | None = None,
                  extra: dict | None = None) -> Path:
    """Write ``out``'s JSON sidecar (``<out>.json``: every parameter, for reproduction) atomically
    (a hidden temporary file renamed onto the name). ``extra`` adds top-level keys. Returns its path."""
    sidecar = Path(out).with_suffix(".json")
    meta = {
        "extension": "sd-talking-head", "version": __version__, "engine": result.engine,
        "options": options.to_dict(), "seed": options.seed, "frames": result.num_frames,
        "duration_s": result.duration, "size": list(result.size), "seconds": round(result.seconds, 3),
        "info": {k: v for k, v in result.info.items() if isinstance(v, (str, int, float, bool, list, dict))},
        "source": source_info or {}, "python": platform.python_version(),
    }
    meta.update(extra or {})
    tmp = sidecar.with_name("." + sidecar.name + ".part")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(sidecar)
    return sidecar


def describe_input(value, what: str) -> dict:
    """What the sidecar records of one input (``what``: "image" or "audio"): for a file its name and the
    sha256 of its bytes; for an array (the tab's uploaded pixels) or an AudioClip (decoded speech) no
    name, the sha256 of its bytes (``sha256_of`` says which) and its shape / sample rate. Never raises."""
    try:
        if isinstance(value, (str, os.PathLike)):
            p = Path(value)
            return {"file": p.name, "sha256": _sha256_file(p), "bytes": p.stat().st_size}
        samples = getattr(value, "samples", None)
        if samples is not None:  # AudioClip
            a = np.ascontiguousarray(samples, dtype=np.float32)
            return {"file": None, "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
                    "sha256_of": "float32 mono samples", "sample_rate": int(value.sample_rate)}
        a = np.ascontiguousarray(value)
        return {"file": None, "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
                "sha256_of": f"{a.dtype} pixels {list(a.shape)}"}
    except Exception as exc:  # noqa: BLE001 - a description must never fail the saved video
        log.debug("cannot describe the %s input: %s", what, exc)
        return {}


def run_job(host: Host, image, audio, options: GenerateOptions, *, source_info: dict | None = None,
            out: Path | None = None, stages=(), phoneme_events=None) -> JobResult:
    """Run one generation under the host's job lock; save video + sidecar. Raises TalkingHeadError.

    ``phoneme_events`` (e.g. from text-to-speech) are passed on to :func:`~sadtalker_ext.pipeline.generate`.

    The run is :func:`~sadtalker_ext.pipeline.plan_run`'s with this host: a host with an
    ``engine_for(options)`` method (the WebUI adapter) supplies the engine, so that its models folder is
    searched and loaded models are reused across runs; ``options.refine`` runs its img2img refinement on
    the host's model (``host.img2img``) unless ``options`` names an ``sd_checkpoint`` or ``stages``
    already holds a refinement stage.
    """
    options = options.validate()
    reserved = out is None
    out = out or output_name(host, options)
    with _released_on_failure(out if reserved else None), host.job("talking-head", 0):
        # the plan (pipeline.plan_run) takes the engine, models folder, callbacks and img2img model from the host
        result = generate(image, audio, out, options, host=host, stages=stages, phoneme_events=phoneme_events,
                          restorer=_host_restorer(host, options))
    sidecar = write_sidecar(out, result, options, describe_sources(result, image, audio, source_info))
    return JobResult(path=result.path, sidecar=sidecar, result=result)


def describe_sources(result: Result, image, audio, source_info: dict | None = None, video=None) -> dict:
    """The sidecar's "source": what :func:`describe_input` records of the image (or the ``video``) and
    the audio, with the run's speech duration, plus ``source_info``. A dict under ``source_info``'s
    "image" / "video" / "audio" is merged into that input's record (the tab passes the uploaded file's
    name this way, as it hands over pixels); other keys are added as they are."""
    audio_info = {**describe_input(audio, "audio"), "duration_s": round(float(result.duration), 3)}
    pictures = {"video": describe_input(video, "video")} if video is not None else {
        "image": describe_input(image, "image")}
    out = {**pictures, "audio": audio_info}
    for key, value in (source_info or {}).items():
        out[key] = {**out[key], **value} if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


class JobHost:
    """The host as one job (one tab session's run, one API request) sees it: records the latest progress
    and preview frame and adds a per-job stop flag on top of ``host.interrupted()``. Everything else is
    delegated to ``host``.

    :meth:`interrupt` stops this job only: it sets the job's own flag and, only while this job holds the
    host's job lock (:meth:`job`), also calls ``host.interrupt()`` so that a long host call inside it
    (the WebUI's img2img) stops early. A job that waits for the lock, or another client's job, is never
    touched.
    """

    def __init__(self, host):
        self._host = host
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.running = False
        self.done = 0
        self.total = 0
        self.text = ""
        self.preview = None
        self.version = 0

    def __getattr__(self, name):
        return getattr(self._host, name)

    @contextlib.contextmanager
    def job(self, name: str, total: int):
        """The host's job context; while inside it this job is the one running on the host."""
        with self._host.job(name, total):
            if self.stop.is_set():  # interrupted while it waited for the host: nothing is started
                raise GenerationInterrupted("generation was interrupted before it started; no video was written")
            with self._lock:
                self.running = True
            try:
                yield
            finally:
                with self._lock:
                    self.running = False

    def interrupt(self) -> bool:
        """Stop this job (see the class doc). Returns True when it was running on the host."""
        self.stop.set()
        with self._lock:  # the job cannot leave the host's lock while we hold ours
            if not self.running:
                return False
            stop = getattr(self._host, "interrupt", None)
            if callable(stop):
                try:
                    stop()
                except Exception:  # noqa: BLE001 - the job's own flag stops it within one chunk anyway
                    log.debug("host interrupt failed", exc_info=True)
            return True

    def progress(self, done: int, total: int, text: str = "", preview=None) -> None:
        with self._lock:
            self.done, self.total, self.text = int(done), int(total), str(text)
            if preview is not None:
                self.preview = preview
            self.version += 1
        try:
            self._host.progress(done, total, text, preview)
        except Exception:  # the host's progress display must never break a run
            log.debug("host progress failed", exc_info=True)

    def interrupted(self) -> bool:
        if self.stop.is_set():
            return True
        try:
            return bool(self._host.interrupted())
        except Exception:  # noqa: BLE001 - a host that cannot answer is treated as not interrupted; the poll must not break the run
            return False

    def snapshot(self) -> tuple:
        with self._lock:
            return self.version, self.done, self.total, self.text, self.preview


__all__ = ["JobResult", "JobHost", "run_job", "describe_sources", "output_name", "release_output", "write_sidecar", "GenerationInterrupted"]
