"""Keyframe schedule of the img2img refinement: which SD parameters apply at which video frame.

A :class:`KeyframeSchedule` holds :class:`Keyframe` s placed at a time (seconds) or a frame index;
each keyframe sets any subset of the refinement parameters (:class:`RefineParams`, declared once in
:mod:`.params`; tests/test_refine_params.py checks this table against that declaration):

============================  =======  ============  ====================================
field                         type     range         between keyframes (default)
============================  =======  ============  ====================================
prompt, negative_prompt       text     any           changes at its keyframe (hold)
sampler                       text     non-empty     changes at its keyframe (hold)
mask                          choice   face, mouth,  changes at its keyframe (hold)
                                       full
denoising_strength            float    0 .. 1        linear
cfg_scale                     float    1 .. 30       linear
steps                         int      1 .. 150      linear, rounded
seed                          int      -1 .. 2^32-1  hold (-1 = one random seed per run)
mask_blur                     int px   0 .. 64       linear, rounded
padding                       int px   0 .. 256      linear, rounded
============================  =======  ============  ====================================

Semantics (every rule is tested):

* **placement**: a keyframe has exactly one of ``time`` (seconds >= 0) or ``frame`` (index >= 0).
  ``time`` maps to the frame shown at that instant, ``floor(time * fps + 1e-6)`` (frame ``i`` is on
  screen during ``[i / fps, (i + 1) / fps)``).
* **order**: keyframes are sorted by frame index (stable), so the list may be in any order.
* **duplicates**: keyframes on the same frame are merged; per field, the one later in the list wins
  (interpolation overrides too).
* **tracks**: each field has its own track, made of the keyframes that set it; fields no keyframe
  sets take :attr:`KeyframeSchedule.defaults` everywhere. A numeric field holds its first key's
  value before that key and its last key's value after the last. A text field has the default
  value until its first key and each key's value from that key's frame on (it changes exactly at
  its keyframes).
* **interpolation** of numeric fields between two consecutive keys ``a`` -> ``b`` of their track,
  with ``u = (f - a) / (b - a)``: ``linear`` ``v_a + u (v_b - v_a)``; ``ease`` the same with
  ``u`` replaced by ``3u^2 - 2u^3`` (smoothstep: zero slope at both keys); ``hold`` ``v_a``. The
  mode of a segment is, in order: the ``interpolation`` entry of the keyframe ``a`` for that
  field, the schedule's ``interpolation`` entry, the field's default above. Integer fields are
  rounded half up after interpolation. Text fields always hold.
* **beyond the end**: keyframes past the video's last frame still shape the tracks (the segment
  towards them is interpolated as usual) but are never refined themselves
  (:meth:`KeyframeSchedule.keyframe_frames` leaves them out).
* **seed -1**: replaced by the run's random seed (one per run) before interpolation.
* **default prompt**: ``defaults.prompt = None`` means "the portrait's own generation prompt when
  it came from txt2img, else empty" (:meth:`KeyframeSchedule.with_source_prompt`,
  :func:`portrait_prompt`).

JSON (``to_json`` / ``from_json`` / ``load`` / ``save``)::

    {"version": 1, "mode": "keyframes", "batch_size": 4, "same_noise": true, "flow": "dis",
     "max_buffer_mb": 1024,
     "defaults": {"negative_prompt": "blurry", "denoising_strength": 0.3, ...},
     "interpolation": {"cfg_scale": "ease"},
     "keyframes": [{"time": 0, "prompt": "portrait photo", "denoising_strength": 0.25},
                   {"frame": 50, "cfg_scale": 5, "interpolation": {"cfg_scale": "hold"}}]}

A bare JSON list is read as the ``keyframes`` list with every other setting at its default.
Invalid content raises :class:`~sadtalker_ext.errors.OptionError` (one line naming the keyframe
and field); an unreadable file raises :class:`~sadtalker_ext.errors.InputError`. numpy only.
"""
from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, OptionError
from ..options import REFINE_MODES as MODES
from .params import (FIELD_SPECS, MASKS, NUMERIC_FIELDS, TEXT_FIELDS, FieldSpec, RefineParams, check_value,
                     optional_param_fields, real as _real, short as _short)

