"""The tab's model panel and the server-side model folders (:mod:`sadtalker_ext.models.locate`).

:func:`models_html` is the panel (one row per registered file, where files go, which engines can run),
:func:`download_set` what a download button fetches; :func:`model_dirs_args` the folders the host and
the form name; :func:`sd_checkpoint_path` accepts a form's SD checkpoint only inside those folders.
"""
from __future__ import annotations

import html
from pathlib import Path

from ..frontend import SETTING_MODELS_DIR
from . import guard
from .status import error_text, status_html


def sd_checkpoint_path(host, value: str) -> str:
    """The SD checkpoint a form names (a file or diffusers folder name, or a path), accepted only inside
    the folders the server searches for models. Raises OptionError (one line)."""
    from ..errors import OptionError
    from ..models import locate
    try:
        where = model_dirs_args(host)
        dirs = [Path(d) for d in locate.search_dirs(where["checkpoints"], where["host_dir"])]
    except Exception:  # noqa: BLE001 - no models folder known: nothing can be named
        dirs = []
    text = str(value).strip()
    candidates = [Path(text)] if Path(text).is_absolute() else [d / text for d in dirs]
    for cand in candidates:
        if cand.exists() and guard.allowed(cand, dirs):
            return str(cand)
    raise OptionError("the SD checkpoint must be a model file (or diffusers folder) inside the models folder "
                      f"({', '.join(str(d) for d in dirs[:3]) or 'none configured'}); give its name")


def model_dirs_args(host, checkpoints: str | None = None) -> dict:
    """Keyword arguments for :mod:`sadtalker_ext.models.locate` from the host and the form."""
    explicit = (checkpoints or "").strip() or None
    if explicit is None:
        explicit = (host.setting(SETTING_MODELS_DIR, None) or "").strip() or None
    try:
        host_dir = host.models_dir()
    except Exception:  # noqa: BLE001 - no host models folder: search the other folders only
        host_dir = None
    return {"checkpoints": explicit, "host_dir": host_dir}


#: The model set a host with its own face restorers (``host.provides_face_restoration``: the WebUI's
#: GFPGAN / CodeFormer, used by the lip-sync stage) does not need: not shown as missing, no download button.
HOST_PROVIDED_SET = "restoration"


def models_html(host, checkpoints: str | None = None) -> str:
    """The model-status panel: one row per registered file, where files go, which engines can run."""
    from ..models import locate, registry
    try:
        where = model_dirs_args(host, checkpoints)
        dirs = locate.search_dirs(where["checkpoints"], where["host_dir"])
        states = locate.status(None, dirs)
        available = locate.available_engines(dirs)
        target = locate.download_dir(where["checkpoints"], where["host_dir"])
    except Exception as exc:  # the panel reports, it never breaks the tab
        kind, text = error_text(exc)
        return status_html("error", f"Model status unavailable: {text}")
    rows = []
    host_restores = bool(getattr(host, "provides_face_restoration", False))
    for s in states:
        css = s.state
        if host_restores and s.engine == HOST_PROVIDED_SET and not (s.present and s.state == locate.OK):
            state, css = "not needed: the WebUI's own face restoration is used", "host"
        elif s.present and s.state == locate.OK:
            state = "present"
        elif s.state == locate.MISSING:
            state = "missing" if s.spec.required else "missing (optional)"
        else:
            state = s.state.replace("-", " ")
        size = registry.format_size(s.size if s.size is not None else s.spec.display_size)
        rows.append(f'<tr class="th-model-{html.escape(css)}"><td>{html.escape(s.name)}</td>'
                    f"<td>{html.escape(s.engine)}</td><td>{size}</td><td>{html.escape(state)}</td>"
                    f"<td>{html.escape(str(s.path) if s.path else '-')}</td></tr>")
    folders = "".join(f"<li>{html.escape(str(d))}{'' if d.is_dir() else ' (does not exist)'}</li>"
                      for d in dirs)
    engines = ", ".join(["lite (no files needed)"] + available)
    return (f'<div class="th-models"><p><b>Engines ready:</b> {html.escape(engines)}</p>'
            '<table><thead><tr><th>file</th><th>set</th><th>size</th><th>status</th><th>path</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>'
            f"<p>Put model files in <code>{html.escape(str(target))}</code> (or use a download button). "
            f"Searched, in order:</p><ol>{folders}</ol></div>")


def download_set(host, engine: str, checkpoints: str | None = None, progress=None) -> list:
    """Download the default files of ``engine`` that are missing; returns the paths. Raises DownloadError."""
    from ..models import download as dl, locate, registry
    where = model_dirs_args(host, checkpoints)
    dirs = locate.search_dirs(where["checkpoints"], where["host_dir"])
    dest = locate.download_dir(where["checkpoints"], where["host_dir"])
    per_file = None if progress is None else (lambda spec: lambda done, total: progress(spec.name, done, total))
    return dl.download_missing(registry.default_downloads(engine), dirs, dest, progress_for=per_file)
