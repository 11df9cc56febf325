"""Form controls for every field of :class:`~sadtalker_ext.options.GenerateOptions` (no gradio here).

:func:`option_specs` walks the dataclass fields, so an option added to ``GenerateOptions`` shows up in
the tab without touching the UI: its kind comes from the default value (bool -> checkbox, int / float
-> number, tuple -> comma-separated text, str -> text). A declared option's
:class:`~sadtalker_ext.options.Option` metadata gives its label, section, range, step, choices and help
(:data:`HINTS`, derived from it). :func:`to_options` turns the form's
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

def _hint(spec) -> dict:
    """The tab's view of one :class:`~sadtalker_ext.options.Option`."""
    hint = dict(section=spec.section, label=spec.label)
    if spec.control:
        hint["kind"] = spec.control
    if spec.range is not None and spec.control != "file":
        hint["minimum"] = spec.range[0]
        if spec.ui_max:
            hint["maximum"] = spec.range[1]
    if spec.step is not None:
        hint["step"] = spec.step
    if spec.choices or spec.suggestions:
        hint["choices"] = tuple(spec.choices or spec.suggestions)
    if spec.suggestions:
        hint["custom"] = True
    for name in ("info", "lines", "file_types"):
        value = getattr(spec, name)
        if value and value != 1:
            hint[name] = value
    return hint


#: UI hints per option (section, label, kind override, range, step, choices, info), derived from
#: :func:`sadtalker_ext.options.schema`; edit the option's field there, not here.
HINTS: dict = {name: _hint(spec) for name, spec in options_mod.schema().items()}


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
        spec = options_mod.spec_of(f)
        hint = _hint(spec) if spec is not None else {}
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
                kind = "text"
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
