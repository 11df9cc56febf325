"""The img2img refinement panel of the Talking Head tab (gradio 3.41.2 and 4.40, through :mod:`.compat`).

Contents: an enable checkbox and the backend status; mode (every frame / keyframes only), batch size
and "same noise" controls; the img2img **crop size** (the schedule's ``size``: "auto" = the face crop's
own size in the video, "native" = the model's size, or "pixels" with a number box bounded by
:data:`~sadtalker_ext.refine.keyframes.SIZE_RANGE`); the **keyframe table** (``gr.Dataframe``, one row per keyframe, columns
:data:`COLUMNS`; an empty cell = "not set by this keyframe"); JSON import (file upload or pasted
text) and export; a **plot** of every numeric parameter over the video's timeline with markers at
the keyframes that set it (matplotlib figure in a ``gr.Plot``); and a **preview** that refines one
chosen image at a chosen time with exactly the stage's crop, mask and paste-back, before the whole
video is committed.

Wiring (used by :mod:`.tab`)::

    panel = build_refine_panel(host=host, prompt=prompt_textbox, image=source_image)
    panel.inputs                       # components whose values generation needs, in order: enabled,
                                       # mode, table, batch size, same noise, [SD checkpoint], [prompt],
                                       # size choice, size pixels
    panel.apply(options, *values)      # -> the GenerateOptions with the panel's refinement (the run
                                       # plan, pipeline.plan_run, builds the RefineStage from them)
    panel.default_values()             # initial values of panel.inputs (None values also mean "off")
    panel.get_schedule(*values)        # -> KeyframeSchedule | None
    panel.components                   # dict name -> component

``host`` (optional) is used for the status line and the preview; ``prompt`` (the tab's prompt
textbox: the portrait's txt2img prompt) becomes the default refinement prompt; ``image`` (the tab's
source image) is the default preview image. Every argument may be omitted. Without a model the panel
still builds; generation and preview then show the one-line reason (DependencyError), never crash.

The table / plot helpers (:func:`schedule_to_rows`, :func:`rows_to_schedule`, :func:`plot_schedule`,
:func:`preview_frame`) do not need gradio.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import OptionError, TalkingHeadError
from ..refine.keyframes import (FIELD_SPECS, INTERPOLATIONS, MODES, NUMERIC_FIELDS, SIZE_NAMES, SIZE_RANGE, Keyframe,
                                KeyframeSchedule, RefineParams, frame_of_time)

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "HEADERS", "RefinePanel", "build_refine_panel", "schedule_to_rows", "rows_to_schedule",
           "plot_schedule", "preview_frame", "EXAMPLE_ROWS", "SIZE_CHOICES", "size_value", "size_controls"]

#: (table header, Keyframe attribute) in column order: the placement, one column per refinement
#: parameter (its FieldSpec's ``column``, in declaration order), the interpolation.
COLUMNS: Tuple[Tuple[str, str], ...] = (
    (("time (s)", "time"), ("frame", "frame"))
    + tuple((spec.column, name) for name, spec in FIELD_SPECS.items())
    + (("interpolation", "interpolation"),)
)
HEADERS = [h for h, _ in COLUMNS]
#: Rows the table starts with: a mild face refinement that strengthens a little over two seconds.
EXAMPLE_ROWS = [["0", "", "", "", "0.25", "7", "20", "Euler a", "", "face", "8", "32", "ease"],
                ["2", "", "", "", "0.35", "", "", "", "", "", "", "", ""]]
FPS = 25.0
#: The crop-size radio's choices: the schedule's size names, then "pixels" (the number box's value).
SIZE_CHOICES = tuple(SIZE_NAMES) + ("pixels",)
#: The number box's initial value (SD 1.x's native size); used only when "pixels" is chosen.
SIZE_PIXELS_DEFAULT = 512


def size_value(choice: Any, pixels: Any = None) -> Any:
    """The schedule's ``size`` from the crop-size controls: "auto" / "native" as chosen (None or "" =
    "auto"), or for "pixels" the number box's value as an int when it is whole (anything else is
    passed on for :meth:`KeyframeSchedule.validate` to refuse with its one-line OptionError)."""
    choice = choice or "auto"
    if choice in SIZE_NAMES:
        return choice
    if choice != "pixels":
        raise OptionError(f"crop size {str(choice)[:40]!r} is not valid; use one of {', '.join(SIZE_CHOICES)}")
    if isinstance(pixels, (int, float, np.integer, np.floating)) and not isinstance(pixels, bool) \
            and float(pixels).is_integer():
        return int(pixels)
    if isinstance(pixels, str) and pixels.strip():
        try:
            f = float(pixels)
            return int(f) if f.is_integer() else f
        except ValueError:
            pass
    return pixels


def size_controls(size: Any) -> Tuple[str, int]:
    """(choice, pixels) of the crop-size controls that show a schedule's ``size``."""
    if size in SIZE_NAMES:
        return size, SIZE_PIXELS_DEFAULT
    return "pixels", int(size)
