"""HTTP API of sd-talking-head (FastAPI), mounted on the WebUI's app or the standalone server.

Routes (prefix ``/talking-head/v1``):

* ``POST /generate``: JSON ``{"image": base64, "audio": base64, "options": {...},
  "return_video": true}`` or multipart/form-data with the files ``image`` and ``audio`` (and the
  text fields ``options``, JSON, and ``return_video``). Returns the MP4 as base64 plus the saved
  file's name (see :class:`~sadtalker_ext.api.schemas.GenerateResponse`). Same limits as the tab:
  image <= 20 MB and 8192x8192, audio <= 50 MB; paths on the server are never read. Errors are
  ``{"detail": one line, "error": type}`` with a 4xx status (400 bad option, 401 auth, 413 too
  large, 415 wrong type, 422 unreadable input, 429 queue full) or 5xx (missing models/packages).
* ``GET /models``: which model files are present, their sizes, where to put missing ones.
* ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}``: the same
  generation as an asynchronous job (id at once, poll, fetch, cancel; at most ``max_jobs`` queued
  or running, 429 beyond), see :mod:`sadtalker_ext.api.jobs_async`.

Jobs run one at a time (the host's job lock) in arrival order; ``max_waiting`` more may wait,
further requests get 429 with Retry-After. FastAPI is imported only by :func:`mount`.
"""
from __future__ import annotations

PREFIX = "/talking-head/v1"


def mount(app, host, auth=None, *, max_waiting: int = 2, prefix: str = PREFIX, limits=None, max_jobs: int = 8):
    """Add the API routes to a FastAPI ``app``, running jobs on ``host``.

    auth: None (open), ``"user:pass,user2:pass2"`` (the WebUI's ``--api-auth`` format), a
    ``{user: password}`` mapping or (user, password) pairs: HTTP Basic auth on every route.
    max_waiting: requests allowed to wait while one runs. limits: :class:`inputs.Limits`.
    max_jobs: asynchronous jobs queued or running at most.
    Returns the :class:`~sadtalker_ext.api.queue.JobQueue` (``status()`` for monitoring; its
    ``jobs`` attribute is the :class:`~sadtalker_ext.api.jobs_async.JobStore`).
    Raises OptionError for malformed ``auth``.
    """
    if getattr(app, "_talking_head_api", None) is not None:  # mounted twice (e.g. a second script load)
        return app._talking_head_api
    from .routes import mount as _mount

    queue = _mount(app, host, auth=auth, max_waiting=max_waiting, prefix=prefix, limits=limits, max_jobs=max_jobs)
    try:
        app._talking_head_api = queue
    except AttributeError:  # pragma: no cover - apps that refuse new attributes
        pass
    return queue


__all__ = ["mount", "PREFIX"]
