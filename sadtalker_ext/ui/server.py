"""The standalone server's network defences (``python -m sadtalker_ext ui``); nothing here runs in the WebUI.

The page is mounted with gradio's own ``gr.mount_gradio_app`` inside an outer FastAPI app that we serve with
uvicorn ourselves, so that these layers come before anything of gradio's:

* :class:`FileRouteGuard`: ``/file=`` and ``/file/`` answer only for files whose real location (symlinks
  resolved) is inside the output folder or gradio's upload / temp folders; a URL there is answered 404 at once
  (gradio 3.41 would ``requests.head`` it inside the event loop: the whole server hangs, and it is an SSRF).
* :class:`OriginGuard`: same origin by default. A request whose ``Origin`` is neither the page's own nor in
  the allowed list is refused (403, websockets closed) and no response carries gradio's
  ``access-control-allow-origin: *``; allowed origins get starlette's ``CORSMiddleware``.
* :func:`header_timeout_protocol`: uvicorn has no limit on how long a client may take to send a request's
  headers (slowloris); this protocol class closes a connection whose headers are not complete in time.

Authentication is gradio's own (``blocks.auth``: login page, the queue's cookie) for the page and HTTP Basic
for the API (:func:`sadtalker_ext.api.mount`), with the same ``user:password`` pairs.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence
from urllib.parse import urlsplit

from . import guard

log = logging.getLogger(__name__)

#: Seconds a client has to send a request's headers (from the connection or the previous response).
HEADER_TIMEOUT_S = 10.0
FILE_PREFIXES = ("/file=", "/file/")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and every other address."""
    name = (host or "").strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_origins(spec) -> List[str]:
    """Allowed origins from ``"https://a.example,http://b.example:8080"`` or a list; each is
    ``scheme://host[:port]`` (no path). Raises OptionError for anything else."""
    from ..errors import OptionError
    if spec is None:
        return []
    items = spec.replace(";", ",").split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        item = str(item).strip().rstrip("/")
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise OptionError(f"allowed origins look like https://site.example or http://host:port, got {item[:80]!r}")
        out.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return out


def _header(scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class OriginGuard:
    """ASGI middleware: refuse cross-origin requests (see the module doc); ``allowed``: extra origins."""

    def __init__(self, app, allowed: Sequence[str] = ()):
        self.app = app
        self.allowed = {o.lower() for o in allowed}

    def origin_ok(self, scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None or origin.lower() in self.allowed:
            return True
        host = _header(scope, b"host") or ""
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower() and bool(host)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if not self.origin_ok(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            return await _plain(send, 403, "cross-origin request refused: this server answers its own pages only "
                                           "(allow an origin with --cors-origins)")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        keep = _header(scope, b"origin") is not None and _header(scope, b"origin").lower() in self.allowed

        async def send_filtered(message):
            if message["type"] == "http.response.start" and not keep:
                message = dict(message)
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if not k.lower().startswith(b"access-control-")]
            await send(message)
        return await self.app(scope, receive, send_filtered)


class FileRouteGuard:
    """ASGI middleware for gradio's file routes: only files inside ``roots()`` (real paths), never a URL."""

    def __init__(self, app, roots: Callable[[], Iterable[os.PathLike]]):
        self.app = app
        self.roots = roots

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            for prefix in FILE_PREFIXES:
                if path.startswith(prefix):
                    target = path[len(prefix):]
                    if guard.is_url(target) or target.lower().startswith(("http:", "https:", "//")):
                        return await _plain(send, 404, "URLs are not fetched by this server")
                    if not guard.allowed(target, list(self.roots())):
                        return await _plain(send, 403, "only files of the output folder and this page's "
                                                       "uploads are served")
                    break
        return await self.app(scope, receive, send)


def header_timeout_protocol(base=None, seconds: float = HEADER_TIMEOUT_S):
    """A uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) that closes a connection whose request
    headers are not complete within ``seconds`` of the connection (or of the previous response)."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base

    class HeaderTimeoutProtocol(base):
        header_timeout = float(seconds)

        def _th_arm(self) -> None:
            self._th_cancel()
            self._th_seen = getattr(self, "cycle", None)
            self._th_timer = self.loop.call_later(self.header_timeout, self._th_expire)

        def _th_cancel(self) -> None:
            timer = getattr(self, "_th_timer", None)
            if timer is not None:
                timer.cancel()
            self._th_timer = None

        def _th_expire(self) -> None:
            self._th_timer = None
            if getattr(self, "cycle", None) is self._th_seen and not self.transport.is_closing():
                log.info("closing a connection that sent no complete request headers in %.0f s", self.header_timeout)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._th_arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if getattr(self, "cycle", None) is not getattr(self, "_th_seen", None):
                self._th_cancel()  # a request's headers are complete: the app has it now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._th_arm()

        def handle_websocket_upgrade(self, *args, **kwargs):
            self._th_cancel()
            return super().handle_websocket_upgrade(*args, **kwargs)

        def connection_lost(self, exc) -> None:
            self._th_cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class ThreadedServer:
    """uvicorn serving ``app`` in a daemon thread (no signal handlers: the caller's main thread owns Ctrl-C)."""

    def __init__(self, app, host: str, port: int, header_timeout: float = HEADER_TIMEOUT_S):
        import uvicorn

        class _Server(uvicorn.Server):
            def install_signal_handlers(self):
                pass
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                http=header_timeout_protocol(seconds=header_timeout), timeout_keep_alive=5,
                                ws_max_size=64 * 1024 * 1024)
        self.server = _Server(config)
        self.thread = threading.Thread(target=self._run, name="sd-talking-head-http", daemon=True)
        self.error: Optional[BaseException] = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it listens. Raises OSError when the address cannot be served."""
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or self.error is not None:
                raise OSError(f"the server did not start ({self.error or 'address in use?'})")
            if time.monotonic() > end:
                raise OSError("the server did not start in time")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def file_roots(output_dir: Path) -> Callable[[], List[Path]]:
    """What ``/file=`` may serve: the output folder and gradio's upload / temp folders."""
    def roots() -> List[Path]:
        return [Path(output_dir)] + guard.upload_roots()
    return roots


__all__ = ["OriginGuard", "FileRouteGuard", "header_timeout_protocol", "ThreadedServer", "is_loopback",
           "parse_origins", "file_roots", "HEADER_TIMEOUT_S"]