#: The plot's axis label of each numeric field (its FieldSpec's label and unit).
PLOT_LABELS = {name: FIELD_SPECS[name].axis_label for name in NUMERIC_FIELDS}


# -- table <-> schedule --------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _interp_cell(mapping: Dict[str, str]) -> str:
    if not mapping:
        return ""
    modes = set(mapping.values())
    if set(mapping) == set(NUMERIC_FIELDS) and len(modes) == 1:
        return modes.pop()
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def _parse_interp(cell: str, where: str) -> Dict[str, str]:
    """"" | "ease" (every numeric field) | "cfg_scale=ease, steps=hold" -> {field: mode}."""
    text = cell.strip()
    if not text:
        return {}
    if "=" not in text:
        if text not in INTERPOLATIONS:
            raise OptionError(f"{where}: interpolation {text!r} is not valid; use {', '.join(INTERPOLATIONS)} "
                              f"or field=mode pairs such as 'cfg_scale=ease, steps=hold'")
        return {f: text for f in NUMERIC_FIELDS}
    out = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise OptionError(f"{where}: write interpolation as field=mode pairs, got {part.strip()!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        out[k] = v
    return out


def schedule_to_rows(schedule: KeyframeSchedule) -> List[List[str]]:
    """The keyframe table of ``schedule``: one row of strings per keyframe, in :data:`COLUMNS` order."""
    rows = []
    for kf in schedule.keyframes:
        row = []
        for _, name in COLUMNS:
            row.append(_interp_cell(kf.interpolation) if name == "interpolation" else _fmt(getattr(kf, name)))
        rows.append(row)
    return rows


def _empty(cell: Any) -> bool:
    return cell is None or (isinstance(cell, float) and np.isnan(cell)) or (isinstance(cell, str) and not cell.strip())


def _cell_value(name: str, cell: Any, where: str) -> Any:
    """One table cell as a Keyframe value (None = not set). Numbers may be given as text."""
    if _empty(cell):
        return None
    numeric = name in ("time", "frame") or FIELD_SPECS[name].numeric
    if not numeric:
        return str(cell) if name in ("prompt", "negative_prompt") else str(cell).strip()
    if isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool):
        return cell
    try:
        v = float(str(cell).strip())
    except ValueError:
        raise OptionError(f"{where}: {name} must be a number, got {str(cell).strip()!r}") from None
    whole = name == "frame" or (name in FIELD_SPECS and FIELD_SPECS[name].kind == "int")
    return int(v) if whole and v.is_integer() else v


def rows_to_schedule(rows: Any, *, mode: str = "keyframes", batch_size: int = 4, same_noise: bool = True,
                     defaults: Optional[RefineParams] = None, size: Any = "auto") -> KeyframeSchedule:
    """A validated schedule from the table's rows (list of lists, or a pandas DataFrame).

    ``size``: the schedule's img2img crop size ("auto", "native" or pixels; see :func:`size_value`).

    Rows whose cells are all empty are skipped. Numbers may be strings. Raises OptionError naming
    the row (1-based) and column.
    """
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # pandas DataFrame (gradio's default type)
        rows = rows.values.tolist()
    kfs = []
    for i, row in enumerate(rows or []):
        row = list(row) + [""] * (len(COLUMNS) - len(row))
        if all(_empty(c) for c in row):
            continue
        where = f"keyframe table row {i + 1}"
        data: Dict[str, Any] = {}
        for (header, name), cell in zip(COLUMNS, row):
            if name == "interpolation":
                data["interpolation"] = _parse_interp("" if cell is None else str(cell), where)
                continue
            v = _cell_value(name, cell, f"{where}, column {header!r}")
            if v is not None:
                data[name] = v
        kfs.append(Keyframe.from_dict(data, where))
    sched = KeyframeSchedule(keyframes=kfs, defaults=defaults or RefineParams(), mode=mode,
                             batch_size=int(batch_size), same_noise=bool(same_noise), size=size)
    return sched.validate()


