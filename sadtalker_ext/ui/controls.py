"""Form controls for every field of :class:`~sadtalker_ext.options.GenerateOptions` (no gradio here).

:func:`option_specs` walks the dataclass fields, so an option added to ``GenerateOptions`` shows up in
the tab without touching the UI: its kind comes from the default value (bool -> checkbox, int / float
-> number, tuple -> comma-separated text, str -> text), and a str option gets a dropdown when
``sadtalker_ext.options`` has a tuple constant of its allowed values named after it (``engine`` ->
``ENGINES``, ``restore`` -> ``RESTORERS``, ``phonemes`` -> ``PHONEME_SOURCES``). :data:`HINTS` adds
labels, ranges, sections and help text for the known options. :func:`to_options` turns the form's
values back into a validated ``GenerateOptions`` (raises OptionError with the CLI's one-line message).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import options as options_mod
from ..errors import OptionError
from ..options import GenerateOptions

#: Section titles in display order; "main" is always open, the others are accordions.
SECTIONS = ("main", "Face and motion", "Lip-sync (Wav2Lip)", "Refinement (img2img)", "Neural engine", "Output",
            "Other")

#: UI hints per option: section, label, kind override, range, step, choices, info.
HINTS: dict = {
    "engine": dict(section="main", label="Engine", info="auto = the best available engine"),
    "preprocess": dict(section="main", label="Preprocess",
                       info="crop: face square; resize: whole image; full: face pasted back into the original"),
    "size": dict(section="main", label="Face resolution", choices=(256, 512)),
    "still": dict(section="main", label="Still (no head motion)"),
    "expression_scale": dict(section="main", label="Expression scale", kind="slider", minimum=0.0,
                             maximum=3.0, step=0.05),
    "pose_style": dict(section="main", label="Pose style", kind="slider", minimum=0, maximum=45, step=1),
    "seed": dict(section="main", label="Seed", minimum=0, info="same seed = same video"),
    "language": dict(section="main", label="Spoken language", choices=("en", "ru", "zh"), custom=True,
                     info="code of the speech's language (also the text-to-speech voice)"),
    "face_index": dict(section="Face and motion", label="Face index (0 = largest)", minimum=0, maximum=63),
    "blinks": dict(section="Face and motion", label="Eye blinks"),
    "phonemes": dict(section="Face and motion", label="Mouth shapes from (lite engine)"),
    "transcript": dict(section="Face and motion", label="Transcript (optional, for forced alignment)",
                       lines=2),
    "max_side": dict(section="Face and motion", label="Max side of 'full' output (px)", kind="slider",
                     minimum=256, maximum=8192, step=64),
    "ref_eyeblink": dict(section="Face and motion", label="Reference video for eye blinks (sadtalker)",
                         kind="file", file_types=("video",)),
    "ref_pose": dict(section="Face and motion", label="Reference video for head pose (sadtalker)",
                     kind="file", file_types=("video",)),
    "lipsync": dict(section="Lip-sync (Wav2Lip)", label="Lip-sync refinement"),
    "pads": dict(section="Lip-sync (Wav2Lip)", label="Face box padding: top, bottom, left, right (px)"),
    "mouth_mask_dilate": dict(section="Lip-sync (Wav2Lip)", label="Mouth mask dilate (px)", kind="slider",
                              minimum=0.0, maximum=64.0, step=0.5),
    "face_mask_erode": dict(section="Lip-sync (Wav2Lip)", label="Face mask erode (px)", kind="slider",
                            minimum=0.0, maximum=64.0, step=0.5),
    "mask_blur": dict(section="Lip-sync (Wav2Lip)", label="Mask blur (px)", kind="slider", minimum=0.0,
                      maximum=64.0, step=0.5),
    "only_mouth": dict(section="Lip-sync (Wav2Lip)", label="Paste only the mouth"),
    "restore": dict(section="Lip-sync (Wav2Lip)", label="Face restoration"),
    "restore_fidelity": dict(section="Lip-sync (Wav2Lip)", label="Restoration fidelity (CodeFormer)",
                             kind="slider", minimum=0.0, maximum=1.0, step=0.05),
    "wav2lip_batch_size": dict(section="Lip-sync (Wav2Lip)", label="Wav2Lip batch size", minimum=1,
                               maximum=1024),
    "lipsync_debug": dict(section="Lip-sync (Wav2Lip)",
                          label="Debug folder name (masks of one frame; made inside the output folder)"),
    "refine": dict(section="Refinement (img2img)", label="Keyframes JSON (empty = no refinement)", kind="file",
                   file_types=(".json",)),
    "refine_mode": dict(section="Refinement (img2img)", label="Refine mode (empty = the file's own)"),
    "sd_checkpoint": dict(section="Refinement (img2img)",
                          label="SD checkpoint: name of a file in the models folder (standalone only; the "
                                "WebUI uses its loaded model)"),
    "checkpoints": dict(section="Neural engine", label="Checkpoint folder (empty = default lookup)"),
    "batch_size": dict(section="Neural engine", label="Batch size", kind="slider", minimum=1, maximum=64,
                       step=1),
    "device": dict(section="Neural engine", label="Device", choices=("auto", "cpu", "cuda", "mps"),
                   custom=True, info="or cuda:N"),
    "precision": dict(section="Neural engine", label="Precision (fp16/bf16 on CUDA)"),
    "fps": dict(section="Output", label="Frames per second", minimum=25, maximum=25),
    "crf": dict(section="Output", label="H.264 quality (CRF, lower = better)", kind="slider", minimum=0,
                maximum=51, step=1),
    "chunk_size": dict(section="Output", label="Frames per chunk", kind="slider", minimum=1, maximum=256,
                       step=1),
}

#: Choice constants whose name does not follow the option's name.
_CHOICE_ALIASES = {"phonemes": "PHONEME_SOURCES", "restore": "RESTORERS"}


@dataclass
class ControlSpec:
    """How one option is shown: ``kind`` is one of checkbox, number, slider, dropdown, text, tuple, file
    (an upload whose value becomes the option's path; ``file_types`` like ``("video",)`` or ``(".json",)``)."""

    name: str
    kind: str
    default: Any
    label: str
    section: str = "Other"
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str | None = None
    custom: bool = False
    lines: int = 1
    integer: bool = False
    optional: bool = False
    file_types: tuple = ()
    extra: dict = field(default_factory=dict)


def _choices_for(name: str, default: Any) -> tuple:
    const = _CHOICE_ALIASES.get(name)
    candidates = [const] if const else []
    stem = name.upper().rstrip("S")
    # ENGINES for engine, PREPROCESS for preprocess, RESTORERS for restore, REFINE_MODES for refine_mode
    # (but not REFINE_MODES for refine): the constant is the name plus at most a short plural ending.
    candidates += [n for n in dir(options_mod)
                   if n.isupper() and n.startswith(stem) and len(n.rstrip("S")) - len(stem) <= 2]
    for cname in candidates:
        value = getattr(options_mod, cname, None)
        if (isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)
                and (default is None or default in value)):
            return value
    return ()


