"""HTTP API of sd-talking-head (FastAPI), mounted on the WebUI's app or the standalone server.

Routes (prefix ``/talking-head/v1``):

* ``POST /generate``: JSON ``{"image": base64, "audio": base64, "options": {...},
  "return_video": true}`` or multipart/form-data with the files ``image`` and ``audio`` (and the
  text fields ``options``, JSON, and ``return_video``). Returns the MP4 as base64 plus the saved
  file's name (see :class:`~sadtalker_ext.api.schemas.GenerateResponse`). Same limits as the tab:
  image <= 20 MB and 8192x8192, audio <= 50 MB; paths on the server are never read. Errors are
  ``{"detail": one line, "error": type}`` with a 4xx status (400 bad option, 401 auth, 413 too
  large, 415 wrong type, 422 unreadable input, 429 queue full) or 5xx (missing models/packages).
* ``GET /models``: which model files are present, their sizes (and, with auth, where they are).
* ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}``: the same
  generation as an asynchronous job (id at once, poll, fetch, cancel; at most ``max_jobs`` queued
  or running, 429 beyond), see :mod:`sadtalker_ext.api.jobs_async`.
* ``POST /generate/{id}/cancel``: stop your own synchronous ``/generate`` request, sent with the header
  ``X-Talking-Head-Job: id`` (a random id of 16-128 characters); it then answers 499.

Same origin by default: a request whose ``Origin`` header is not the server's own (or an allowed one) gets 403.

Jobs run one at a time (the host's job lock) in arrival order; ``max_waiting`` more may wait,
further requests get 429 with Retry-After. FastAPI is imported only by :func:`mount`.
"""
from __future__ import annotations

PREFIX = "/talking-head/v1"


def mount(app, host, auth=None, *, max_waiting: int = 2, prefix: str = PREFIX, limits=None, max_jobs: int = 8,
          allowed_origins=None, allowed_origin_regex=None):
    """Add the API routes to a FastAPI ``app``, running jobs on ``host``.

    auth: None (open), ``"user:pass,user2:pass2"`` (the WebUI's ``--api-auth`` format), a
    ``{user: password}`` mapping or (user, password) pairs: HTTP Basic auth on every route.
    max_waiting: requests allowed to wait while one runs. limits: :class:`inputs.Limits`.
    max_jobs: asynchronous jobs queued or running at most.
    allowed_origins: origins (``https://site.example``) whose pages may call the API besides its own;
    None reads the host's ``talking_head_api_origins`` setting. allowed_origin_regex: a regular expression
    (str or compiled) an allowed origin matches in full (the WebUI's ``--cors-allow-origins-regex``; an
    invalid one allows nothing and is logged). A request with any other ``Origin`` gets 403
    ``{"detail": one line, "error": "CrossOriginRefused"}``.
    Returns the :class:`~sadtalker_ext.api.queue.JobQueue` (``status()`` for monitoring; its
    ``jobs`` attribute is the :class:`~sadtalker_ext.api.jobs_async.JobStore`).
    Raises OptionError for malformed ``auth``.
    """
    if getattr(app, "_talking_head_api", None) is not None:  # mounted twice (e.g. a second script load)
        return app._talking_head_api
    from .routes import mount as _mount

    queue = _mount(app, host, auth=auth, max_waiting=max_waiting, prefix=prefix, limits=limits, max_jobs=max_jobs,
                   allowed_origins=allowed_origins, allowed_origin_regex=allowed_origin_regex)
    try:
        app._talking_head_api = queue
    except AttributeError:  # pragma: no cover - apps that refuse new attributes
        pass
    return queue


__all__ = ["mount", "PREFIX"]
