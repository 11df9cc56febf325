"""The "Talking Head" tab: one gradio Blocks for AUTOMATIC1111 (gradio 3.41), Forge (gradio 4.40) and the
standalone server (``python -m sadtalker_ext ui``).

Layout: source image (upload, or sent from txt2img/img2img with its prompt) and speech (upload or
microphone; text-to-speech when ``sadtalker_ext.audio.tts`` is installed) on the left; engine and every
:class:`~sadtalker_ext.options.GenerateOptions` option (built by :mod:`.controls`), Generate / Interrupt,
a progress line with a live preview frame, the output video and this session's history on the right; a
model-status panel with one download button per model set below.

The tab is four modules: this one (the handlers of :class:`TalkingHeadUI` and the entry points), its
layout (:mod:`.layout`, :class:`~.layout.TabLayout`: components and their events), the model panel
(:mod:`.models_panel`) and the status line (:mod:`.status`).

Generation runs :func:`sadtalker_ext.jobs.run_job` in a worker thread; the Generate handler is a generator
that polls the job's latest progress (frames, text, last rendered frame) and yields updates, so progress
shows in both gradio versions without gradio's own progress API. Interrupt stops the run within one chunk
and no file is left. Errors the user can fix (:class:`~sadtalker_ext.errors.TalkingHeadError`) show their
one-line message in the tab; anything unexpected shows a one-line summary and is logged with its traceback.
Optional parts (TTS, the img2img refinement panel, model status) are imported inside ``try`` blocks: when
one fails the rest of the tab still works, and :func:`build_tab` falls back to a tab that shows the error
and the fix if even the main tab cannot be built.

Optional refinement panel (``sadtalker_ext/ui/refine_panel.py``): ``build_refine_panel(host=, prompt=,
image=)``, called inside the tab's layout, below the main row, returns an object with ``inputs`` (a list of
components) and ``apply(options, *values) -> options`` (the options with the panel's schedule and checkpoint;
the run plan builds the refinement stage from them, as for every other front end). While the panel is
there, the options' own refinement section is hidden (it comes back if the panel fails to build).

The sidecar's ``source.image`` of a tab run: gradio hands the handler pixels, not a file, so the
browser tells the file's name (:data:`IMAGE_UPLOAD_JS`, :data:`IMAGE_NAME_JS`): ``{"file": "<base name of
the uploaded file>", "origin": "upload", "sha256": ...}`` when the image in the box is the file the user
uploaded; ``{"file": null, "origin": "pixels", ...}`` when it reached the tab without a file (Send to Talking
Head from txt2img/img2img, whose prompt is ``source.prompt``; a gradio 3.41 drag-and-drop outside the
WebUI). A gradio 4.40 clipboard paste is an upload of a file the browser names itself (such as
``clipboard.png``), and that name is what is recorded. The sha256 is always that of the pixels the run used. The name is client text: only its
base name is kept and no file is opened by it.

TTS (``sadtalker_ext.audio.tts``, shown only when importable): ``synthesize(text, lang)`` returning
``(AudioClip, phoneme events)`` (or just an audio path / clip), spoken in the ``language`` option;
``is_available()`` tells whether espeak-ng is installed.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import GenerationInterrupted, InputError, TalkingHeadError
from ..frontend import TAB_ID, TAB_TITLE, error_tab, host_defaults, optional_module
from ..jobs import JobHost
from ..options import GenerateOptions
from . import compat, guard
from .controls import option_specs, to_options
from .layout import TabLayout
from .models_panel import download_set, model_dirs_args, models_html, sd_checkpoint_path
from .status import error_text, small_preview, status_html

log = logging.getLogger(__name__)

POLL_S = 0.25
#: A handler yields at least this often: gradio 3.41's queue fetches each step of a generator over HTTP
#: with httpx's default 5 s timeout (httpx >= 0.25; see ``compat.relax_queue_timeout``), so a step must
#: never take that long.
HEARTBEAT_S = 1.0
#: A new live-preview picture is sent at most this often. Each is a ~150 kB PNG in the event stream; at
#: every chunk (2-4 a second with the lite engine) they made 0.5 MB/s, enough for a slow or busy browser
#: to fall behind, and gradio 3's queue drops an event whose message waits more than 1 s to be sent.
PREVIEW_INTERVAL_S = 1.0
HISTORY_MAX = 50

_last_ui: "TalkingHeadUI | None" = None

#: Longest file name recorded (a name is text the client sent: only its base name, never opened).
MAX_NAME_CHARS = 255


def source_file_name(value) -> str | None:
    """The base name of the file the client says it uploaded as the source image (client text: anything
    before the last ``/`` or ``\\`` is dropped, control characters removed, at most 255 characters), or None.
    The name is only recorded in the sidecar; no file is looked up by it."""
    if not isinstance(value, str):
        return None
    name = re.split(r"[\\/]", value)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return name or None


class TalkingHeadUI(TabLayout):
    """Builds the Blocks (:class:`~.layout.TabLayout`) and holds the handlers (each a plain method, testable
    without a browser)."""

    def __init__(self, host):
        self.host = host
        self.specs = option_specs(self._host_defaults())
        self.components: dict = {}
        self.option_components: list = []
        self.audio_components: list = []
        self.tts = optional_module("sadtalker_ext.audio.tts")
        self.refine = None
        self.refine_inputs: list = []
        self.refine_module = None
        self._refine_section = None
        self.batch = None
        self._jobs: dict = {}  # job token (kept in the session's server-side gr.State) -> JobHost
        self._active_lock = threading.Lock()

    def _host_defaults(self) -> GenerateOptions:
        return GenerateOptions(**host_defaults(self.host))

    def _split_inputs(self, values: tuple) -> dict:
        values = list(values)
        out = {"image": values.pop(0)}
        audios = [values.pop(0) for _ in self.audio_components]
        out["audio"] = next((a for a in audios if a), None)
        out["tts_text"] = values.pop(0) if self.components.get("tts_text") is not None else None
        out["prompt"] = values.pop(0)
        out["options"] = [values.pop(0) for _ in self.option_components]
        out["refine"] = [values.pop(0) for _ in self.refine_inputs]
        out["history"] = list(values.pop(0) or [])
        out["image_name"] = source_file_name(values.pop(0) if values else None)
        return out

    def generate(self, *values):
        """Generator handler of Generate: yields (status, preview, video, gallery, history, job token) updates.

        The job token goes into the session's ``gr.State`` (kept on the server): the Interrupt button of
        this session, and only of this session, hands it back to :meth:`interrupt`."""
        keep = compat.update()
        v = self._split_inputs(values)
        history = v["history"]
        try:
            image = v["image"]
            if image is None:
                raise InputError("add a source image (upload one, or use 'Send to Talking Head' in txt2img/img2img)")
            audio = v["audio"]
            if audio is not None:  # a path gradio handed over: an upload (checked again, whatever gradio did)
                audio = guard.check_file(audio, guard.file_roots(self.host), "speech file")
            tts_text = (v["tts_text"] or "").strip()
            if audio is None and not tts_text:
                raise InputError("add speech: upload an audio file, record one"
                                 + (", or type text to speak" if self.tts is not None else ""))
            opts = to_options(self.specs, v["options"])
            if self.refine is not None:  # the panel's schedule and checkpoint; the run plan builds the stage
                opts = self.refine.apply(opts, *v["refine"])
            opts = self._server_side(opts)
        except Exception as exc:
            kind, text = error_text(exc)
            if not isinstance(exc, TalkingHeadError):
                log.exception("talking head: bad input")
            yield status_html(kind, text), keep, keep, keep, history, None
            return

        from ..jobs import run_job
        job = JobHost(self.host)
        box: dict = {}
        prompt = (v["prompt"] or "").strip()
        source_info = {"prompt": prompt} if prompt else {}
        name = v["image_name"]
        source_info["image"] = {"file": name, "origin": "upload"} if name else {"file": None, "origin": "pixels"}

        def work():
            try:
                speech, extra = audio, {}
                if speech is None:
                    lang = opts.language or "en"
                    speech, events = self._synthesize(tts_text, lang)
                    source_info.update(tts_text=tts_text, tts_language=lang)
                    extra["phoneme_events"] = events
                box["result"] = run_job(job, image, speech, opts, source_info=source_info, **extra)
            except BaseException as exc:  # reported in the tab
                box["error"] = exc

        token = secrets.token_urlsafe(16)
        with self._active_lock:
            self._jobs[token] = job
        worker = threading.Thread(target=work, name="talking-head-job", daemon=True)
        t0 = time.perf_counter()
        worker.start()
        seen, last = -1, time.perf_counter()
        preview_seen, last_preview = -1, last - PREVIEW_INTERVAL_S
        try:
            yield status_html("running", "Starting (waits while another generation is running)..."), \
                None, None, keep, history, token
            while worker.is_alive():
                worker.join(POLL_S)
                if job.stop.is_set() and not job.running and worker.is_alive():
                    break  # interrupted while waiting for the host: it will not start (JobHost.job)
                version, done, total, text, preview = job.snapshot()
                now = time.perf_counter()
                if worker.is_alive() and (version != seen or now - last >= HEARTBEAT_S):
                    # a picture not sent yet goes out with a later update (a heartbeat at the latest)
                    new_frame = (preview is not None and version != preview_seen
                                 and now - last_preview >= PREVIEW_INTERVAL_S)
                    if new_frame:
                        preview_seen, last_preview = version, now
                    seen, last = version, now
                    msg = text or "Preparing (face, motion)..."
                    yield (status_html("running", f"{msg} - {now - t0:.0f} s", done, total),
                           small_preview(preview) if new_frame else keep, keep, keep, history, token)
        finally:
            with self._active_lock:
                self._jobs.pop(token, None)
        if "error" not in box and "result" not in box:  # left waiting for the host (see above)
            box["error"] = GenerationInterrupted("generation was interrupted; no video was written")
        if "error" in box:
            exc = box["error"]
            if not isinstance(exc, TalkingHeadError):
                log.error("talking head generation failed", exc_info=exc)
            kind, text = error_text(exc)
            yield status_html(kind, text), keep, None, keep, history, None
            return
        res = box["result"]
        r = res.result
        _, _, _, _, preview = job.snapshot()
        caption = f"{res.path.name} - {r.duration:.1f} s - {r.engine}"
        entry = {"path": str(res.path), "sidecar": str(res.sidecar), "caption": caption,
                 "thumb": small_preview(preview, 128)}
        history = ([entry] + history)[:HISTORY_MAX]
        text = (f"Saved {res.path} ({r.num_frames} frames, {r.duration:.2f} s, {r.size[0]}x{r.size[1]}, "
                f"engine {r.engine}, {r.seconds:.1f} s)")
        yield (status_html("done", text, r.num_frames, r.num_frames), keep, str(res.path),
               self.gallery_value(history), history, None)

    def _server_side(self, opts: GenerateOptions) -> GenerateOptions:
        """The path-valued options as the server allows them, whatever the payload said: the models folder
        is the server's; reference videos and the keyframes file must be uploads; the lip-sync debug folder
        is a name inside the output folder; the SD checkpoint a file in the models folders. Raises
        OptionError / ServerFileRefused (one line)."""
        opts.checkpoints = model_dirs_args(self.host)["checkpoints"]
        roots = guard.file_roots(self.host)
        for name in ("ref_eyeblink", "ref_pose", "refine"):
            value = getattr(opts, name)
            if isinstance(value, (str, Path)) and str(value).strip():
                setattr(opts, name, guard.check_file(value, roots, f"--{name.replace('_', '-')} file"))
        debug = guard.confined_name(opts.lipsync_debug, "the lip-sync debug folder")
        opts.lipsync_debug = (str(self.host.output_dir() / "lipsync-debug" / debug) if debug else None)
        if opts.sd_checkpoint:
            opts.sd_checkpoint = sd_checkpoint_path(self.host, opts.sd_checkpoint)
        return opts.validate()

    def _synthesize(self, text: str, lang: str | None = None) -> tuple:
        """(audio clip or path, phoneme events or None) spoken from ``text`` by ``sadtalker_ext.audio.tts``."""
        if self.tts is None or not hasattr(self.tts, "synthesize"):
            raise InputError("text-to-speech is not installed; upload or record speech instead")
        out = self.tts.synthesize(text, lang or "en")
        if isinstance(out, tuple) and len(out) == 2:
            return out[0], out[1]
        return out, None

    @staticmethod
    def gallery_value(history: list) -> list:
        out = []
        for h in history:
            thumb = h.get("thumb")
            if thumb is None:
                thumb = np.zeros((64, 64, 3), np.uint8)
            out.append((thumb, h.get("caption", "")))
        return out

    def interrupt(self, token: str | None = None):
        """Interrupt handler: stops the run of the session whose job token (its ``gr.State``) is given,
        nothing else: no other session's run, no API request (:meth:`JobHost.interrupt`)."""
        with self._active_lock:
            job = self._jobs.get(token) if isinstance(token, str) else None
        if job is None:
            return status_html("idle", "Nothing is running.")
        job.interrupt()
        return status_html("interrupted", "Interrupting: the run stops after the current chunk...")

    def select_history(self, history: list, index) -> tuple:
        if isinstance(index, (list, tuple)):
            index = index[0]
        try:
            entry = history[int(index)]
        except (TypeError, ValueError, IndexError):
            return compat.update(), compat.update()
        path = entry.get("path") if isinstance(entry, dict) else None
        if path and not guard.allowed(path, guard.output_roots(self.host)()):
            return None, status_html("error", "Error: that result is not in the output folder.")
        if not path or not Path(path).is_file():
            return None, status_html("error", f"Error: {path} no longer exists.")
        return path, status_html("done", f"Playing {path}")

    def refresh_models(self, checkpoints: str | None = None) -> str:
        return models_html(self.host, checkpoints)

    def download(self, engine: str, checkpoints: str | None = None):
        """Generator handler of a download button: yields (download status, models panel)."""
        keep = compat.update()
        state = {"name": "", "done": 0, "total": None}
        box: dict = {}

        def progress(name, done, total):
            state.update(name=name, done=done, total=total)

        def work():
            try:
                box["paths"] = download_set(self.host, engine, checkpoints, progress)
            except BaseException as exc:  # handed to the UI thread, which reports it
                box["error"] = exc

        worker = threading.Thread(target=work, name="talking-head-download", daemon=True)
        worker.start()
        yield status_html("running", f"Downloading the {engine} files..."), keep
        while worker.is_alive():
            worker.join(HEARTBEAT_S / 2)
            if worker.is_alive():
                total = state["total"]
                text = (f"{state['name']}: {state['done'] / 1e6:.1f}"
                        + (f" / {total / 1e6:.1f} MB" if total else " MB")) if state["name"] else \
                    f"Downloading the {engine} files (connecting)..."
                yield status_html("running", text, state["done"], total or 0), keep
        if "error" in box:
            kind, text = error_text(box["error"])
            yield status_html(kind, text), models_html(self.host, checkpoints)
            return
        names = ", ".join(Path(p).name for p in box["paths"]) or "nothing to do"
        yield status_html("done", f"{engine}: {names}"), models_html(self.host, checkpoints)

