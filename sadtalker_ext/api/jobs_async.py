"""Asynchronous jobs of the HTTP API: submit, poll, fetch, cancel (the D-ID / HeyGen shape).

Routes (prefix ``/talking-head/v1``; same auth, limits and error shape as ``/generate``):

* ``POST /jobs``: the body of ``POST /generate`` (JSON with base64 files, or multipart). Answers
  ``202 {"id", "status": "queued", "position", "status_url", "result_url"}`` at once, or 429 (with
  Retry-After) when ``max_jobs`` jobs are already queued or running.
* ``GET /jobs/{id}``: ``{"id", "status": queued|running|done|failed|cancelled, "progress":
  {"done", "total", "fraction", "text"}, "position", "created", "started", "finished", "seconds",
  "error": {"detail", "error"} | null, "result": {...} | null}``.
* ``GET /jobs/{id}/result``: the MP4 when done; 409 while queued/running, or with the job's own
  error when it failed or was cancelled.
* ``DELETE /jobs/{id}``: cancels a queued job at once, a running one within a chunk of frames (no
  file is left); 409 when it had already finished.

Jobs run on a worker thread of the server, one at a time (under the host's job lock, so never
beside a WebUI generation or a ``/generate`` request), in arrival order, whatever happens to the
connection that submitted them: a client may disconnect and poll later. A job is seen only by its
submitter: with ``--api-auth`` by the same user, without it by whoever holds its id, a random
144-bit token (an unknown id and someone else's job both answer 404). Finished jobs are forgotten
``keep_s`` after they end (their videos stay in the output folder) and at most ``keep_jobs`` are
kept. Inputs wait on disk in a private temporary folder, deleted when the job ends.
"""

import collections
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import AuthenticationError, GenerationInterrupted, TalkingHeadError
from .queue import QueueFull

log = logging.getLogger(__name__)

ID_BYTES = 18  # 144 random bits, URL-safe base64: 24 characters


class JobNotFound(TalkingHeadError):
    """No such job for this client (unknown, expired, or submitted by someone else): HTTP 404."""

    http_status = 404


class JobNotReady(TalkingHeadError):
    """The job has no video (yet): HTTP 409."""

    http_status = 409


@dataclass
class AsyncJob:
    """One submitted job; ``state`` is queued, running, done, failed or cancelled."""

    id: str
    owner: Optional[str]
    request: Any  # GenerateRequestData; its file bytes are dropped once written to ``folder``
    folder: Path
    image_path: Path
    audio_path: Path
    created: float = field(default_factory=time.time)
    state: str = "queued"
    started: Optional[float] = None
    finished: Optional[float] = None
    error: Optional[Dict[str, str]] = None
    result: Optional[Dict[str, Any]] = None
    output: Optional[Path] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    job_host: Any = None


