"""A thin layer over the gradio differences between AUTOMATIC1111 (gradio 3.41.2) and Forge (gradio 4.40).

Every component of the tab is made through :func:`make`, which drops keyword arguments the running gradio
does not know (gradio 4 raises on unknown ones; gradio 3 warns) and translates the renamed ones:

=====================  ================================  ==========================================
what                   gradio 3.41                       gradio 4.40
=====================  ================================  ==========================================
input sources          ``source="upload"`` (one)         ``sources=["upload", "microphone"]``
image editing tool     ``tool="editor"``                 removed (``gr.ImageEditor``)
JS of an event         ``_js="fn"``                      ``js="fn"``
update of a component  ``gr.update`` / ``gr.X.update``   ``gr.update`` only
layout tweaks          ``.style(height=...)``            constructor arguments only
queue                  ``queue(concurrency_count=n)``    ``queue(default_concurrency_limit=n)``
=====================  ================================  ==========================================

So the tab only ever uses constructor arguments, ``gr.update`` (:func:`update`), :func:`listen` for events
and :func:`audio_inputs` (gradio 3 cannot offer upload and microphone in one component: two are made, in
tabs). Audio inputs pass the file through untouched (:func:`raw_audio_files`: no ffmpeg needed). gradio is
imported lazily, on first use.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence

_params_cache: dict = {}


def gr():
    """The gradio module (imported on first use). Analytics are switched off before the import."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio
    return gradio


def version() -> tuple:
    """gradio's version as a tuple of ints, e.g. (3, 41, 2)."""
    parts = []
    for p in gr().__version__.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def major() -> int:
    return version()[0]


def _accepted(cls) -> tuple:
    """Names of the keyword arguments ``cls.__init__`` takes, and whether it also takes ``**kwargs``."""
    if cls not in _params_cache:
        params = inspect.signature(cls.__init__).parameters
        names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
        _params_cache[cls] = (frozenset(names), var_kw)
    return _params_cache[cls]


def translate_kwargs(cls, kwargs: dict) -> dict:
    """``kwargs`` made valid for ``cls`` of the running gradio: ``sources`` <-> ``source``, unknown names dropped.

    ``sources`` (list, gradio 4 style) becomes ``source`` = its first item on gradio 3; ``source`` (str)
    becomes ``sources=[source]`` on gradio 4. ``tool`` only survives where the class takes it.
    """
    names, _ = _accepted(cls)
    out = dict(kwargs)
    if "sources" in out and "sources" not in names:
        srcs = out.pop("sources")
        if "source" in names and srcs:
            out["source"] = srcs[0] if isinstance(srcs, (list, tuple)) else srcs
    if "source" in out and "source" not in names:
        src = out.pop("source")
        if "sources" in names and src:
            out["sources"] = [src]
    return {k: v for k, v in out.items() if k in names}


def make(kind: str, *args, **kwargs):
    """``gr.<kind>(*args, **kwargs)`` with the arguments adapted to the running gradio (see module doc)."""
    cls = getattr(gr(), kind)
    return cls(*args, **translate_kwargs(cls, kwargs))


def update(**kwargs) -> dict:
    """A component update (``gr.update``), the same in gradio 3 and 4."""
    return gr().update(**kwargs)


def listen(event: Callable, fn: Callable | None, inputs=None, outputs=None, *, js: str | None = None,
           **kwargs):
    """Wire ``event`` (e.g. ``button.click``) with ``js`` passed as ``_js`` (gradio 3) or ``js`` (gradio 4).

    Other keyword arguments (``queue``, ``show_progress``, ``concurrency_limit``...) are dropped when the
    running gradio's listener does not take them. ``show_progress`` True/False becomes "full"/"hidden" on
    gradio 4. Returns the event's dependency object.
    """
    params = inspect.signature(event).parameters
    call = {"fn": fn, "inputs": inputs if inputs is not None else [],
            "outputs": outputs if outputs is not None else []}
    if js is not None:
        call["js" if "js" in params else "_js"] = js
    for k, v in kwargs.items():
        if k == "show_progress" and isinstance(v, bool) and major() >= 4:
            v = "full" if v else "hidden"
        if k in params:
            call[k] = v
    return event(**call)


