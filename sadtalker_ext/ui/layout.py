"""The tab's layout: :class:`TabLayout` builds the Blocks (inputs, one control per option, outputs, the
optional refinement and batch panels, the model panel) and wires their events to the handlers of
:class:`~sadtalker_ext.ui.tab.TalkingHeadUI`, its subclass (see :mod:`.tab` for the whole tab).
"""
from __future__ import annotations

import logging

from ..frontend import optional_module
from . import compat, guard
from .controls import SECTIONS, initial_value
from .models_panel import HOST_PROVIDED_SET, model_dirs_args, models_html
from .status import status_html

log = logging.getLogger(__name__)

#: Options whose initial value is a host setting (kept out of the WebUI's ui-config.json).
SETTING_DRIVEN = ("engine", "precision")
#: Options section shown only when there is no refinement panel.
REFINE_SECTION = "Refinement (img2img)"
#: Options the tab shows but takes from the server only (a client never names a server folder).
SERVER_ONLY_OPTIONS = {"checkpoints": "set on the server: the models-folder setting (WebUI) or --models-dir"}
#: Boxes that show or name folders on the server: hidden unless ``host.shows_server_paths()`` (the WebUI:
#: a setting, or a WebUI that answers this machine alone); their values are the server's anyway
#: (:meth:`TalkingHeadUI._server_side`).
SERVER_PATH_OPTIONS = ("checkpoints", "lipsync_debug")
#: Options with one allowed value (``fps``: 25): no box for them.
FIXED_OPTIONS = ("fps",)

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


class TabLayout:
    """The components of the tab and their events; the handlers and state (``host``, ``specs``,
    ``components``, ``generate``, ...) come from the subclass :class:`~sadtalker_ext.ui.tab.TalkingHeadUI`."""

    def auto_engine_label(self) -> str:
        try:
            from ..engines import resolve_engine_name
            where = model_dirs_args(self.host)
            name = resolve_engine_name("auto", where["checkpoints"], where["host_dir"])
            return f"auto = best available (now: {name})"
        except Exception:  # noqa: BLE001 - only a hint text; the choice itself still works
            return "auto = best available"

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
