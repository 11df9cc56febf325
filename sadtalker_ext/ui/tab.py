"""The "Talking Head" tab: one gradio Blocks for AUTOMATIC1111 (gradio 3.41), Forge (gradio 4.40) and the
standalone server (``python -m sadtalker_ext ui``).

Layout: source image (upload, or sent from txt2img/img2img with its prompt) and speech (upload or
microphone; text-to-speech when ``sadtalker_ext.audio.tts`` is installed) on the left; engine and every
:class:`~sadtalker_ext.options.GenerateOptions` option (built by :mod:`.controls`), Generate / Interrupt,
a progress line with a live preview frame, the output video and this session's history on the right; a
model-status panel with one download button per model set below.

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

import html
import logging
import math
import re
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import GenerationInterrupted, InputError, TalkingHeadError
from ..frontend import SETTING_MODELS_DIR, TAB_ID, TAB_TITLE, error_tab, host_defaults, optional_module
from ..jobs import JobHost
from ..options import GenerateOptions
from . import compat, guard
from .controls import SECTIONS, initial_value, option_specs, to_options

log = logging.getLogger(__name__)

#: Options whose initial value is a host setting (kept out of the WebUI's ui-config.json).
SETTING_DRIVEN = ("engine", "precision")

POLL_S = 0.25
#: A handler yields at least this often: gradio 3.41's queue fetches each step of a generator over HTTP
#: with httpx's default 5 s timeout (httpx >= 0.25; see ``compat.relax_queue_timeout``), so a step must
#: never take that long.
HEARTBEAT_S = 1.0
#: A new live-preview picture is sent at most this often. Each is a ~150 kB PNG in the event stream; at
#: every chunk (2-4 a second with the lite engine) they made 0.5 MB/s, enough for a slow or busy browser
#: to fall behind, and gradio 3's queue drops an event whose message waits more than 1 s to be sent.
PREVIEW_INTERVAL_S = 1.0
#: Options section shown only when there is no refinement panel.
REFINE_SECTION = "Refinement (img2img)"
PREVIEW_SIDE = 256
HISTORY_MAX = 50

_last_ui: "TalkingHeadUI | None" = None


# --------------------------------------------------------------------------------------------- helpers
#: Browser side of the source image's file name (gradio 3.41 and 4.40). On the image's upload event:
#: remember the value and the file's name (gradio 4: the upload's ``orig_name``; gradio 3: the file chosen in
#: the file dialog, or dropped, which javascript/talking_head.js records in the WebUI); the file input is then
#: emptied so that a later drop never reports an older choice.
IMAGE_UPLOAD_JS = """(img) => {
  const root = (typeof gradioApp === 'function') ? gradioApp() : document;
  const input = root.querySelector('#th_image input[type=file]');
  const drop = window.talkingHeadDrop; window.talkingHeadDrop = null;
  let name = (img && typeof img === 'object' && img.orig_name) || '';
  if (!name && drop && Date.now() - drop.time < 60000) { name = drop.name; }
  if (!name && input && input.files && input.files.length) { name = input.files[0].name; }
  if (input) { try { input.value = ''; } catch (e) {} }
  window.talkingHeadUpload = {key: (img && typeof img === 'object') ? (img.path || img.url) : img, name: name};
  return [];
}"""
#: On Generate: argument %(i)d (the hidden name box, the last input) gets the remembered name when the image
#: box still holds the uploaded value, else "" (Send to Talking Head, clipboard paste, cleared box). The
#: browser calls it with the inputs' values followed by the outputs'; only the inputs are returned (gradio
#: 4.40 sends whatever is returned to the endpoint and refuses extra values: "Too many arguments").
IMAGE_NAME_JS = """(...args) => {
  const img = args[0], up = window.talkingHeadUpload;
  const key = (img && typeof img === 'object') ? (img.path || img.url) : img;
  args[%(i)d] = (up && key && up.key === key) ? up.name : '';
  return args.slice(0, %(i)d + 1);
}"""
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


def small_preview(frame: np.ndarray | None, side: int = PREVIEW_SIDE) -> np.ndarray | None:
    """``frame`` (uint8 [H, W, 3]) subsampled so that its long side is at most about ``side`` pixels."""
    if frame is None:
        return None
    frame = np.asarray(frame)
    step = max(1, math.ceil(max(frame.shape[:2]) / side))
    return np.ascontiguousarray(frame[::step, ::step, :3])


def status_html(kind: str, text: str, done: int | None = None, total: int | None = None) -> str:
    """The status line: kind is idle / running / done / error / interrupted; a bar when total > 0."""
    bar = ""
    if done is not None and total:
        pct = max(0.0, min(100.0, 100.0 * done / total))
        bar = (f'<div class="th-bar"><div class="th-bar-fill" style="width:{pct:.1f}%"></div></div>')
    return f'<div class="th-status th-{kind}">{bar}<span>{html.escape(text)}</span></div>'


def error_text(exc: BaseException) -> tuple:
    """(status kind, one-line message) for an exception raised by a run."""
    if isinstance(exc, GenerationInterrupted):
        return "interrupted", "Interrupted: no video was written."
    if isinstance(exc, TalkingHeadError):
        return "error", f"Error: {exc.message}"
    return "error", (f"Unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                     "see the console for the traceback.")


# --------------------------------------------------------------------------------------------- models
#: Options the tab shows but takes from the server only (a client never names a server folder).
SERVER_ONLY_OPTIONS = {"checkpoints": "set on the server: the models-folder setting (WebUI) or --models-dir"}
#: Boxes that show or name folders on the server: hidden unless ``host.shows_server_paths()`` (the WebUI:
#: a setting, or a WebUI that answers this machine alone); their values are the server's anyway
#: (:meth:`TalkingHeadUI._server_side`).
SERVER_PATH_OPTIONS = ("checkpoints", "lipsync_debug")
#: Options with one allowed value (``fps``: 25): no box for them.
FIXED_OPTIONS = ("fps",)


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


# --------------------------------------------------------------------------------------------- the tab
class TalkingHeadUI:
    """Builds the Blocks and holds the handlers (each handler is a plain method, testable without a browser)."""

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

    # -- defaults --------------------------------------------------------------------------------
    def _host_defaults(self) -> GenerateOptions:
        return GenerateOptions(**host_defaults(self.host))

    def auto_engine_label(self) -> str:
        try:
            from ..engines import resolve_engine_name
            where = model_dirs_args(self.host)
            name = resolve_engine_name("auto", where["checkpoints"], where["host_dir"])
            return f"auto = best available (now: {name})"
        except Exception:  # noqa: BLE001 - only a hint text; the choice itself still works
            return "auto = best available"

    # -- build -----------------------------------------------------------------------------------
    def build(self):
        gr = compat.gr()
        c = self.components
        self.refine_module = optional_module("sadtalker_ext.ui.refine_panel")
        with gr.Blocks(analytics_enabled=False) as blocks:
            with gr.Row(elem_id="th_main"):
                with gr.Column(scale=1, elem_id="th_inputs"):
                    c["image"] = compat.image_input("Source image", "th_image")
                    # the uploaded file's base name, set in the browser (IMAGE_NAME_JS); gradio hands pixels only
                    c["image_name"] = compat.make("Textbox", value="", visible=False, elem_id="th_image_name")
                    c["prompt"] = compat.make("Textbox", label="Prompt (sent with the image; default "
                                              "refinement prompt)", lines=2, elem_id="th_prompt",
                                              placeholder="filled in by 'Send to Talking Head'")
                    self.audio_components = compat.audio_inputs("Speech", "th_audio")
                    c["tts_text"] = None
                    if self.tts is not None:
                        self._build_tts()
                with gr.Column(scale=1, elem_id="th_settings"):
                    self._build_options()
                with gr.Column(scale=1, elem_id="th_outputs"):
                    with gr.Row():
                        c["generate"] = compat.make("Button", "Generate", variant="primary",
                                                    elem_id="th_generate")
                        c["interrupt"] = compat.make("Button", "Interrupt", variant="stop",
                                                     elem_id="th_interrupt")
                    c["status"] = compat.make("HTML", status_html("idle", "Ready."), elem_id="th_status")
                    c["preview"] = compat.make("Image", label="Live preview", type="numpy", interactive=False,
                                               elem_id="th_preview", height=256)
                    c["video"] = compat.make("Video", label="Output video", interactive=False,
                                             elem_id="th_video")
                    c["history"] = compat.make("Gallery", label="This session's results (click to play)",
                                               elem_id="th_history", columns=4, height=240, allow_preview=False)
                    c["history_state"] = gr.State([])
                    c["job_state"] = gr.State(None)  # this session's running job (a token; server side)
            self._build_refine_panel()
            self._build_batch_panel()
            with compat.make("Accordion", "Models", open=False, elem_id="th_models_acc"):
                c["models"] = compat.make("HTML", models_html(self.host), elem_id="th_models")
                with gr.Row():
                    c["models_refresh"] = compat.make("Button", "Refresh", elem_id="th_models_refresh",
                                                      size="sm")
                    c["download_buttons"] = {}
                    for name in self._model_sets():
                        c["download_buttons"][name] = compat.make(
                            "Button", f"Download {name} files", elem_id=f"th_download_{name}", size="sm")
                c["download_status"] = compat.make("HTML", "", elem_id="th_download_status")
            self._wire()
        # every component of ours opens only uploads and the output folder, whatever a payload names
        guard.guard_blocks(blocks, guard.output_roots(self.host))
        blocks.talking_head_ui = self
        return blocks

    def _build_tts(self):
        c = self.components
        try:
            ready = bool(self.tts.is_available()) if hasattr(self.tts, "is_available") else True
        except Exception:  # noqa: BLE001 - a broken TTS library just hides the text box (message below)
            ready = False
        info = None if ready else ("text-to-speech is unavailable here (its espeak-ng library was not found; "
                                   "restart to let install.py add it); upload speech instead")
        kw = {"info": info} if info else {}
        c["tts_text"] = compat.make("Textbox", label="Or type text to speak (used when no audio is given; "
                                    "language: 'Spoken language')", lines=3, elem_id="th_tts_text", **kw)

    def _model_sets(self) -> list:
        try:
            from ..models import registry
            names = list(registry.engine_names())
            if getattr(self.host, "provides_face_restoration", False):
                names = [n for n in names if n != HOST_PROVIDED_SET]
            return names
        except Exception:
            log.warning("model registry unavailable", exc_info=True)
            return []

    def _build_options(self):
        by_section: dict = {}
        for spec in self.specs:
            by_section.setdefault(spec.section if spec.section in SECTIONS else "Other", []).append(spec)
        made = {}
        for section in SECTIONS:
            specs = by_section.get(section, [])
            if not specs:
                continue
            if section == "main":
                for spec in specs:
                    made[spec.name] = self._control(spec)
            else:
                # the refinement options are edited in the refinement panel when there is one
                hidden = section == REFINE_SECTION and self.refine_module is not None
                with compat.make("Accordion", section, open=False, visible=not hidden,
                                 elem_id="th_sec_" + "".join(ch for ch in section.lower() if ch.isalnum())) as acc:
                    for spec in specs:
                        made[spec.name] = self._control(spec)
                if section == REFINE_SECTION:
                    self._refine_section = acc
        for name in SETTING_DRIVEN:
            if name in made:
                # the WebUI's ui-config.json stores every component's value on the first start and puts it
                # back on every start, over the value taken from the setting; this flag exempts it
                made[name].do_not_save_to_config = True
        self.option_components = [made[s.name] for s in self.specs]

    def _shows_server_paths(self) -> bool:
        shows = getattr(self.host, "shows_server_paths", None)
        try:
            return bool(shows()) if callable(shows) else False
        except Exception:  # noqa: BLE001 - when in doubt, hide them
            log.debug("shows_server_paths failed", exc_info=True)
            return False

    def _control(self, spec):
        common = dict(label=spec.label, elem_id=f"th_opt_{spec.name}")
        if spec.info:
            common["info"] = spec.info
        if spec.name in FIXED_OPTIONS or (spec.name in SERVER_PATH_OPTIONS and not self._shows_server_paths()):
            common["visible"] = False  # still an input of the handler, with its default value
        if spec.name in SERVER_ONLY_OPTIONS:  # shown, never taken from the client (see _server_side)
            common.update(interactive=False, info=SERVER_ONLY_OPTIONS[spec.name])
            return compat.make("Textbox", value=model_dirs_args(self.host)["checkpoints"] or "", **common)
        if spec.name == "engine":
            common["info"] = self.auto_engine_label()
        value = initial_value(spec)
        if spec.kind == "checkbox":
            return compat.make("Checkbox", value=bool(value), **common)
        if spec.kind == "dropdown":
            choices = ([""] if spec.optional else []) + [str(ch) for ch in spec.choices]
            if value is not None and value not in choices:
                choices.append(value)
            return compat.make("Dropdown", choices=choices, value=value, allow_custom_value=spec.custom,
                               **common)
        if spec.kind == "slider":
            return compat.make("Slider", minimum=spec.minimum, maximum=spec.maximum, step=spec.step,
                               value=value, **common)
        if spec.kind == "number":
            kw = {"precision": 0} if spec.integer else {}
            if spec.minimum is not None:
                kw["minimum"] = spec.minimum
            if spec.maximum is not None:
                kw["maximum"] = spec.maximum
            return compat.make("Number", value=value, **kw, **common)
        if spec.kind == "file":
            common.pop("info", None)
            return compat.file_input(file_types=list(spec.file_types), **common)
        lines = spec.lines if spec.lines > 1 else 1
        return compat.make("Textbox", value=value, lines=lines, **common)

    def _build_refine_panel(self):
        mod = self.refine_module
        try:
            if mod is not None:
                panel = mod.build_refine_panel(host=self.host, prompt=self.components["prompt"],
                                               image=self.components["image"])
                self.refine, self.refine_inputs = panel, list(panel.inputs)
        except Exception:
            log.warning("the img2img refinement panel failed to build; the tab works without it",
                        exc_info=True)
        finally:
            if self.refine is None and self._refine_section is not None:
                self._refine_section.visible = True  # no panel: edit the refinement options here

    def _build_batch_panel(self):
        """The Batch section (``sadtalker_ext/ui/batch_panel.py``); the tab works without it."""
        mod = optional_module("sadtalker_ext.ui.batch_panel")
        try:
            self.batch = mod.build_batch_panel(self) if mod is not None else None
        except Exception:
            log.warning("the Batch section failed to build; the tab works without it", exc_info=True)

    def _wire(self):
        c = self.components
        extra = [c["tts_text"]] if c["tts_text"] is not None else []
        self.gen_inputs = ([c["image"]] + self.audio_components + extra + [c["prompt"]]
                           + self.option_components + self.refine_inputs + [c["history_state"], c["image_name"]])
        self.gen_outputs = [c["status"], c["preview"], c["video"], c["history"], c["history_state"],
                            c["job_state"]]
        # the browser remembers which image value came from a file upload and its name; Generate sends the
        # name only while that same value is still in the image box (Send to, paste: no name)
        compat.listen(c["image"].upload, None, [c["image"]], [], js=IMAGE_UPLOAD_JS, queue=False,
                      show_progress=False)
        compat.listen(c["generate"].click, self.generate, self.gen_inputs, self.gen_outputs,
                      js=IMAGE_NAME_JS % {"i": len(self.gen_inputs) - 1}, show_progress=False)
        compat.listen(c["interrupt"].click, self.interrupt, [c["job_state"]], [c["status"]], queue=False,
                      show_progress=False)
        select_type = compat.select_data_type()

        def pick(history, evt):
            return self.select_history(history, evt.index)
        pick.__annotations__ = {"evt": select_type}  # gradio passes SelectData to a parameter of that type
        compat.listen(c["history"].select, pick, [c["history_state"]], [c["video"], c["status"]],
                      show_progress=False)
        ckpt_in = []  # the models folder is the server's (setting / --models-dir), never the client's
        compat.listen(c["models_refresh"].click, self.refresh_models, ckpt_in, [c["models"]],
                      show_progress=False)
        for name, button in c["download_buttons"].items():
            def start(*values, _name=name):
                yield from self.download(_name, *values)
            compat.listen(button.click, start, ckpt_in, [c["download_status"], c["models"]],
                          show_progress=False)

    def _option_component(self, name: str):
        for spec, comp in zip(self.specs, self.option_components):
            if spec.name == name:
                return comp
        return None

    # -- handlers --------------------------------------------------------------------------------
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