class JobStore:
    """Queue, worker thread and registry of asynchronous jobs (see the module docstring).

    max_jobs: jobs queued or running at most (more are refused with QueueFull). keep_s / keep_jobs:
    how long and how many finished jobs stay visible.
    """

    def __init__(self, host, *, max_jobs: int = 8, keep_s: float = 3600.0, keep_jobs: int = 200):
        if max_jobs < 1:
            raise ValueError("max_jobs must be >= 1")
        self.host = host
        self.max_jobs = int(max_jobs)
        self.keep_s = float(keep_s)
        self.keep_jobs = int(keep_jobs)
        self._jobs: "collections.OrderedDict[str, AsyncJob]" = collections.OrderedDict()
        self._queue: "collections.deque[AsyncJob]" = collections.deque()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    # -- client side --------------------------------------------------------------------------------
    def submit(self, req, owner: Optional[str]) -> AsyncJob:
        """Queue a validated request (GenerateRequestData). Raises QueueFull."""
        from .inputs import IMAGE_SUFFIX
        with self._cond:
            self._expire()
            active = sum(1 for j in self._jobs.values() if j.state in ("queued", "running"))
            if active >= self.max_jobs:
                raise QueueFull(f"the talking-head job queue is full ({active} jobs queued or running); "
                                f"try again in a minute")
            job_id = secrets.token_urlsafe(ID_BYTES)
            # reserve the slot before the (slow) disk write, so that a burst cannot overshoot
            placeholder = AsyncJob(id=job_id, owner=owner, request=None, folder=Path(), image_path=Path(),
                                   audio_path=Path(), state="queued")
            self._jobs[job_id] = placeholder
        folder = None
        try:
            folder = Path(tempfile.mkdtemp(prefix="talking-head-job-"))
            image_path = folder / f"upload{IMAGE_SUFFIX.get(req.image_kind, '.png')}"
            image_path.write_bytes(req.image)
            audio_path = folder / "upload-audio"
            audio_path.write_bytes(req.audio)
            from ..audio.decode import probe_audio
            probe_audio(audio_path)  # header only: a bad sample rate or length is a 4xx now, not a failed job
        except BaseException:
            with self._cond:
                self._jobs.pop(job_id, None)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        req.image = req.audio = b""  # the bytes live on disk now
        with self._cond:
            placeholder.request, placeholder.folder = req, folder
            placeholder.image_path, placeholder.audio_path = image_path, audio_path
            if placeholder.cancel.is_set():  # cancelled while its files were being written
                self._finish(placeholder, "cancelled")
                return placeholder
            self._queue.append(placeholder)
            self._start_worker()
            self._cond.notify_all()
        return placeholder

    def get(self, job_id: str, owner: Optional[str]) -> AsyncJob:
        """The job if ``owner`` submitted it, else JobNotFound (also for unknown or expired ids)."""
        with self._cond:
            self._expire()
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
            if job is None or not secrets.compare_digest(str(job.owner), str(owner)):
                raise JobNotFound("no such job (unknown, expired after an hour, or submitted by another "
                                  "user); submit it again with POST /talking-head/v1/jobs")
            return job

    def cancel(self, job_id: str, owner: Optional[str]) -> AsyncJob:
        """Cancel a queued or running job; JobNotReady (409) when it has already finished."""
        job = self.get(job_id, owner)
        with self._cond:
            if job.state in ("done", "failed", "cancelled"):
                raise JobNotReady(f"the job has already finished ({job.state}); nothing to cancel")
            job.cancel.set()
            if job.state == "queued" and job in self._queue:
                self._queue.remove(job)
                self._finish(job, "cancelled")
            elif job.job_host is not None:
                job.job_host.interrupt()  # stops this job only, within one chunk
        return job

    def position(self, job: AsyncJob) -> int:
        """0 for a running job, 1 for the next one, ...; -1 when finished."""
        with self._cond:
            if job.state == "running":
                return 0
            if job.state != "queued":
                return -1
            try:
                return 1 + list(self._queue).index(job)
            except ValueError:  # being written to disk
                return len(self._queue) + 1

    def describe(self, job: AsyncJob, prefix: str) -> Dict[str, Any]:
        """The JSON of ``GET /jobs/{id}``."""
        done = total = 0
        text = ""
        if job.job_host is not None:
            _, done, total, text, _ = job.job_host.snapshot()
        if job.state == "done" and job.result:
            done = total = job.result["frames"]
        seconds = None
        if job.started is not None:
            seconds = round((job.finished or time.time()) - job.started, 3)
        return {"id": job.id, "status": job.state,
                "progress": {"done": int(done), "total": int(total),
                             "fraction": round(done / total, 4) if total else (1.0 if job.state == "done" else 0.0),
                             "text": text},
                "position": self.position(job), "created": _iso(job.created), "started": _iso(job.started),
                "finished": _iso(job.finished), "seconds": seconds, "error": job.error, "result": job.result,
                "status_url": f"{prefix}/jobs/{job.id}", "result_url": f"{prefix}/jobs/{job.id}/result"}

    def status(self) -> Dict[str, int]:
        with self._cond:
            states = collections.Counter(j.state for j in self._jobs.values())
        return {"queued": states["queued"], "running": states["running"], "max_jobs": self.max_jobs}

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what is queued, stop the running job and the worker thread (tests, server shutdown)."""
        with self._cond:
            self._closed = True
            while self._queue:
                self._finish(self._queue.popleft(), "cancelled")
            for job in self._jobs.values():
                if job.state == "running" and job.job_host is not None:
                    job.cancel.set()
                    job.job_host.interrupt()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- worker side --------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="talking-head-jobs", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(timeout=60.0)
                    self._expire()
                if self._closed and not self._queue:
                    return
                job = self._queue.popleft()
                from ..jobs import JobHost
                job.job_host = JobHost(self.host)
                if job.cancel.is_set():
                    job.job_host.stop.set()
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: AsyncJob) -> None:
        from ..audio.decode import load_audio
        from ..io.image import load_image
        from ..jobs import run_job
        req = job.request
        try:
            image = load_image(job.image_path)
            clip = load_audio(job.audio_path)
            res = run_job(job.job_host, image, clip, req.options, source_info=req.source)
            r = res.result
            result = {"filename": res.path.name, "sidecar": res.sidecar.name, "engine": r.engine,
                      "frames": int(r.num_frames), "duration_s": float(r.duration), "width": int(r.size[0]),
                      "height": int(r.size[1]), "seed": req.options.seed, "seconds": round(r.seconds, 3)}
            with self._cond:
                job.result, job.output = result, res.path
                self._finish(job, "done")
        except GenerationInterrupted as exc:
            with self._cond:
                job.error = {"detail": "the job was cancelled; no video was written" if job.cancel.is_set()
                             else exc.message, "error": "Cancelled" if job.cancel.is_set() else type(exc).__name__}
                self._finish(job, "cancelled" if job.cancel.is_set() else "failed")
        except TalkingHeadError as exc:
            with self._cond:
                job.error = {"detail": exc.message, "error": type(exc).__name__}
                self._finish(job, "failed")
        except Exception as exc:  # a bug: one line for the client, the traceback in the log
            log.exception("talking-head API: job %s failed", job.id[:6])
            with self._cond:
                job.error = {"detail": f"internal error ({type(exc).__name__}); see the server log",
                             "error": type(exc).__name__}
                self._finish(job, "failed")

    def _finish(self, job: AsyncJob, state: str) -> None:
        """Under ``_cond``: final state, inputs deleted."""
        job.state, job.finished = state, time.time()
        if state == "cancelled" and job.error is None:
            job.error = {"detail": "the job was cancelled; no video was written", "error": "Cancelled"}
        if job.folder and str(job.folder) not in ("", "."):
            shutil.rmtree(job.folder, ignore_errors=True)
        job.request = None
        self._cond.notify_all()

    def _expire(self) -> None:
        """Under ``_cond``: forget finished jobs older than keep_s, and the oldest beyond keep_jobs."""
        now = time.time()
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for j in finished:
            if now - j.finished > self.keep_s:
                self._jobs.pop(j.id, None)
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for j in finished[:max(0, len(finished) - self.keep_jobs)]:
            self._jobs.pop(j.id, None)


def _iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


async def read_generate_request(request, host, limits):
    """The body of ``POST /generate`` or ``POST /jobs`` as GenerateRequestData (JSON or multipart,
    size-limited while it is read). Raises TalkingHeadError subclasses."""

    from ..errors import InputError
    from .inputs import UnsupportedMediaType, loads, request_from_form, request_from_json
    from .routes import _read_body, _read_form
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        body = await _read_body(request, limits.body_bytes(base64_encoded=True))
        try:
            obj = loads(body)  # nested beyond the parser's recursion: MalformedRequest (400)
        except ValueError:
            raise InputError("the request body is not valid JSON") from None
        return request_from_json(obj, host, limits)
    if ctype == "multipart/form-data":
        body = await _read_body(request, limits.body_bytes(base64_encoded=False))
        return request_from_form(await _read_form(request, body), host, limits)
    raise UnsupportedMediaType("send application/json (image and audio base64) or "
                               "multipart/form-data (files 'image' and 'audio')")


def add_job_routes(router, host, *, creds, limits, prefix: str, error_response, max_jobs: int = 8) -> JobStore:
    """Add the ``/jobs`` routes to ``router`` (FastAPI APIRouter).

    creds: the parsed ``--api-auth`` users (None: open); each route checks the password itself and
    answers 401 with the API's error shape (an HTTPException would reach the host's own handler, whose
    body differs). error_response(exc) -> the API's ``{"detail", "error"}`` response. Returns the JobStore.
    """
    from fastapi import Depends, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.security import HTTPBasic, HTTPBasicCredentials
    from starlette.requests import ClientDisconnect

    store = JobStore(host, max_jobs=max_jobs)
    basic = HTTPBasic(auto_error=False)

    from .auth import check_credentials

    def owner_of(credentials: Optional[HTTPBasicCredentials]) -> Optional[str]:
        """The job owner's user name (None without --api-auth); AuthenticationError on a wrong password."""
        if not creds:
            return None
        if credentials is None or not check_credentials(creds, credentials.username, credentials.password):
            raise AuthenticationError("wrong or missing user name/password: use HTTP Basic auth with one of "
                                      "the --api-auth users")
        return credentials.username

    async def submit(request: Request, credentials: Optional[HTTPBasicCredentials] = Depends(basic)):
        try:
            owner = owner_of(credentials)
            req = await read_generate_request(request, host, limits)
            from starlette.concurrency import run_in_threadpool
            job = await run_in_threadpool(store.submit, req, owner)
            body = store.describe(job, prefix)
            return JSONResponse({k: body[k] for k in ("id", "status", "position", "status_url", "result_url")},
                                status_code=202, headers={"Location": body["status_url"]})
        except TalkingHeadError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return JSONResponse({"detail": "the client disconnected before the request was complete",
                                 "error": "ClientDisconnect"}, status_code=400)

    def status(job_id: str, credentials: Optional[HTTPBasicCredentials] = Depends(basic)):
        try:
            owner = owner_of(credentials)
            return JSONResponse(store.describe(store.get(job_id, owner), prefix))
        except TalkingHeadError as exc:
            return error_response(exc)

    def result(job_id: str, credentials: Optional[HTTPBasicCredentials] = Depends(basic)):
        try:
            owner = owner_of(credentials)
            job = store.get(job_id, owner)
            if job.state != "done":
                if job.error is not None:
                    raise JobNotReady(f"the job {job.state}: {job.error['detail']}")
                raise JobNotReady(f"the job is {job.state}; poll GET {prefix}/jobs/{job_id} until its status is done")
            if job.output is None or not job.output.is_file():
                raise JobNotFound("the job's video is no longer in the output folder")
            return FileResponse(str(job.output), media_type="video/mp4", filename=job.output.name)
        except TalkingHeadError as exc:
            return error_response(exc)

    def cancel(job_id: str, credentials: Optional[HTTPBasicCredentials] = Depends(basic)):
        try:
            owner = owner_of(credentials)
            job = store.cancel(job_id, owner)
            return JSONResponse({"id": job.id, "status": job.state if job.state == "cancelled" else "cancelling"})
        except TalkingHeadError as exc:
            return error_response(exc)

    from .schemas import ErrorResponse
    errs = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 415, 422, 429)}
    router.add_api_route("/jobs", submit, methods=["POST"], status_code=202, responses=errs,
                         summary="Submit a job (same body as /generate); returns its id at once")
    router.add_api_route("/jobs/{job_id}", status, methods=["GET"], responses=errs,
                         summary="A job's status and progress")
    router.add_api_route("/jobs/{job_id}/result", result, methods=["GET"], responses=errs,
                         summary="The finished job's MP4", response_class=FileResponse)
    router.add_api_route("/jobs/{job_id}", cancel, methods=["DELETE"], responses=errs, summary="Cancel a job")
    return store


__all__ = ["JobStore", "AsyncJob", "JobNotFound", "JobNotReady", "add_job_routes"]