__all__ = [
    "MASKS", "INTERPOLATIONS", "MODES", "FLOWS", "SIZE_NAMES", "SIZE_RANGE", "FIELD_SPECS", "NUMERIC_FIELDS", "TEXT_FIELDS",
    "FieldSpec", "RefineParams", "Keyframe", "KeyframeSchedule", "frame_of_time",
    "prompt_from_infotext", "portrait_prompt",
]

INTERPOLATIONS = ("linear", "hold", "ease")
FLOWS = ("dis", "farneback")
#: The schedule's ``size`` by name (see :class:`KeyframeSchedule`), or whole pixels in SIZE_RANGE (inclusive).
SIZE_NAMES = ("auto", "native")
SIZE_RANGE = (64, 2048)
SCHEMA_VERSION = 1
#: Latest keyframe accepted: 24 hours (``time`` in seconds) or that many frames at 120 fps.
MAX_TIME_S = 24 * 3600.0
MAX_FRAME = int(MAX_TIME_S * 120)
#: Deepest nesting of lists/objects a keyframes JSON may have (a schedule needs 4).
MAX_JSON_DEPTH = 32


def json_depth_ok(data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when lists/dicts in ``data`` nest at most ``limit`` deep (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((c, depth + 1) for c in children)
    return True


def _check_interpolation(mapping: Any, where: str) -> Dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise OptionError(f"{where}: interpolation must map field names to one of {', '.join(INTERPOLATIONS)}")
    out = {}
    for k, v in mapping.items():
        if k not in FIELD_SPECS:
            raise OptionError(f"{where}: interpolation names unknown field {_short(k)}; fields: {', '.join(FIELD_SPECS)}")
        if not isinstance(v, str) or v not in INTERPOLATIONS:
            raise OptionError(f"{where}: interpolation {_short(v)} for {k} is not valid; use one of "
                              f"{', '.join(INTERPOLATIONS)}")
        if not FIELD_SPECS[k].numeric and v != "hold":
            raise OptionError(f"{where}: {k} is text and changes at its keyframe; only 'hold' applies to it")
        out[str(k)] = str(v)
    return out


def frame_of_time(time_s: float, fps: float) -> int:
    """Index of the frame on screen at ``time_s`` seconds: ``floor(time_s * fps + 1e-6)``."""
    return int(math.floor(float(time_s) * float(fps) + 1e-6))


@dataclass
@optional_param_fields(after=2)  # one Optional field per RefineParams field, after frame
class Keyframe:
    """One keyframe: exactly one of ``time`` (s) / ``frame`` (index), then any fields to set.

    Between ``frame`` and ``interpolation`` it has one field per :class:`RefineParams` field (same
    name, ``Optional``); fields left None are not set by this keyframe. ``interpolation`` maps
    numeric field names to "linear" / "hold" / "ease" for the segment from this keyframe to that
    field's next key.
    """

    time: Optional[float] = None
    frame: Optional[int] = None
    interpolation: Dict[str, str] = field(default_factory=dict)

    def validate(self, where: str = "keyframe") -> "Keyframe":
        if (self.time is None) == (self.frame is None):
            raise OptionError(f"{where}: give exactly one of time (seconds) or frame (index)")
        if self.time is not None:
            t = _real(self.time)
            if t is None or not 0 <= t <= MAX_TIME_S:
                raise OptionError(f"{where}: time must be seconds >= 0 (at most {MAX_TIME_S:g}), got {_short(self.time)}")
            self.time = t
        else:
            f = _real(self.frame)
            if f is None or not 0 <= f <= MAX_FRAME or f != math.floor(f):
                raise OptionError(f"{where}: frame must be a whole number in 0..{MAX_FRAME}, got {_short(self.frame)}")
            self.frame = int(f)
        for name in FIELD_SPECS:
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, check_value(name, v, where))
        self.interpolation = _check_interpolation(self.interpolation, where)
        return self

    def index(self, fps: float) -> int:
        """Frame index of this keyframe at ``fps``."""
        return int(self.frame) if self.frame is not None else frame_of_time(self.time, fps)

    def values(self) -> Dict[str, Any]:
        """The fields this keyframe sets, ``{name: value}``."""
        return {n: getattr(self, n) for n in FIELD_SPECS if getattr(self, n) is not None}

    def to_dict(self) -> dict:
        d: Dict[str, Any] = {}
        if self.time is not None:
            d["time"] = self.time
        else:
            d["frame"] = self.frame
        d.update(self.values())
        if self.interpolation:
            d["interpolation"] = dict(self.interpolation)
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str = "keyframe") -> "Keyframe":
        if not isinstance(data, dict):
            raise OptionError(f"{where} must be a JSON object such as {{\"time\": 1.5, \"denoising_strength\": 0.3}}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise OptionError(f"{where}: unknown key(s) {_short(unknown)}; keys: {', '.join(sorted(known))}")
        return cls(**data).validate(where)


@dataclass
class _Key:
    frame: int
    value: Any
    mode: Optional[str]  # interpolation of the segment starting here (None = schedule/field default)


def _smoothstep(u: float) -> float:
    return u * u * (3.0 - 2.0 * u)


@dataclass
class KeyframeSchedule:
    """Keyframes plus the settings of the refinement stage.

    keyframes: any order (see module doc). defaults: values of fields no keyframe sets.
    interpolation: per numeric field, the default mode between keys ("linear" | "hold" | "ease").
    mode: "keyframes" (img2img only on keyframe frames, optical flow in between) or "every"
        (every frame, batched). batch_size: frames per img2img call in "every" mode (1..64).
    same_noise: the same seed and initial noise for every frame (limits flicker); False uses
        ``seed + frame index``. flow: "dis" or "farneback" (keyframes mode).
    size: the img2img size of a face crop: "auto" (its own size in the video's frame, rounded up to
        a multiple of 8, at least 64 and at most the model's native size: a 256 px video is refined
        at about 256 px, not 512), "native" (the model's native size, e.g. 512) or pixels 64..2048;
        for the "full" mask it is the long side.
    max_buffer_mb: frame memory the keyframes mode may hold while waiting for the next keyframe
        (16..65536 MiB; see :mod:`.stage`).
    """

    keyframes: List[Keyframe] = field(default_factory=list)
    defaults: RefineParams = field(default_factory=RefineParams)
    interpolation: Dict[str, str] = field(default_factory=dict)
    mode: str = "keyframes"
    batch_size: int = 4
    same_noise: bool = True
    flow: str = "dis"
    max_buffer_mb: float = 1024.0
    size: Any = "auto"

    # -- validation and (de)serialisation -----------------------------------------------------
    def validate(self) -> "KeyframeSchedule":
        """Check everything; raises OptionError naming the first problem. Returns self."""
        if isinstance(self.defaults, dict):
            self.defaults = RefineParams.from_dict(self.defaults)
        self.defaults.validate("defaults")
        self.interpolation = _check_interpolation(self.interpolation, "schedule")
        if self.mode not in MODES:
            raise OptionError(f"refine mode {_short(self.mode)} is not valid; use one of {', '.join(MODES)}")
        if self.flow not in FLOWS:
            raise OptionError(f"flow {_short(self.flow)} is not valid; use one of {', '.join(FLOWS)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            raise OptionError(f"batch_size must be a whole number in 1..64, got {_short(self.batch_size)}")
        if not isinstance(self.same_noise, bool):
            raise OptionError(f"same_noise must be true or false, got {_short(self.same_noise)}")
        lo, hi = SIZE_RANGE
        if self.size not in SIZE_NAMES and (isinstance(self.size, bool) or not isinstance(self.size, int)
                                            or not lo <= self.size <= hi):
            raise OptionError(f"size must be \"auto\", \"native\" or whole pixels {lo}..{hi}, got {_short(self.size)}")
        mb = self.max_buffer_mb
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 16 <= mb <= 65536:
            raise OptionError(f"max_buffer_mb must be a number in 16..65536, got {_short(mb)}")
        kfs = []
        for i, kf in enumerate(self.keyframes):
            where = f"keyframe {i + 1}"
            kfs.append(Keyframe.from_dict(kf, where) if isinstance(kf, dict) else kf.validate(where))
        self.keyframes = kfs
        return self

    def to_dict(self) -> dict:
        d = {"version": SCHEMA_VERSION, "mode": self.mode, "batch_size": self.batch_size,
             "same_noise": self.same_noise, "flow": self.flow, "max_buffer_mb": self.max_buffer_mb,
             "size": self.size, "defaults": self.defaults.to_dict(), "interpolation": dict(self.interpolation),
             "keyframes": [kf.to_dict() for kf in self.keyframes]}
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "KeyframeSchedule":
        """From a parsed JSON object (or a bare list of keyframes). Raises OptionError."""
        if not json_depth_ok(data):
            raise OptionError(f"keyframes JSON is nested deeper than {MAX_JSON_DEPTH} levels; a schedule needs 4")
        if isinstance(data, list):
            data = {"keyframes": data}
        if not isinstance(data, dict):
            raise OptionError("a keyframes file must hold a JSON object with a \"keyframes\" list, or a list")
        data = dict(data)
        version = data.pop("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise OptionError(f"keyframes file version {_short(version)} is not supported; this version reads {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise OptionError(f"keyframes file: unknown key(s) {_short(unknown)}; keys: version, "
                              f"{', '.join(sorted(known))}")
        kfs = data.get("keyframes", [])
        if not isinstance(kfs, list):
            raise OptionError("keyframes file: \"keyframes\" must be a list of objects")
        data["keyframes"] = [Keyframe.from_dict(kf, f"keyframe {i + 1}") for i, kf in enumerate(kfs)]
        data["defaults"] = RefineParams.from_dict(data.get("defaults", {}) or {})
        return cls(**data).validate()

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "KeyframeSchedule":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise OptionError(f"keyframes JSON is not valid: {exc}") from None
        except RecursionError:  # json's parser recurses per nesting level
            raise OptionError(f"keyframes JSON is nested deeper than {MAX_JSON_DEPTH} levels; a schedule "
                              f"needs 4") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeyframeSchedule":
        """Read a keyframes JSON file. Raises InputError (unreadable) or OptionError (content)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the keyframes file {str(path)!r}: "
                             f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
        try:
            return cls.from_json(text)
        except OptionError as exc:
            raise OptionError(f"{Path(path).name}: {exc.message}") from None

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.write_text(self.to_json() + "\n", encoding="utf-8")
        return p

    # -- evaluation -----------------------------------------------------------------------------
    def with_source_prompt(self, prompt: Optional[str], negative_prompt: Optional[str] = None) -> "KeyframeSchedule":
        """A copy whose default prompt (when it is None) is ``prompt`` (the portrait's generation
        prompt), and whose default negative prompt (when empty) is ``negative_prompt``."""
        d = replace(self.defaults)
        if d.prompt is None:
            d.prompt = prompt or ""
        if not d.negative_prompt and negative_prompt:
            d.negative_prompt = negative_prompt
        return replace(self, defaults=d, keyframes=list(self.keyframes))

    def _merged(self, fps: float) -> List[Tuple[int, Dict[str, Any], Dict[str, str]]]:
        """Keyframes sorted by frame, same-frame ones merged (later in the list wins)."""
        order = sorted(range(len(self.keyframes)), key=lambda i: (self.keyframes[i].index(fps), i))
        merged: List[Tuple[int, Dict[str, Any], Dict[str, str]]] = []
        for i in order:
            kf = self.keyframes[i]
            idx = kf.index(fps)
            if merged and merged[-1][0] == idx:
                merged[-1][1].update(kf.values())
                merged[-1][2].update(kf.interpolation)
            else:
                merged.append((idx, dict(kf.values()), dict(kf.interpolation)))
        return merged

    def _track(self, name: str, fps: float, random_seed: Optional[int]) -> List[_Key]:
        keys = []
        for idx, vals, interp in self._merged(fps):
            if name in vals:
                v = vals[name]
                if name == "seed" and v == -1 and random_seed is not None:
                    v = int(random_seed)
                keys.append(_Key(idx, v, interp.get(name)))
        return keys

    def _value(self, name: str, keys: List[_Key], frame: int) -> Any:
        spec = FIELD_SPECS[name]
        if not keys:
            return getattr(self.defaults, name)
        if frame < keys[0].frame and not spec.numeric:
            return getattr(self.defaults, name)
        if frame <= keys[0].frame:
            return keys[0].value
        if frame >= keys[-1].frame:
            return keys[-1].value
        j = bisect.bisect_right([k.frame for k in keys], frame) - 1
        a, b = keys[j], keys[j + 1]
        if not spec.numeric:
            return a.value
        mode = a.mode or self.interpolation.get(name) or spec.interpolation
        if mode == "hold":
            return a.value
        u = (frame - a.frame) / (b.frame - a.frame)
        if mode == "ease":
            u = _smoothstep(u)
        v = float(a.value) + u * (float(b.value) - float(a.value))
        return int(math.floor(v + 0.5)) if spec.kind == "int" else v

    def params_at(self, frame: int, fps: float, random_seed: Optional[int] = None) -> RefineParams:
        """The parameters at frame index ``frame`` (any integer, see the module doc for frames
        before the first / after the last key). ``random_seed`` replaces seed -1 (defaults and
        keys). A prompt left None (no portrait prompt) is ""."""
        out = {}
        for name in FIELD_SPECS:
            out[name] = self._value(name, self._track(name, fps, random_seed), int(frame))
        if out["prompt"] is None:
            out["prompt"] = ""
        if out["seed"] == -1 and random_seed is not None:
            out["seed"] = int(random_seed)
        return RefineParams(**out)

    def params_for(self, frames: Sequence[int], fps: float, random_seed: Optional[int] = None) -> List[RefineParams]:
        """:meth:`params_at` for many frames (tracks built once)."""
        tracks = {n: self._track(n, fps, random_seed) for n in FIELD_SPECS}
        res = []
        for f in frames:
            out = {n: self._value(n, tracks[n], int(f)) for n in FIELD_SPECS}
            if out["prompt"] is None:
                out["prompt"] = ""
            if out["seed"] == -1 and random_seed is not None:
                out["seed"] = int(random_seed)
            res.append(RefineParams(**out))
        return res

    def track_values(self, name: str, fps: float, num_frames: int) -> np.ndarray:
        """Values of numeric field ``name`` at frames ``0 .. num_frames-1``, float64 ``[num_frames]``."""
        if name not in NUMERIC_FIELDS:
            raise OptionError(f"{name!r} is not a numeric field; numeric fields: {', '.join(NUMERIC_FIELDS)}")
        keys = self._track(name, fps, None)
        return np.array([float(self._value(name, keys, f)) for f in range(int(num_frames))], dtype=np.float64)

    def key_frames_of(self, name: str, fps: float) -> List[int]:
        """Frame indices of the keys of field ``name`` (merged, sorted; may exceed the video)."""
        return [k.frame for k in self._track(name, fps, None)]

    def keyframe_frames(self, fps: float, num_frames: Optional[int] = None) -> List[int]:
        """Sorted, unique frame indices of the keyframes; with ``num_frames``, only those inside
        the video (``< num_frames``) - the frames the keyframes mode sends to img2img."""
        idx = [m[0] for m in self._merged(fps)]
        if num_frames is not None:
            idx = [i for i in idx if i < int(num_frames)]
        return idx


# -- the portrait's own prompt ---------------------------------------------------------------------
def prompt_from_infotext(text: Optional[str]) -> Tuple[str, str]:
    """(prompt, negative prompt) from an AUTOMATIC1111 "parameters" text, ("", "") when absent.

    Layout written by the WebUI: the prompt (possibly several lines), then optionally a line
    starting with ``Negative prompt:`` (continuing over lines), then a last line of
    ``Steps: N, Sampler: ..., ...`` settings.
    """
    if not text or not isinstance(text, str):
        return "", ""
    lines = text.strip().split("\n")
    if lines and lines[-1].lstrip().startswith("Steps:"):
        lines = lines[:-1]
    prompt_lines, neg_lines, in_neg = [], [], False
    for line in lines:
        if not in_neg and line.startswith("Negative prompt:"):
            in_neg = True
            line = line[len("Negative prompt:"):].strip()
        (neg_lines if in_neg else prompt_lines).append(line)
    return "\n".join(prompt_lines).strip(), "\n".join(neg_lines).strip()


def portrait_prompt(image: Any) -> Tuple[str, str]:
    """(prompt, negative prompt) the portrait was generated with, when it came from txt2img.

    image: a path, or a PIL image (its ``info["parameters"]``, the PNG text chunk the WebUI
    writes), or anything else (numpy arrays carry no metadata) -> ("", ""). Never raises.
    """
    info = None
    try:
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image
            with Image.open(image) as im:
                info = im.info.get("parameters")
        elif hasattr(image, "info") and isinstance(getattr(image, "info"), dict):
            info = image.info.get("parameters")
    except Exception:  # unreadable metadata is simply "no prompt"
        return "", ""
    return prompt_from_infotext(info)