def option_specs(defaults: GenerateOptions | None = None) -> list:
    """One :class:`ControlSpec` per ``GenerateOptions`` field, in field order.

    ``defaults`` (e.g. with the host's default engine applied) gives the initial values; the fields are
    those of its class (``GenerateOptions`` or a subclass).
    """
    defaults = defaults or GenerateOptions()
    specs = []
    for f in dataclasses.fields(type(defaults)):
        default = getattr(defaults, f.name)
        base_default = f.default if f.default is not dataclasses.MISSING else default
        hint = dict(HINTS.get(f.name, {}))
        label = hint.pop("label", f.name.replace("_", " ").capitalize())
        section = hint.pop("section", "Other")
        kind = hint.pop("kind", None)
        annotation = str(f.type)
        optional = base_default is None or "None" in annotation
        integer = isinstance(base_default, int) and not isinstance(base_default, bool)
        choices = tuple(hint.pop("choices", ()))
        if kind is None:
            if isinstance(base_default, bool):
                kind = "checkbox"
            elif choices:
                kind = "dropdown"
            elif isinstance(base_default, (int, float)):
                kind = "number"
            elif isinstance(base_default, (tuple, list)):
                kind = "tuple"
            else:
                choices = _choices_for(f.name, base_default)
                kind = "dropdown" if choices else "text"
        specs.append(ControlSpec(name=f.name, kind=kind, default=default, label=label, section=section,
                                 choices=choices, integer=integer, optional=optional, **hint))
    return specs


def initial_value(spec: ControlSpec) -> Any:
    """The value a control shows at start (dropdown values are strings; None -> empty text)."""
    v = spec.default
    if spec.kind == "dropdown":
        return None if v is None else str(v)
    if spec.kind == "tuple":
        return ", ".join(str(x) for x in (v or ()))
    if spec.kind == "text":
        return "" if v is None else str(v)
    if spec.kind == "file":
        return None
    return v


def _file_path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    path = getattr(value, "name", value)  # gradio 3 gives a tempfile wrapper, gradio 4 a path
    path = str(path).strip() if path is not None else ""
    return path or None


def convert(spec: ControlSpec, value: Any) -> Any:
    """A form value converted to the option's Python type. Raises OptionError for unparsable input."""
    flag = "--" + spec.name.replace("_", "-")
    if spec.kind == "file":
        return _file_path(value)
    if value is None or (isinstance(value, str) and not value.strip() and spec.kind != "checkbox"):
        if spec.optional:
            return None
        if spec.kind in ("number", "slider", "dropdown", "tuple"):
            raise OptionError(f"{flag} needs a value (default {spec.default!r})")
        return "" if spec.kind == "text" else spec.default
    if spec.kind == "checkbox":
        return bool(value)
    if spec.kind == "tuple":
        parts = [p for p in str(value).replace(";", ",").replace(",", " ").split()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise OptionError(f"{flag} needs whole numbers separated by commas, got {value!r}") from None
    if spec.integer:
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # exact: a float round trip would turn 2**63 - 1 into 2**63
        try:
            return int(str(value).strip())
        except ValueError:
            pass
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{flag} must be a whole number, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise OptionError(f"{flag} must be a whole number, got {value!r}")
        return int(f)
    if isinstance(spec.default, float) and spec.kind in ("number", "slider"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{flag} must be a number, got {value!r}") from None
    if isinstance(value, str):
        value = value.strip()
    return value


def to_options(specs: Sequence[ControlSpec], values: Sequence[Any], **overrides) -> GenerateOptions:
    """Validated options from the form values (same order as ``specs``); ``overrides`` win.

    Raises:
        OptionError: a value is unparsable or out of range (one line, same wording as the CLI).
    """
    if len(specs) != len(values):
        raise ValueError(f"{len(specs)} option controls but {len(values)} values")
    data = {s.name: convert(s, v) for s, v in zip(specs, values)}
    data.update(overrides)
    try:
        opts = GenerateOptions(**data)
    except TypeError as exc:  # a field removed from GenerateOptions while the form was open
        raise OptionError(f"the options changed; reload the page ({exc})") from None
    return opts.validate()


__all__ = ["ControlSpec", "HINTS", "SECTIONS", "option_specs", "initial_value", "convert", "to_options"]