# -- plot ------------------------------------------------------------------------------------------------
def plot_schedule(schedule: KeyframeSchedule, duration_s: float, fps: float = FPS, fields: Sequence[str] = NUMERIC_FIELDS):
    """A matplotlib Figure: one panel per numeric field, its interpolated value at every frame of a
    ``duration_s`` video (x in seconds), round markers at the keys of that field inside the video,
    light vertical lines at every keyframe, and the video's end. The seed gets a panel only when some
    frame has a fixed seed (-1, a random seed per run, is no curve). Uses the Agg backend (no display)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = max(1, int(round(float(duration_s) * fps)))
    t = np.arange(n) / fps
    fields = [f for f in fields if f != "seed" or np.any(np.asarray(schedule.track_values(f, fps, n)) >= 0)]
    fig = Figure(figsize=(7.0, 1.35 * len(fields) + 0.4), dpi=90)
    axes = fig.subplots(len(fields), 1, sharex=True, squeeze=False)[:, 0]
    all_keys = [k for k in schedule.keyframe_frames(fps) if k < n]
    for ax, name in zip(axes, fields):
        vals = schedule.track_values(name, fps, n)
        ax.plot(t, vals, color="tab:blue", linewidth=1.5, label=name)
        keys = [k for k in schedule.key_frames_of(name, fps) if k < n]
        if keys:
            ax.plot(np.array(keys) / fps, vals[keys], "o", color="tab:red", markersize=5, label="keyframe")
        for k in all_keys:
            ax.axvline(k / fps, color="0.85", linewidth=0.8, zorder=0)
        ax.set_ylabel(PLOT_LABELS.get(name, name), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, max(t[-1], 1.0 / fps))
    axes[-1].set_xlabel("time (s)", fontsize=8)
    fig.tight_layout()
    return fig


# -- preview ---------------------------------------------------------------------------------------------
def preview_frame(schedule: KeyframeSchedule, image: Any, time_s: float, *, host: Any = None,
                  sd_checkpoint: Optional[str] = None, backend: Any = None, fps: float = FPS) -> np.ndarray:
    """Refine one image with the parameters scheduled at ``time_s`` (one img2img call; the stage's
    crop, mask and paste-back). Returns uint8 RGB. Raises DependencyError without a model, NoFaceError
    when a face/mouth mask finds no face, InputError for an unusable image."""
    from ..errors import InputError, NoFaceError
    from ..io.image import to_rgb8
    from ..refine.stage import RefineStage

    if image is None:
        raise InputError("choose an image to preview the refinement on")
    if isinstance(image, (str, os.PathLike)):
        from ..io.image import load_image
        img = load_image(image)
    else:
        img = to_rgb8(np.asarray(image))
    if backend is None:
        from ..refine.backends import make_backend
        backend = make_backend(host=host, sd_checkpoint=sd_checkpoint or None)
    stage = RefineStage(schedule, backend)
    frame = frame_of_time(max(0.0, float(time_s or 0.0)), fps)
    job = getattr(host, "job", None) if host is not None else None
    if callable(job) and not getattr(backend, "name", "").startswith("diffusers"):
        with job("talking head: refinement preview", 1):   # the WebUI's queue lock around img2img
            out = stage.preview(img, frame, fps)
    else:
        out = stage.preview(img, frame, fps)
    if stage.stats.passed_frames:
        raise NoFaceError("no face found in the preview image; use the 'full' mask or another image")
    return out


# -- the panel -------------------------------------------------------------------------------------------
class RefinePanel:
    """What :func:`build_refine_panel` returns (see the module doc)."""

    def __init__(self, components: Dict[str, Any], inputs: List[Any], host: Any = None, has_prompt: bool = False,
                 has_checkpoint: bool = False):
        self.components = components
        self.inputs = inputs
        self.host = host
        self._has_prompt = has_prompt
        self._has_checkpoint = has_checkpoint

    def default_values(self) -> list:
        """The initial values of :attr:`inputs`, in order (refinement switched off)."""
        vals = [False, "keyframes", [list(r) for r in EXAMPLE_ROWS], 4, True]
        if self._has_checkpoint:
            vals.append("")
        if self._has_prompt:
            vals.append("")
        return vals + ["auto", SIZE_PIXELS_DEFAULT]

    def _values(self, values: Sequence[Any]) -> Dict[str, Any]:
        v = list(values)
        out = {"enabled": v.pop(0), "mode": v.pop(0), "table": v.pop(0), "batch_size": v.pop(0),
               "same_noise": v.pop(0)}
        out["sd_checkpoint"] = v.pop(0) if self._has_checkpoint else None
        out["prompt"] = v.pop(0) if self._has_prompt else ""
        choice = v.pop(0) if v else "auto"          # the crop-size controls (older callers: "auto")
        out["size"] = size_value(choice, v.pop(0) if v else None)
        return out

    def get_schedule(self, *values) -> Optional[KeyframeSchedule]:
        """The schedule the panel's values (in :attr:`inputs` order) describe, or None when refinement
        is switched off. Raises OptionError for a bad table."""
        v = self._values(values)
        if not v["enabled"]:
            return None
        sched = rows_to_schedule(v["table"], mode=v["mode"] or "keyframes", batch_size=int(v["batch_size"] or 4),
                                 same_noise=bool(v["same_noise"]), size=v["size"])
        return sched.with_source_prompt((v["prompt"] or "").strip())

    def apply(self, options: Any, *values) -> Any:
        """``options`` (a GenerateOptions, changed and returned) with the refinement the panel's values (in
        :attr:`inputs` order) describe, for the run plan to build the stage from: ``refine`` = the schedule
        as its JSON object (None when switched off), ``refine_mode`` None (the schedule's own),
        ``sd_checkpoint`` = the standalone checkpoint box's name (None: the host's model; the tab accepts
        it only inside the models folders). Raises OptionError for a bad table."""
        sched = self.get_schedule(*values)
        checkpoint = self._values(values)["sd_checkpoint"]
        options.refine = sched.to_dict() if sched is not None else None
        options.refine_mode = None
        options.sd_checkpoint = (checkpoint.strip() or None) if isinstance(checkpoint, str) else None
        return options


def _checkpoint(host: Any, value: Any) -> Optional[str]:
    """The form's SD checkpoint, accepted only inside the server's models folders (None when empty)."""
    text = (value or "").strip() if isinstance(value, str) else ""
    if not text:
        return None
    from .models_panel import sd_checkpoint_path
    return sd_checkpoint_path(host, text)


def _status_line(host: Any) -> str:
    from ..refine.backends import refine_status
    if host is None:
        return ("img2img refinement uses the WebUI's loaded Stable Diffusion model, or standalone the SD "
                "checkpoint given here")
    ok, msg = refine_status(host)
    return msg


def build_refine_panel(host: Any = None, prompt: Any = None, image: Any = None) -> RefinePanel:
    """Build the panel inside the caller's gradio layout (call it within ``gr.Blocks``); see the module doc.

    host: the Host (status line, preview). prompt: a gr.Textbox whose value is the default prompt.
    image: a gr.Image (numpy) used as the default preview image. Returns a :class:`RefinePanel`.
    """
    from . import compat
    gr = compat.gr()
    c: Dict[str, Any] = {}
    standalone = host is None or not _host_has_model(host)
    with gr.Accordion("Refinement (img2img with keyframes)", open=False, elem_id="th_refine"):
        c["status"] = compat.make("Markdown", _status_line(host), elem_id="th_refine_status")
        with gr.Row():
            c["enabled"] = compat.make("Checkbox", label="Refine with img2img", value=False,
                                       elem_id="th_refine_enabled")
            c["mode"] = compat.make("Radio", choices=list(MODES), value="keyframes", label="Mode",
                                    info="every frame (batched) or keyframes only, carried by optical flow",
                                    elem_id="th_refine_mode")
        with gr.Row():
            c["batch_size"] = compat.make("Slider", minimum=1, maximum=16, step=1, value=4,
                                          label="Batch size (every-frame mode)", elem_id="th_refine_batch")
            c["same_noise"] = compat.make("Checkbox", value=True, label="Same seed and noise for every frame",
                                          elem_id="th_refine_same_noise")
        lo, hi = SIZE_RANGE
        with gr.Row():
            c["size"] = compat.make("Radio", choices=list(SIZE_CHOICES), value="auto", label="Crop size for img2img",
                                    info="auto: the face's own size in the video (a 256 px video is refined "
                                         "at about 256 px); native: the model's size; pixels: the box",
                                    elem_id="th_refine_size")
            c["size_px"] = compat.make("Number", value=SIZE_PIXELS_DEFAULT, minimum=lo, maximum=hi, precision=0,
                                       label=f"Crop size in pixels ({lo}..{hi}, with 'pixels')",
                                       elem_id="th_refine_size_px")
        if standalone:
            c["sd_checkpoint"] = compat.make("Textbox", label="SD checkpoint (standalone: name of a .safetensors/.ckpt "
                                             "file or diffusers folder in the models folder)", elem_id="th_refine_ckpt")
        c["table"] = compat.make("Dataframe", value=EXAMPLE_ROWS, headers=HEADERS, datatype=["str"] * len(COLUMNS),
                                 row_count=(len(EXAMPLE_ROWS), "dynamic"), col_count=(len(COLUMNS), "fixed"),
                                 type="array", interactive=True, wrap=True, label="Keyframes (empty cell = not set)",
                                 elem_id="th_refine_table")
        with gr.Row():
            c["json_file"] = compat.file_input("Import keyframes JSON", "th_refine_import", file_types=[".json"])
            c["json"] = compat.make("Textbox", label="Keyframes JSON", lines=4, elem_id="th_refine_json")
        with gr.Row():
            c["to_json"] = compat.make("Button", "Table -> JSON", elem_id="th_refine_to_json")
            c["from_json"] = compat.make("Button", "JSON -> table", elem_id="th_refine_from_json")
        with gr.Row():
            c["duration"] = compat.make("Number", value=4.0, label="Video length for the plot (s)",
                                        elem_id="th_refine_duration")
            c["plot_button"] = compat.make("Button", "Plot parameters", elem_id="th_refine_plot_button")
        c["plot"] = compat.make("Plot", label="Parameters over time", elem_id="th_refine_plot")
        with gr.Row():
            c["preview_image"] = compat.image_input("Preview image (default: the source image)",
                                                    "th_refine_preview_image")
            c["preview_out"] = compat.make("Image", label="Refined preview", type="numpy", interactive=False,
                                           elem_id="th_refine_preview_out")
        with gr.Row():
            c["preview_time"] = compat.make("Number", value=0.0, label="Preview at time (s)",
                                            elem_id="th_refine_preview_time")
            c["preview_button"] = compat.make("Button", "Preview one frame", elem_id="th_refine_preview")
        c["message"] = compat.make("Markdown", "", elem_id="th_refine_message")

    inputs = [c["enabled"], c["mode"], c["table"], c["batch_size"], c["same_noise"]]
    if standalone:
        inputs.append(c["sd_checkpoint"])
    if prompt is not None:
        inputs.append(prompt)
    inputs += [c["size"], c["size_px"]]
    panel = RefinePanel(c, inputs, host=host, has_prompt=prompt is not None, has_checkpoint=standalone)
    _wire(panel, compat, image)
    return panel


def _host_has_model(host: Any) -> bool:
    from ..refine.backends import host_can_img2img
    try:
        return host_can_img2img(host)
    except Exception:  # noqa: BLE001 - a host without img2img simply disables refinement (status line says so)
        return False


def _message(exc: Exception) -> str:
    if isinstance(exc, TalkingHeadError):
        return f"**{type(exc).__name__}**: {exc.message}"
    log.exception("refinement panel")
    return f"**error**: {' '.join(str(exc).split())[:300]}"


#: At most this much of an imported keyframes file is read into the JSON box.
MAX_JSON_CHARS = 1_000_000


def _wire(panel: RefinePanel, compat, image: Any) -> None:
    from . import guard
    c = panel.components
    table_inputs = [c["table"], c["mode"], c["batch_size"], c["same_noise"]]

    def schedule_of(table, mode, batch, same, size="auto"):
        return rows_to_schedule(table, mode=mode or "keyframes", batch_size=int(batch or 4), same_noise=bool(same),
                                size=size)

    def to_json(table, mode, batch, same, size_choice="auto", size_px=None):
        try:
            return schedule_of(table, mode, batch, same, size_value(size_choice, size_px)).to_json(), ""
        except Exception as exc:  # noqa: BLE001 - shown in the panel's message line (_message logs unexpected ones)
            return compat.update(), _message(exc)

    def from_json(text):
        try:
            s = KeyframeSchedule.from_json(text or "[]")
            return (schedule_to_rows(s) or [[""] * len(COLUMNS)], s.mode, s.batch_size, s.same_noise,
                    *size_controls(s.size), "")
        except Exception as exc:  # noqa: BLE001 - shown in the panel's message line (_message logs unexpected ones)
            keep = compat.update()
            return keep, keep, keep, keep, keep, keep, _message(exc)

    def import_file(f):
        if f is None:
            return compat.update(), ""
        path = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", None)
        try:
            # only an upload (or the output folder), whatever path the payload named
            path = guard.check_file(path, guard.file_roots(panel.host, c["json_file"]), "keyframes file")
            with open(path, encoding="utf-8") as fh:
                return fh.read(MAX_JSON_CHARS + 1)[:MAX_JSON_CHARS], ""
        except TalkingHeadError as exc:
            return compat.update(), _message(exc)
        except (OSError, TypeError, UnicodeDecodeError) as exc:
            return compat.update(), f"**error**: cannot read the keyframes file ({type(exc).__name__})"

    def plot(table, mode, batch, same, duration):
        try:
            return plot_schedule(schedule_of(table, mode, batch, same), float(duration or 4.0)), ""
        except Exception as exc:  # noqa: BLE001 - shown in the panel's message line (_message logs unexpected ones)
            return compat.update(), _message(exc)

    def preview(*values):
        vals = list(values)
        own, time_s = vals.pop(0), vals.pop(0)
        src = vals.pop(0) if image is not None else None
        try:
            sched = panel.get_schedule(True, *vals[1:])
            img = own if own is not None else src
            ckpt = panel._values([True] + vals[1:])["sd_checkpoint"]
            out = preview_frame(sched, img, time_s, host=panel.host, sd_checkpoint=_checkpoint(panel.host, ckpt))
            return out, f"preview at {float(time_s or 0):.2f} s"
        except Exception as exc:  # noqa: BLE001 - shown in the panel's message line (_message logs unexpected ones)
            return compat.update(), _message(exc)

    compat.listen(c["to_json"].click, to_json, table_inputs + [c["size"], c["size_px"]], [c["json"], c["message"]],
                  show_progress=False)
    compat.listen(c["from_json"].click, from_json, [c["json"]],
                  [c["table"], c["mode"], c["batch_size"], c["same_noise"], c["size"], c["size_px"], c["message"]],
                  show_progress=False)
    compat.listen(c["json_file"].change, import_file, [c["json_file"]], [c["json"], c["message"]],
                  show_progress=False)
    compat.listen(c["plot_button"].click, plot, table_inputs + [c["duration"]], [c["plot"], c["message"]],
                  show_progress=False)
    preview_inputs = [c["preview_image"], c["preview_time"]] + ([image] if image is not None else []) + panel.inputs
    compat.listen(c["preview_button"].click, preview, preview_inputs, [c["preview_out"], c["message"]])
    panel.handlers = {"to_json": to_json, "from_json": from_json, "import_file": import_file, "plot": plot,
                      "preview": preview}
