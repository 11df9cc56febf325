"""``python -m sadtalker_ext ui``: the tab's Blocks served on their own, with a :class:`LocalHost`.

Like the WebUI, it launches gradio without blocking, then mounts the HTTP API
(``sadtalker_ext.api.mount(app, host)``) on the same FastAPI app when that module is there, then waits.
Binds to 127.0.0.1 unless told otherwise.
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
    from . import compat
    from .tab import TAB_TITLE, build_blocks
    gr = compat.gr()
    tab = build_blocks(host)  # built outside the page, then rendered into it, as the WebUI does
    with gr.Blocks(title=TAB_TITLE, css=read_css(), analytics_enabled=False) as page:
        compat.make("HTML", f'<h2 class="th-title">{TAB_TITLE}</h2>')
        tab.render()
    page.talking_head_ui = tab.talking_head_ui
    return page


def mount_api(app, host) -> bool:
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
        mount(app, host, auth=None)
    except Exception:
        log.warning("the HTTP API failed to mount; serving the UI only", exc_info=True)
        return False
    return True


def serve(host: str = "127.0.0.1", port: int = 7861, output_dir: str | os.PathLike = "outputs/talking-head",
          models_dir: str | os.PathLike | None = None, block: bool = True, settings: dict | None = None):
    """Serve the UI on ``host:port``; blocks until Ctrl-C when ``block``. Returns ``(blocks, url)``.

    Raises:
        DependencyError: gradio is not installed. OptionError: the address cannot be served (port in use).
    """
    import importlib.util

    from ..errors import DependencyError
    from . import compat
    if importlib.util.find_spec("gradio") is None:
        raise DependencyError('the web UI needs gradio: pip install "gradio==3.41.2" "fastapi==0.94.0" '
                              "(or run it inside the WebUI)")
    local = LocalHost(output_dir=output_dir, models_dir=models_dir, settings=settings)
    out = local.output_dir().resolve()
    page = create(local)
    compat.enable_queue(page, concurrency=4)
    compat.relax_queue_timeout(page)
    try:
        app, url = compat.launch(page, host, port, allowed_paths=[str(out)])
    except OSError as exc:
        from ..errors import OptionError
        raise OptionError(f"cannot serve on {host}:{port} ({' '.join(str(exc).split())[:200]}); "
                          "choose another --port or --host") from None
    if hasattr(app, "cwd"):  # gradio 3 serves any file under app.cwd (the process's folder) at /file=
        app.cwd = str(out)   # only the output folder (and gradio's own temp/upload files) then
    if mount_api(app, local):
        log.info("HTTP API mounted under /talking-head/v1")
    print(f"Talking Head UI on {url} (outputs in {out})", flush=True)
    if block:
        try:
            page.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            page.close()
    return page, url
