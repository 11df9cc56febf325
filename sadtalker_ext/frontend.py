"""What the front ends share (the tab, the HTTP API, the WebUI adapter, ``scripts/talking_head.py``).

Importable with the standard library alone (gradio and the options are imported on use), so that the
WebUI's script can still show :func:`error_tab` when the rest of the package or its dependencies fail
to import:

* the tab's title and element id in the host (:data:`TAB_TITLE`, :data:`TAB_ID`);
* the keys of the host settings the extension reads (``host.setting(key)``, the WebUI's "Talking Head"
  section; :data:`SETTING_MODELS_DIR` ...) and :func:`host_defaults`, the options they choose;
* :func:`optional_module` for optional parts (text-to-speech, the refinement panel, a host's newer
  modules): None instead of an exception;
* :func:`error_tab`: the tab shown instead of the real one when it cannot be built, with the error in
  one line, how to fix it (:func:`fix_for`) and the traceback.
"""
from __future__ import annotations

import html
import importlib
import importlib.util
import logging
import traceback
from typing import Any, Dict, Optional

from .errors import TalkingHeadError

log = logging.getLogger(__name__)

TAB_TITLE = "Talking Head"
TAB_ID = "talking_head"

#: Host settings (the WebUI's "Talking Head" section; a LocalHost's ``settings`` dict).
SETTING_MODELS_DIR = "talking_head_models_dir"
SETTING_OUTPUT_DIR = "talking_head_output_dir"
SETTING_DEFAULT_ENGINE = "talking_head_default_engine"
SETTING_PRECISION = "talking_head_precision"
SETTING_KEEP_LOADED = "talking_head_keep_models_loaded"
SETTING_SHOW_PATHS = "talking_head_show_server_paths"
#: Extra origins allowed to call the HTTP API, comma-separated; the default is none.
SETTING_ORIGINS = "talking_head_api_origins"
#: The img2img size of a host without ``sd_native_size`` (not in the WebUI's settings page; default 512).
SETTING_REFINE_NATIVE_SIZE = "talking_head_refine_native_size"


def host_defaults(host: Any) -> Dict[str, str]:
    """The options the host's settings choose: ``{"engine": ..., "precision": ...}`` for the settings that
    are set to one of the options' choices (:data:`~sadtalker_ext.options.ENGINES`, ``PRECISIONS``);
    an unset or unknown value is left out (the options' own default applies). Empty for ``host`` None."""
    from .options import ENGINES, PRECISIONS

    out = {}
    for name, key, choices in (("engine", SETTING_DEFAULT_ENGINE, ENGINES),
                               ("precision", SETTING_PRECISION, PRECISIONS)):
        value = host.setting(key, None) if host is not None else None
        if isinstance(value, str) and value in choices:
            out[name] = value
    return out


def optional_module(name: str):
    """The module ``name``, or None when it is not installed or fails to import (a failure other than
    its absence is logged with its traceback, never raised)."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - an optional part: the caller goes on without it
        log.warning("optional part %s failed to import; going on without it", name, exc_info=True)
        return None


#: import name -> pip name, for the fix shown when an import fails.
_PIP_NAMES = {"cv2": "opencv-python", "PIL": "Pillow", "skimage": "scikit-image", "av": "av",
              "soundfile": "soundfile", "scipy": "scipy",
              "onnxruntime": "onnxruntime", "pocketsphinx": "pocketsphinx", "librosa": "librosa",
              "safetensors": "safetensors", "silero_vad": "silero-vad==6.2.3"}


def mediapipe_pip_args(protobuf: Optional[str] = None) -> str:
    """What install.py installs for mediapipe in this venv, as pip arguments: the release that accepts the
    host's protobuf (0.10.9 for protobuf 3.x - both WebUIs pin 3.20.0 -, else 0.10.21) with ``--no-deps``
    and its dependencies minus opencv-contrib-python / jax (see ``install.py``'s ``MEDIAPIPE_FOR_*``)."""
    if protobuf is None:
        try:
            from importlib.metadata import version
            protobuf = version("protobuf")
        except Exception:  # noqa: BLE001 - no protobuf yet: the newer release
            protobuf = ""
    major = protobuf.split(".")[0]
    if major.isdigit() and int(major) < 4:
        return "--no-deps mediapipe==0.10.9 absl-py attrs flatbuffers matplotlib"
    return "--no-deps mediapipe==0.10.21 absl-py attrs flatbuffers matplotlib 'numpy<2'"


def fix_for(exc: BaseException) -> str:
    """One line telling a WebUI user how to fix ``exc`` (the error of a tab that could not be built)."""
    if isinstance(exc, ImportError):
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing and missing != "sadtalker_ext":
            pip_name = mediapipe_pip_args() if missing == "mediapipe" else _PIP_NAMES.get(missing, missing)
            return (f"The Python package '{missing}' is missing: restart the WebUI so that the "
                    f"extension's install.py installs it, or run '<webui python> -m pip install "
                    f"{pip_name}' and restart.")
        if missing:
            return ("The extension's files are incomplete: update or reinstall sd-talking-head "
                    "(Extensions tab -> Check for updates) and restart the WebUI.")
        return ("A library failed to load: restart the WebUI so that the extension's install.py reinstalls "
                "its requirements, or update or reinstall sd-talking-head; the console has the details.")
    if isinstance(exc, TalkingHeadError):
        return exc.message
    return ("Restart the WebUI; if this persists, update sd-talking-head and report the details "
            "below.")


def error_tab(exc: BaseException, what: str = "the tab could not be built"):
    """``(blocks, TAB_TITLE, TAB_ID)``: a tab whose one HTML component (``th_load_error``) shows ``exc`` in
    one line, how to fix it (:func:`fix_for`) and the traceback. Raises ImportError without gradio."""
    import gradio as gr

    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.HTML(f"<div id='talking_head_error' class='th-status th-error'>"
                f"<h3>{html.escape(TAB_TITLE)}: {html.escape(what)}</h3>"
                f"<p><b>Error:</b> {html.escape(message)}</p>"
                f"<p><b>Fix:</b> {html.escape(fix_for(exc))}</p>"
                f"<details><summary>Details</summary><pre>{html.escape(details)}</pre></details></div>",
                elem_id="th_load_error")
    return blocks, TAB_TITLE, TAB_ID
