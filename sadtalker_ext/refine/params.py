"""The refinement's parameters, declared once, and the img2img request built from them.

Every field of :class:`RefineParams` carries its :class:`FieldSpec` (kind, range, interpolation
between keyframes, choices, the keyframe table's column, label, unit) in its metadata
(:func:`param`). Everything else derives from it: :data:`FIELD_SPECS` (validation,
interpolation), the optional fields of :class:`~.keyframes.Keyframe`, the keys a keyframes JSON
may hold (CLI ``--refine``, the tab's import, the HTTP API's ``refine``), the keyframe table's
columns and the plot's labels (:mod:`sadtalker_ext.ui.refine_panel`) and
:attr:`Img2ImgRequest.params`, what a backend or a host's ``img2img`` receives. Adding a parameter
is one field here (plus what a backend does with it).

:class:`Img2ImgRequest` lives here, below the host protocol (:mod:`sadtalker_ext.host.base`
re-exports it), so that the refinement stage never imports the host. numpy only.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import OptionError

__all__ = ["MASKS", "FieldSpec", "param", "RefineParams", "FIELD_SPECS", "NUMERIC_FIELDS", "TEXT_FIELDS",
           "Img2ImgRequest", "check_value", "optional_param_fields"]

MASKS = ("face", "mouth", "full")

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 60, 60, 6, 6


def short(value: Any) -> str:
    """A bounded repr of a (possibly hostile) value: at most a few nesting levels and ~60 characters."""
    try:
        return _repr.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr raises is still described
        return f"<{type(value).__name__}>"


def real(value: Any) -> Optional[float]:
    """``value`` as a finite float when it is a real number (not bool), else None (never raises)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        v = float(value)
    except (OverflowError, ValueError):  # an int with hundreds of digits
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class FieldSpec:
    """One refinement parameter. kind: "float", "int", "text" or "choice"; lo/hi: inclusive range of a
    number; interpolation: the default between keyframes ("linear", "hold"); choices of a "choice";
    column: its header in the keyframe table; label: its long name (plot axes); unit ("px" or "")."""

    name: str
    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    interpolation: str = "hold"
    choices: Tuple[str, ...] = ()
    column: str = ""
    label: str = ""
    unit: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def axis_label(self) -> str:
        """``label`` with its unit, e.g. "mask blur (px)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


def param(default: Any, kind: str, lo: float = -math.inf, hi: float = math.inf, *, interpolation: str = "hold",
          choices: Tuple[str, ...] = (), column: str, label: str = "", unit: str = "") -> Any:
    """A :class:`RefineParams` field whose metadata holds its :class:`FieldSpec` (name filled in from the field)."""
    spec = FieldSpec("", kind, lo, hi, interpolation, tuple(choices), column, label or column, unit)
    return field(default=default, metadata={"spec": spec})


def check_value(name: str, value: Any, where: str) -> Any:
    """Validate and normalise one value of field ``name``; raises OptionError naming ``where``."""
    spec = FIELD_SPECS[name]
    if spec.kind in ("text", "choice"):
        if not isinstance(value, str):
            raise OptionError(f"{where}: {name} must be text, got {short(value)}")
        if spec.kind == "choice" and value not in spec.choices:
            raise OptionError(f"{where}: {name} {short(value)} is not valid; use one of {', '.join(spec.choices)}")
        if name == "sampler" and not value.strip():
            raise OptionError(f"{where}: sampler must be a sampler name such as 'Euler a'")
        return value
    v = real(value)
    if v is None or not spec.lo <= v <= spec.hi:
        raise OptionError(f"{where}: {name} must be a number in {spec.lo:g}..{spec.hi:g}, got {short(value)}")
    if spec.kind == "int":
        if v != math.floor(v):
            raise OptionError(f"{where}: {name} must be a whole number, got {short(value)}")
        return int(v)
    return v


@dataclass
class RefineParams:
    """The refinement parameters at one frame; the declaration everything else derives from (module doc).

    prompt None (defaults only) = the portrait's generation prompt, else empty. mask_blur and
    padding are pixels of the output frame (padding: context around the mask in the crop, A1111's
    "only masked padding"); seed -1 = random (one seed per run).
    """

    prompt: Optional[str] = param(None, "text", column="prompt")
    negative_prompt: str = param("", "text", column="negative prompt")
    denoising_strength: float = param(0.3, "float", 0.0, 1.0, interpolation="linear", column="denoising",
                                      label="denoising strength")
    cfg_scale: float = param(7.0, "float", 1.0, 30.0, interpolation="linear", column="CFG", label="CFG scale")
    steps: int = param(20, "int", 1, 150, interpolation="linear", column="steps")
    sampler: str = param("Euler a", "text", column="sampler")
    seed: int = param(-1, "int", -1, 2 ** 32 - 1, column="seed")
    mask: str = param("face", "choice", choices=MASKS, column="mask")
    mask_blur: int = param(8, "int", 0, 64, interpolation="linear", column="mask blur", unit="px")
    padding: int = param(32, "int", 0, 256, interpolation="linear", column="padding", unit="px")

    def validate(self, where: str = "defaults") -> "RefineParams":
        for name in FIELD_SPECS:
            v = getattr(self, name)
            if name == "prompt" and v is None:
                continue
            setattr(self, name, check_value(name, v, where))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "defaults") -> "RefineParams":
        if not isinstance(data, dict):
            raise OptionError(f"{where} must be a JSON object of field: value")
        unknown = sorted(str(k) for k in data if k not in FIELD_SPECS)
        if unknown:
            raise OptionError(f"{where}: unknown field(s) {short(unknown)}; fields: {', '.join(FIELD_SPECS)}")
        return cls(**data).validate(where)


#: name -> FieldSpec of every refinement parameter, in declaration order.
FIELD_SPECS: Dict[str, FieldSpec] = {f.name: replace(f.metadata["spec"], name=f.name) for f in fields(RefineParams)}
NUMERIC_FIELDS = tuple(n for n, s in FIELD_SPECS.items() if s.numeric)
TEXT_FIELDS = tuple(n for n, s in FIELD_SPECS.items() if not s.numeric)


def optional_param_fields(after: int):
    """Class decorator (written under ``@dataclass``, so applied first): one field per refinement parameter, typed
    ``Optional[...]`` with default None ("not set"), inserted after the class's own first ``after``
    fields; :class:`~.keyframes.Keyframe` is made so."""
    def wrap(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        names = list(own)
        ann = {n: own[n] for n in names[:after]}
        for f in fields(RefineParams):
            t = str(f.type)  # annotations are strings here (postponed evaluation)
            ann[f.name] = t if t.startswith("Optional[") else f"Optional[{t}]"
            setattr(cls, f.name, None)
        ann.update({n: own[n] for n in names[after:]})
        cls.__annotations__ = ann
        return cls
    return wrap


@dataclass
class Img2ImgRequest:
    """One img2img call on a batch of same-size images: what the refinement stage sends a backend and
    what a host's ``img2img`` (:class:`~sadtalker_ext.host.base.Host`) receives.

    images: uint8 RGB ``[n, H, W, 3]``. params: the batch's SD parameters (:class:`RefineParams`; a prompt
    of None is read as ""; ``params.padding`` is A1111's ``inpaint_full_res_padding``, ``params.mask`` the
    kind of mask the crops were cut for). mask: uint8 ``[n, H, W]`` (255 = repaint) or None for the
    whole image. seeds: one per image (None: ``params.seed`` for all; -1 = random). width / height:
    processing size in pixels (None: the image's, rounded up to a multiple of 8). inpaint_full_res:
    the host crops around the mask itself (A1111's "only masked"; the stage's crops are already cut,
    so it sends False). inpainting_fill: A1111's masked content (1 = original). frame_indices: the
    video frame of each image. call_index / calls_total / status: which of the run's img2img calls
    this is (calls_total None outside a refinement run) and its progress text, for the host's
    progress display. max_batch: images per host call; scheduler, resize_mode, restore_faces: A1111's.
    """

    images: np.ndarray
    params: RefineParams = field(default_factory=RefineParams)
    mask: Optional[np.ndarray] = None
    seeds: Optional[List[int]] = None
    width: Optional[int] = None
    height: Optional[int] = None
    inpaint_full_res: bool = True
    inpainting_fill: int = 1
    frame_indices: Optional[List[int]] = None
    call_index: int = 0
    calls_total: Optional[int] = None
    status: str = ""
    max_batch: int = 4
    scheduler: Optional[str] = None
    resize_mode: int = 0
    restore_faces: bool = False

    def __post_init__(self) -> None:
        if self.params.prompt is None:
            self.params = replace(self.params, prompt="")

