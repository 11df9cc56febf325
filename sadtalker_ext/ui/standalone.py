"""``python -m sadtalker_ext ui``: the tab's Blocks served on their own, with a :class:`LocalHost`.

One FastAPI app holds the HTTP API (``sadtalker_ext.api.mount(app, host)``) and the page (gradio's own
``gr.mount_gradio_app``), behind the defences of :mod:`.server` (same origin, ``/file=`` limited to the output
folder and uploads, header timeout), served by uvicorn in a thread. Binds to 127.0.0.1 unless told otherwise;
another address needs ``auth`` (or ``insecure``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..host.base import LocalHost

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def read_css() -> str:
    """The extension's ``style.css`` (the WebUI loads it by itself; standalone passes it to Blocks)."""
    p = REPO_ROOT / "style.css"
    try:
        return p.read_text(encoding="utf-8")
    except OSError:
        return ""


def create(host: LocalHost):
    """The standalone Blocks: the tab inside a page with a title and the extension's CSS."""
    from ..frontend import TAB_TITLE
    from . import compat
    from .tab import build_blocks
    gr = compat.gr()
    tab = build_blocks(host)  # built outside the page, then rendered into it, as the WebUI does
    with gr.Blocks(title=TAB_TITLE, css=read_css(), analytics_enabled=False) as page:
        compat.make("HTML", f'<h2 class="th-title">{TAB_TITLE}</h2>')
        tab.render()
    page.talking_head_ui = tab.talking_head_ui
    return page


def mount_api(app, host, auth=None, cors_origins=()) -> bool:
    """Mount the HTTP API when ``sadtalker_ext.api.mount`` exists; False (logged) when it does not."""
    try:
        from .. import api
    except Exception:
        log.warning("the HTTP API failed to import; serving the UI only", exc_info=True)
        return False
    mount = getattr(api, "mount", None)
    if mount is None:
        return False
    try:
        mount(app, host, auth=auth, allowed_origins=cors_origins)
    except Exception:
        log.warning("the HTTP API failed to mount; serving the UI only", exc_info=True)
        return False
    return True


def serve(host: str = "127.0.0.1", port: int = 7861, output_dir: str | os.PathLike = "outputs/talking-head",
          models_dir: str | os.PathLike | None = None, block: bool = True, settings: dict | None = None, *,
          auth=None, insecure: bool = False, cors_origins=None, header_timeout: float | None = None):
    """Serve the UI (and the HTTP API) on ``host:port``; blocks until Ctrl-C when ``block``. Returns
    ``(blocks, url)``; ``blocks.talking_head_server.close()`` stops a non-blocking server.

    Security defaults (see :mod:`.server`): same origin only (``cors_origins``: origins also allowed, a
    comma-separated string or a list); ``/file=`` serves only the output folder and gradio's uploads and never
    fetches a URL; connections must send their headers within ``header_timeout`` s (default 10);
    ``auth`` (``"user:pass,user2:pass2"``, a mapping or pairs) protects the page (gradio's login) and the API
    (HTTP Basic). A ``host`` other than a loopback address is refused without ``auth`` unless ``insecure``.

    Raises:
        DependencyError: gradio is not installed. OptionError: the address cannot be served (port in use),
        a non-loopback host without auth, malformed ``auth`` or ``cors_origins``.
    """
    import importlib.util

    from ..errors import DependencyError, OptionError
    from . import compat, server
    if importlib.util.find_spec("gradio") is None:
        raise DependencyError('the web UI needs gradio: pip install "gradio==3.41.2" "fastapi==0.94.0" '
                              "(or run it inside the WebUI)")
    from ..api.auth import parse_credentials
    creds = parse_credentials(auth)
    origins = server.parse_origins(cors_origins)
    if not server.is_loopback(host) and not creds:
        if not insecure:
            raise OptionError(f"refusing to serve on {host} without a password: anyone on the network could run "
                              "jobs and read the outputs; add --auth user:password (or --insecure to accept that)")
        log.warning("serving on %s without authentication (--insecure)", host)
    local = LocalHost(output_dir=output_dir, models_dir=models_dir, settings=settings)
    out = local.output_dir().resolve()
    page = create(local)
    compat.enable_queue(page, concurrency=4)
    compat.relax_queue_timeout(page)

    from fastapi import FastAPI
    from starlette.middleware.cors import CORSMiddleware
    app = FastAPI(docs_url="/docs", redoc_url=None)  # the API's interactive docs; before the page's "/"
    if mount_api(app, local, auth=creds, cors_origins=origins):  # before the page: "/" takes everything after
        log.info("HTTP API mounted under /talking-head/v1")
    gradio_app = compat.mount_blocks(app, page, "/", auth=sorted(creds.items()) if creds else None,
                                     allowed_paths=[str(out)])
    if hasattr(gradio_app, "cwd"):  # gradio 3 serves any file under app.cwd (the process's folder) at /file=
        gradio_app.cwd = str(out)   # only the output folder (and gradio's own temp/upload files) then
    app.add_middleware(server.FileRouteGuard, roots=server.file_roots(out))
    app.add_middleware(server.OriginGuard, allowed=origins)
    if origins:  # outermost: the allowed origins get CORS headers (starlette's own middleware)
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=True)
    srv = server.ThreadedServer(app, host, port, header_timeout=header_timeout or server.HEADER_TIMEOUT_S)
    try:
        srv.start()
    except OSError as exc:
        raise OptionError(f"cannot serve on {host}:{port} ({' '.join(str(exc).split())[:200]}); "
                          "choose another --port or --host") from None
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{port}/"
    q = getattr(page, "_queue", None)
    if q is not None and hasattr(q, "set_url"):  # gradio 3's queue calls its own server over HTTP
        q.set_url(f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}/")
    page.server, page.server_name, page.server_port, page.local_url = srv, host, port, url
    page.is_running = True
    page.talking_head_server = srv
    print(f"Talking Head UI on {url} (outputs in {out})", flush=True)
    if block:
        try:
            while srv.thread.is_alive():
                srv.thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            close(page)
    return page, url


def close(page) -> None:
    """Stop a server started by :func:`serve` (the queue, then the HTTP server)."""
    q = getattr(page, "_queue", None)
    try:
        if q is not None and hasattr(q, "close"):
            q.close()
    except Exception:  # noqa: BLE001 - closing anyway
        log.debug("queue close failed", exc_info=True)
    srv = getattr(page, "talking_head_server", None)
    if srv is not None:
        srv.close()
    page.is_running = False
