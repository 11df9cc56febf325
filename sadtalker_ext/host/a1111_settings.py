"""The WebUI adapter's settings and HTTP API wiring (part of :mod:`sadtalker_ext.host.a1111`, which re-exports
these names).

* :data:`SETTINGS`: the "Talking Head" section of the WebUI's settings page (``shared.opts``, keys
  :data:`sadtalker_ext.frontend.SETTING_*`), registered by :func:`on_ui_settings` (its own settings category on
  v1.6+; turning "Keep models loaded" off releases the models at once);
* :func:`on_app_started` mounts the HTTP API (``/talking-head/v1/*``) on the WebUI's FastAPI app, behind
  :func:`api_credentials` (``--api-auth``, else the UI's own users) and open to :func:`api_origins`.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from ..frontend import (SETTING_DEFAULT_ENGINE, SETTING_KEEP_LOADED, SETTING_MODELS_DIR, SETTING_ORIGINS,
                        SETTING_OUTPUT_DIR, SETTING_PRECISION, SETTING_SHOW_PATHS, TAB_ID, TAB_TITLE)
from ..options import ENGINES, PRECISIONS, GenerateOptions

SECTION = (TAB_ID, TAB_TITLE)
DEFAULT_OUTPUT_DIR = os.path.join("outputs", "talking-head")
#: Choices of the default-engine / precision settings: the options' own (sadtalker_ext.options).
ENGINE_CHOICES = list(ENGINES)
PRECISION_CHOICES = list(PRECISIONS)

#: The extension's settings: key -> (default, label, note).
SETTINGS: Dict[str, Tuple[Any, str, str]] = {
    SETTING_MODELS_DIR: (
        "", "Models folder (SadTalker / Wav2Lip files)",
        "empty: models/SadTalker; the --talking-head-models-dir flag overrides this"),
    SETTING_OUTPUT_DIR: (
        DEFAULT_OUTPUT_DIR, "Output folder for videos and their JSON sidecars",
        "relative paths are inside the WebUI's data folder"),
    SETTING_DEFAULT_ENGINE: (
        GenerateOptions().engine, "Default engine", "auto: SadTalker when its model files and PyTorch are present, else lite"),
    SETTING_PRECISION: (
        GenerateOptions().precision, "Precision of the neural renderer",
        "fp16/bf16: faster on CUDA GPUs, slightly different frames; bf16 also on CPUs that have it natively"),
    SETTING_KEEP_LOADED: (
        True, "Keep models loaded between runs", "off: free the memory after every video"),
    SETTING_SHOW_PATHS: (
        False, "Show server folders in the tab (Checkpoint folder, lip-sync debug folder)",
        "off: shown only while the WebUI answers this machine alone (no --listen, --share, --ngrok, "
        "or --server-name other than localhost)"),
    SETTING_ORIGINS: (
        "", "Other sites allowed to call the Talking Head HTTP API",
        "comma-separated origins like https://site.example; empty: the WebUI's own pages only; restart to apply"),
}


def _on_keep_loaded_changed() -> None:
    from .a1111 import get_host, release_models

    if not get_host().setting(SETTING_KEEP_LOADED, True):
        release_models()


def on_ui_settings() -> None:
    """Register the "Talking Head" settings section (see :data:`SETTINGS`)."""
    from modules import shared

    try:
        import gradio as gr
        radio = gr.Radio
    except ImportError:  # pragma: no cover - the WebUI always has gradio
        radio = None
    items = {}
    for key, (default, label, note) in SETTINGS.items():
        component, args, onchange = None, None, None
        if key == SETTING_DEFAULT_ENGINE:
            component, args = radio, {"choices": ENGINE_CHOICES}
        elif key == SETTING_PRECISION:
            component, args = radio, {"choices": PRECISION_CHOICES}
        elif key == SETTING_KEEP_LOADED:
            onchange = _on_keep_loaded_changed
        info = shared.OptionInfo(default, label, component, args, onchange=onchange)
        items[key] = info.info(note) if note else info
    section = SECTION
    try:  # v1.6+: a category of our own, so the settings page does not list us under "Uncategorized"
        from modules.options import categories
        categories.register_category(SECTION[0], SECTION[1])
        section = (*SECTION, SECTION[0])
    except (ImportError, AttributeError):
        pass
    for key, info in shared.options_section(section, items).items():
        shared.opts.add_option(key, info)


def api_credentials() -> Optional[Dict[str, str]]:
    """Users allowed on our API routes: ``--api-auth`` ("user:pass,user2:pass2"); when only the UI
    is protected (``--gradio-auth`` / ``--gradio-auth-path``) those users, so the API is never more
    open than the UI. None when neither is set."""
    from modules import shared

    from ..api.auth import parse_credentials

    opts = shared.cmd_opts
    spec = getattr(opts, "api_auth", None)
    if not spec:
        parts = [getattr(opts, "gradio_auth", None) or ""]
        auth_path = getattr(opts, "gradio_auth_path", None)
        if auth_path and os.path.isfile(auth_path):
            with open(auth_path, encoding="utf8") as f:
                parts += [line.strip() for line in f if line.strip()]
        spec = ",".join(p for p in parts if p)
    return parse_credentials(spec) if spec else None


def api_origins(host=None) -> Tuple[list, Optional[str]]:
    """(origins, regex) that may call our API besides the WebUI's own pages: the ``talking_head_api_origins``
    setting plus the WebUI's own ``--cors-allow-origins`` (comma-separated), and its
    ``--cors-allow-origins-regex`` (None when unset): sites the WebUI's owner allowed are allowed by us too."""
    from modules import shared

    if host is None:
        from .a1111 import get_host
        host = get_host()
    parts = [host.setting(SETTING_ORIGINS, None) or "", getattr(shared.cmd_opts, "cors_allow_origins", None) or ""]
    origins = [o.strip() for p in parts for o in str(p).replace(";", ",").split(",") if o.strip()]
    regex = getattr(shared.cmd_opts, "cors_allow_origins_regex", None) or None
    return origins, regex


def on_app_started(demo, app) -> None:
    """Mount ``/talking-head/v1/*`` on the WebUI's FastAPI app, behind :func:`api_credentials`, open to the
    WebUI's own pages and :func:`api_origins`."""
    from .. import api
    from .a1111 import get_host

    host = get_host()
    origins, regex = api_origins(host)
    api.mount(app, host, auth=api_credentials(), allowed_origins=origins, allowed_origin_regex=regex)