# --------------------------------------------------------------------------------------------- entry points
def build_blocks(host):
    """The tab's ``gr.Blocks`` for ``host`` (a :class:`~sadtalker_ext.host.base.Host`)."""
    global _last_ui
    ui = TalkingHeadUI(host)
    blocks = ui.build()
    _last_ui = ui
    return blocks


def build_tab(host):
    """``(blocks, "Talking Head", "talking_head")`` for A1111's ``script_callbacks.on_ui_tabs``.

    Never raises (except when gradio itself is missing): if the tab cannot be built, a tab showing the
    error and the fix is returned instead, so the tab never vanishes.
    """
    try:
        blocks = build_blocks(host)
    except Exception as exc:
        log.exception("talking head: the tab failed to build")
        return error_tab(exc, "the tab failed to load")
    return blocks, TAB_TITLE, TAB_ID


def send_to_targets() -> dict:
    """Components of the most recently built tab that "Send to Talking Head" fills (for the host adapter).

    Returns ``{"tabname": "talking_head", "image": <Image>, "prompt": <Textbox>, "fields": [(prompt,
    "Prompt")]}`` — ``fields`` is in the form of A1111's ``infotext_utils.add_paste_fields``; the tab is
    selected in the browser by the JS function ``switch_to_talking_head`` (javascript/talking_head.js).
    Empty dict when no tab was built (e.g. it failed to load).
    """
    ui = _last_ui
    if ui is None:
        return {}
    c = ui.components
    return {"tabname": TAB_ID, "image": c["image"], "prompt": c["prompt"], "fields": [(c["prompt"], "Prompt")]}


__all__ = ["build_tab", "build_blocks", "send_to_targets", "TalkingHeadUI", "JobHost",
           "models_html", "download_set", "status_html", "TAB_TITLE", "TAB_ID"]