def raw_audio_files(component):
    """Make an input ``gr.Audio`` hand over the uploaded / recorded file as it is (a path), without gradio's
    own decoding: gradio decodes every non-wav file with pydub, which needs the ffmpeg program, while the
    pipeline reads any format itself (PyAV). On gradio 3 a clip trimmed in the audio editor still goes
    through gradio's decoding (it applies the trim). Returns ``component``."""
    original = component.preprocess

    if major() >= 4:
        def preprocess(payload):
            if payload is None:
                return None
            path = getattr(payload, "path", None)
            if path is None and isinstance(payload, dict):
                path = payload.get("path")
            return str(path) if path else original(payload)
    else:
        def preprocess(x):
            if x is None:
                return None
            if not isinstance(x, dict) or (x.get("crop_min", 0), x.get("crop_max", 100)) != (0, 100):
                return original(x)
            name, data = x.get("name"), x.get("data")
            if x.get("is_file", False):
                if str(name).startswith(("http://", "https://")):
                    return original(x)
                return component.make_temp_copy_if_needed(name)
            return component.base64_to_temp_file_if_needed(data, name)
    component.preprocess = preprocess
    return component


def audio_inputs(label: str, elem_id: str) -> list:
    """Audio input by upload or microphone, as a list of components (values: file paths or None).

    gradio 4: one ``gr.Audio(sources=["upload", "microphone"])``. gradio 3: an "Upload" and a "Record"
    tab, one ``gr.Audio`` each (``elem_id`` and ``elem_id + "_mic"``). The first non-empty value wins.
    """
    g = gr()
    if "sources" in _accepted(g.Audio)[0]:
        return [raw_audio_files(make("Audio", label=label, sources=["upload", "microphone"], type="filepath",
                                     elem_id=elem_id))]
    with g.Tabs():
        with g.Tab("Upload"):
            up = make("Audio", label=label, source="upload", type="filepath", elem_id=elem_id)
        with g.Tab("Record"):
            mic = make("Audio", label=label + " (microphone)", source="microphone", type="filepath",
                       elem_id=elem_id + "_mic")
    return [raw_audio_files(up), raw_audio_files(mic)]


def image_input(label: str, elem_id: str):
    """An uploadable (and, on gradio 4, pasteable) RGB image whose value is a uint8 numpy array."""
    return make("Image", label=label, sources=["upload", "clipboard"], type="numpy", image_mode="RGB",
                elem_id=elem_id, interactive=True)


def file_input(label: str, elem_id: str, file_types: Sequence[str] = (), **kwargs):
    """A single-file upload whose value is a path (gradio 4 ``type="filepath"``) or a tempfile wrapper with
    ``.name`` (gradio 3 ``type="file"``); :func:`sadtalker_ext.ui.controls.convert` accepts both."""
    kind = "filepath" if major() >= 4 else "file"
    return make("File", label=label, elem_id=elem_id, file_types=list(file_types) or None, type=kind,
                file_count="single", **kwargs)


def select_data_type():
    """``gr.SelectData`` (the argument type that makes gradio pass the selected gallery index)."""
    return gr().SelectData


def enable_queue(blocks, concurrency: int = 2):
    """Turn the queue on (needed for generator handlers) with ``concurrency`` workers."""
    params = inspect.signature(blocks.queue).parameters
    if "default_concurrency_limit" in params:
        return blocks.queue(default_concurrency_limit=concurrency)
    if "concurrency_count" in params:
        return blocks.queue(concurrency_count=concurrency)
    return blocks.queue()


#: gradio 3's queue gives up on a browser (and drops its event) when one message cannot be sent within
#: 1 s; a busy or distant browser gets this long instead.
QUEUE_SEND_TIMEOUT_S = 15.0


