"""FastAPI routes of the HTTP API (see :func:`sadtalker_ext.api.mount`)."""
import base64
import json
import logging
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..errors import AuthenticationError, CrossOriginRefused, DependencyError, InputError, TalkingHeadError
from ..frontend import SETTING_ORIGINS
from .auth import CredentialsArg, check_credentials, parse_credentials
from .inputs import (IMAGE_SUFFIX, GenerateRequestData, Limits, PayloadTooLarge, UnsupportedMediaType, loads,
                     request_from_form, request_from_json)
from .queue import JobQueue, QueueFull
from .schemas import ErrorResponse, GenerateRequest, GenerateResponse, ModelsResponse, json_schema

log = logging.getLogger(__name__)

PREFIX = "/talking-head/v1"
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 429, 499, 500, 503, 507)}


def error_response(exc: TalkingHeadError) -> JSONResponse:
    """``{"detail": one line, "error": type}`` with the error's HTTP status."""
    headers = {"Retry-After": "30"} if isinstance(exc, QueueFull) else None
    if isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Basic"}
    return JSONResponse({"detail": exc.message, "error": type(exc).__name__},
                        status_code=int(getattr(exc, "http_status", 500)), headers=headers)


_BASIC = HTTPBasic(auto_error=False)
_AUTH_MESSAGE = "wrong or missing user name/password: use HTTP Basic auth with one of the --api-auth users"