def relax_queue_timeout(blocks) -> bool:
    """gradio 3 only: let the queue wait as long as a step takes, and a slow browser a while.

    gradio 3.41's queue runs every step of an event through an HTTP request to its own server, with an
    ``httpx.AsyncClient`` whose default timeout (5 s) httpx >= 0.25 applies to each step (the 0.24.1 the
    WebUI pins does not), so a step longer than 5 s, e.g. while a C extension of a running job holds the
    GIL, kills the event and freezes the progress display. It also sends each update to the browser with
    a 1 s limit and silently drops the event when a browser reads late (the run goes on, its page never
    hears of it again); that limit becomes ``QUEUE_SEND_TIMEOUT_S``. Call after ``blocks.queue()``
    (before or after launch); for the standalone server only (the WebUI's queue is the host's).
    Returns True when a gradio 3 queue was adjusted.
    """
    q = getattr(blocks, "_queue", None)
    if q is None or not hasattr(q, "queue_client") or major() >= 4:
        return False
    import httpx

    send = getattr(q, "send_message", None)
    if callable(send) and not getattr(q, "_th_send_relaxed", False):
        async def send_message(event, data, timeout=1):
            return await send(event, data, timeout=max(timeout, QUEUE_SEND_TIMEOUT_S))
        q.send_message = send_message
        q._th_send_relaxed = True

    def relax():
        if getattr(q, "queue_client", None) is not None:
            q.queue_client.timeout = httpx.Timeout(None)

    if not getattr(q, "_th_relaxed", False):
        original = q.start

        async def start(*args, **kwargs):
            result = await original(*args, **kwargs)
            relax()
            return result
        q.start = start
        q._th_relaxed = True
    relax()
    return True


def launch(blocks, host: str, port: int, allowed_paths: Sequence[str] = (), **kwargs):
    """``blocks.launch`` on ``host:port`` without blocking; returns ``(fastapi_app, local_url)``."""
    params = inspect.signature(blocks.launch).parameters
    call = dict(server_name=host, server_port=port, prevent_thread_lock=True, share=False,
                inbrowser=False, allowed_paths=list(allowed_paths), show_error=True)
    call.update(kwargs)
    call = {k: v for k, v in call.items() if k in params}
    app, local_url, _ = blocks.launch(**call)
    return app, local_url


def mount_blocks(app, blocks, path: str = "/", auth=None, allowed_paths: Sequence[str] = ()):
    """Serve ``blocks`` under ``path`` of a FastAPI ``app`` with gradio's own ``gr.mount_gradio_app``
    (3.41 and 4.40), with gradio's login (``auth``: list of (user, password)) and ``allowed_paths``.
    Returns gradio's mounted app (the one with the ``/file=`` route)."""
    g = gr()
    params = inspect.signature(g.mount_gradio_app).parameters
    kwargs = {}
    if "auth" in params:                       # gradio 4: the mount takes them
        kwargs.update(auth=auth, allowed_paths=list(allowed_paths), show_error=True)
    else:                                      # gradio 3: launch() would have set them on the Blocks
        blocks.auth = list(auth) if auth else None
        blocks.auth_message = getattr(blocks, "auth_message", None)
        blocks.allowed_paths = list(allowed_paths)
        blocks.blocked_paths = list(getattr(blocks, "blocked_paths", None) or [])
        blocks.show_error = True
    g.mount_gradio_app(app, blocks, path, **kwargs)
    mounted = [r for r in app.routes if getattr(r, "path", None) in (path.rstrip("/"), path)
               and hasattr(r, "app")][-1].app
    blocks.server_app = mounted
    return mounted


def component_names(blocks) -> dict:
    """``{elem_id: component}`` of every component of ``blocks`` that has an ``elem_id`` (for tests)."""
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def dependencies(blocks) -> list:
    """The wired events of ``blocks`` as dicts with ``targets``, ``trigger``, ``inputs`` and ``outputs`` ids."""
    out = []
    for dep in blocks.config.get("dependencies", []) if hasattr(blocks, "config") else []:
        targets = dep.get("targets", [])
        ids, triggers = [], []
        for t in targets:
            if isinstance(t, (list, tuple)):   # gradio 4: [block_id, "click"]
                ids.append(t[0])
                triggers.append(t[1])
            else:                              # gradio 3: block ids, trigger separate
                ids.append(t)
                triggers.append(dep.get("trigger"))
        out.append({"targets": ids, "triggers": triggers, "inputs": list(dep.get("inputs", [])),
                    "outputs": list(dep.get("outputs", [])), "js": dep.get("js")})
    return out


__all__ = ["gr", "version", "major", "make", "update", "listen", "audio_inputs", "image_input",
           "file_input", "select_data_type", "enable_queue", "relax_queue_timeout", "launch", "mount_blocks", "translate_kwargs", "raw_audio_files", "component_names",
           "dependencies"]