def _auth_check(creds: Optional[Dict[str, str]]):
    """``check(credentials) -> None | 401 response`` for the routes. The 401 is answered by the route
    itself: an HTTPException would reach the host's own handler, whose body differs from ours (A1111
    adds ``"error": "HTTPException"``, Forge drops ``error``)."""
    def check(credentials: Optional[HTTPBasicCredentials]) -> Optional[JSONResponse]:
        if creds is None:
            return None
        if credentials is None or not check_credentials(creds, credentials.username, credentials.password):
            return error_response(AuthenticationError(_AUTH_MESSAGE))
        return None
    return check


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the request is {int(length) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request is over {limit / 2**20:.0f} MB, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(request: Request, body: bytes) -> Dict[str, tuple]:
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    try:
        form = await Request(request.scope, receive).form()
    except AssertionError as exc:  # starlette: python-multipart is not installed
        raise DependencyError("multipart uploads need the python-multipart package (pip install "
                              "python-multipart); or send JSON with base64 files") from exc
    except Exception as exc:  # malformed multipart bodies raise parser-specific errors
        raise InputError(f"the multipart body cannot be parsed ({type(exc).__name__}); send the "
                         f"fields image, audio, options as multipart/form-data") from exc
    out: Dict[str, tuple] = {}
    try:
        for key, value in form.multi_items():
            if key in out:
                raise InputError(f"the field '{key}' was sent twice")
            if hasattr(value, "read"):
                out[key] = ("file", await value.read(), getattr(value, "filename", None),
                            getattr(value, "content_type", None))
            else:
                out[key] = ("text", value)
    finally:
        close = getattr(form, "close", None)
        if close is not None:
            await close()
    return out


#: Header with which a client names its generate request, so that it can cancel it (``POST /generate/{id}/cancel``).
JOB_HEADER = "x-talking-head-job"
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


_ORIGIN_MESSAGE = ("cross-origin request refused: the API answers its own origin only (allow more with "
                   "--cors-origins standalone, or in the WebUI with its --cors-allow-origins / "
                   f"--cors-allow-origins-regex or the {SETTING_ORIGINS} setting)")


def same_origin(request: Request, allowed, regex: "Optional[re.Pattern]" = None) -> bool:
    """True when the request has no ``Origin`` (not a browser's cross-site call), or comes from the page's own
    origin (scheme://host of the request), one of ``allowed`` (lower-case, no trailing slash) or one that
    ``regex`` matches in full (as Starlette's CORSMiddleware matches ``allow_origin_regex``)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if regex is not None and regex.fullmatch(origin.strip()):
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    host = request.headers.get("host", "").lower()
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


def _origin_route_class(allowed, regex):
    """An APIRoute class whose handler refuses a cross-origin request before anything else (auth, body,
    validation) with our own 403 body ``{"detail", "error": "CrossOriginRefused"}``: an HTTPException
    would reach the host's exception handler, whose body differs (A1111 adds ``"error": "HTTPException"``)."""
    class OriginCheckedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def checked(request: Request):
                if not same_origin(request, allowed, regex):
                    return error_response(CrossOriginRefused(_ORIGIN_MESSAGE))
                return await handler(request)
            return checked
    return OriginCheckedRoute


def _origin_regex(regex) -> "Optional[re.Pattern]":
    if regex is None or isinstance(regex, re.Pattern):
        return regex
    if not str(regex).strip():
        return None
    try:
        return re.compile(str(regex))
    except re.error as exc:
        log.warning("talking-head API: the allowed-origins regex %r is not valid (%s); it allows nothing", regex, exc)
        return None


class _Jobs:
    """Running / waiting API requests by client-chosen id (the ``X-Talking-Head-Job`` header), with the
    user who sent them: only the same id (and user) can cancel one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: Dict[str, tuple] = {}

    def add(self, job_id: Optional[str], user: Optional[str], job) -> None:
        if job_id is None:
            return
        with self._lock:
            if job_id in self._jobs:
                raise InputError(f"a job with the id in {JOB_HEADER} is already running; use a new random id")
            self._jobs[job_id] = (user, job)

    def remove(self, job_id: Optional[str]) -> None:
        if job_id is not None:
            with self._lock:
                self._jobs.pop(job_id, None)

    def cancel(self, job_id: str, user: Optional[str]) -> bool:
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None or entry[0] != user:
            return False
        entry[1].interrupt()
        return True


def mount(app, host, auth: CredentialsArg = None, *, max_waiting: int = 2, prefix: str = PREFIX,
          limits: Optional[Limits] = None, max_jobs: int = 8, allowed_origins=None,
          allowed_origin_regex=None) -> JobQueue:
    """Add the routes to ``app`` (a FastAPI app); see :func:`sadtalker_ext.api.mount`."""
    creds = parse_credentials(auth)
    queue = JobQueue(max_waiting)
    limits = limits or Limits()
    denied = _auth_check(creds)
    if allowed_origins is None:
        allowed_origins = host.setting(SETTING_ORIGINS, None) if host is not None else None
    if isinstance(allowed_origins, str):
        allowed_origins = allowed_origins.replace(";", ",").split(",")
    allowed = {str(o).strip().rstrip("/").lower() for o in (allowed_origins or ()) if str(o).strip()}
    # same origin for every route of the router (the /jobs routes too); the password is checked per route
    router = APIRouter(prefix=prefix, route_class=_origin_route_class(allowed, _origin_regex(allowed_origin_regex)))
    jobs = _Jobs()

    def user_of(credentials: Optional[HTTPBasicCredentials]) -> Optional[str]:
        return credentials.username if creds and credentials is not None else None

    def run(ticket: int, req: GenerateRequestData, job) -> Dict[str, Any]:
        from ..audio.decode import load_audio, probe_audio
        from ..io.image import load_image
        from ..jobs import run_job

        tmp = Path(tempfile.mkdtemp(prefix="talking-head-api-"))
        try:
            try:
                image_path = tmp / f"upload{IMAGE_SUFFIX.get(req.image_kind, '.png')}"
                image_path.write_bytes(req.image)
                audio_path = tmp / "upload-audio"
                audio_path.write_bytes(req.audio)
                req.image = req.audio = b""  # the files hold them now
                probe_audio(audio_path)  # header only: a bad rate or length is refused before queueing
            except BaseException:
                queue.abandon(ticket)
                raise
            # decoded only when this request's turn comes: waiting requests hold their files' bytes
            # on disk, not decoded pixels (an 8192x8192 portrait is 200 MB decoded)
            # cancelled while waiting: the ticket is given up and nothing is decoded or run
            with queue.turn(ticket, cancelled=job.stop.is_set):
                image = load_image(image_path)
                clip = load_audio(audio_path)
                shutil.rmtree(tmp, ignore_errors=True)
                done = run_job(job, image, clip, req.options, source_info=req.source)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        video = base64.b64encode(done.path.read_bytes()).decode("ascii") if req.return_video else None
        res = done.result
        return {"video": video, "filename": done.path.name, "sidecar": done.sidecar.name, "engine": res.engine,
                "frames": res.num_frames, "duration_s": float(res.duration), "seconds": round(res.seconds, 3),
                "width": int(res.size[0]), "height": int(res.size[1]), "seed": req.options.seed,
                "options": json.loads(json.dumps(req.options.to_dict(), default=str))}

    async def generate(request: Request, credentials: Optional[HTTPBasicCredentials] = Depends(_BASIC)):
        refused = denied(credentials)
        if refused is not None:
            return refused
        try:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/json" or ctype.endswith("+json"):
                body = await _read_body(request, limits.body_bytes(base64_encoded=True))
                try:
                    obj = loads(body)
                except ValueError:
                    raise InputError("the request body is not valid JSON") from None
                req = request_from_json(obj, host, limits)
            elif ctype == "multipart/form-data":
                body = await _read_body(request, limits.body_bytes(base64_encoded=False))
                req = request_from_form(await _read_form(request, body), host, limits)
            else:
                raise UnsupportedMediaType("send application/json (image and audio base64) or "
                                           "multipart/form-data (files 'image' and 'audio')")
            job_id = request.headers.get(JOB_HEADER)
            if job_id is not None and not _JOB_ID.match(job_id):
                raise InputError(f"{JOB_HEADER} must be a random id of 16-128 letters, digits, '-' or '_'")
            from ..jobs import JobHost  # imported with the first request (the pipeline comes with it)
            job = JobHost(host)  # this request's own stop flag: cancel and Interrupt stop only this job
            jobs.add(job_id, user_of(credentials), job)
            try:
                ticket = queue.reserve()
                return await run_in_threadpool(run, ticket, req, job)
            finally:
                jobs.remove(job_id)
        except TalkingHeadError as exc:
            return error_response(exc)
        except ClientDisconnect:  # the client went away while uploading: nothing was started
            log.info("talking-head API: the client disconnected before its request was complete")
            return JSONResponse({"detail": "the client disconnected before the request was complete",
                                 "error": "ClientDisconnect"}, status_code=400)
        except Exception as exc:  # a bug: one line for the client, the traceback in the log
            log.exception("talking-head API: generation failed")
            return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); see the server log",
                                 "error": type(exc).__name__}, status_code=500)

    def models(credentials: Optional[HTTPBasicCredentials] = Depends(_BASIC)):
        refused = denied(credentials)
        if refused is not None:
            return refused
        import importlib.util

        from ..models import locate

        host_dir = host.models_dir()
        # server paths only for authenticated clients (with auth every route needs it); names otherwise
        show = bool(creds)
        files = [{"name": s.name, "engine": s.engine, "state": s.state, "present": s.present, "size": s.size,
                  "expected_size": s.expected_size, "path": str(s.path) if s.path and show else None}
                 for s in locate.status(host_dir=host_dir)]
        has_torch = importlib.util.find_spec("torch") is not None
        engines = ["lite"] + [e for e in locate.available_engines(host_dir=host_dir)
                              if has_torch or e != "sadtalker"]
        return {"files": files, "available_engines": engines, "torch": has_torch,
                "search_dirs": [str(d) for d in locate.search_dirs(host_dir=host_dir)] if show else [],
                "download_dir": str(locate.download_dir(host_dir=host_dir)) if show else None,
                "queue": queue.status()}

    def cancel(job_id: str, credentials: Optional[HTTPBasicCredentials] = Depends(_BASIC)):
        """Stop the generate request sent with ``X-Talking-Head-Job: job_id`` (by the same user): the same
        per-job stop (:meth:`JobHost.interrupt`) as ``DELETE /jobs/{id}`` of an asynchronous job."""
        refused = denied(credentials)
        if refused is not None:
            return refused
        if not _JOB_ID.match(job_id or "") or not jobs.cancel(job_id, user_of(credentials)):
            return JSONResponse({"detail": "no running or waiting job of yours has that id", "error": "NotFound"},
                                status_code=404)
        return {"cancelled": True, "job": job_id}

    request_body = {"required": True, "content": {
        "application/json": {"schema": json_schema(GenerateRequest)},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image", "audio"], "properties": {
            "image": {"type": "string", "format": "binary"}, "audio": {"type": "string", "format": "binary"},
            "options": {"type": "string", "description": "JSON object of options"},
            "return_video": {"type": "boolean"}}}}}}
    router.add_api_route("/generate", generate, methods=["POST"], response_model=GenerateResponse,
                         responses=_ERRORS, openapi_extra={"requestBody": request_body},
                         summary="Portrait + speech -> talking-head video",
                         description="Runs one generation (queued: one at a time, a few waiting; 429 beyond) "
                                     "and saves it with a JSON sidecar in the output folder.")
    router.add_api_route("/models", models, methods=["GET"], response_model=ModelsResponse,
                         summary="Model files: which are present, where to put the missing ones")
    from .jobs_async import add_job_routes  # POST/GET/DELETE /jobs: asynchronous jobs
    queue.jobs = add_job_routes(router, host, creds=creds, limits=limits, prefix=prefix,
                                error_response=error_response, max_jobs=max_jobs)
    router.add_api_route("/generate/{job_id}/cancel", cancel, methods=["POST"], responses={404: {"model": ErrorResponse}},
                         summary="Cancel your own generate request",
                         description=f"Stops the /generate request that was sent with the header {JOB_HEADER}: "
                                     "job_id (a random id of 16-128 characters); that request then answers 499. "
                                     "Only that request is touched (with auth: only by the same user).")
    app.include_router(router)
    return queue


__all__ = ["mount", "error_response", "PREFIX", "QueueFull", "JobQueue"]
