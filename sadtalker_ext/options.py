"""Options of a generation run, declared once: each field's metadata (:class:`Option`) gives its range,
choices, unit, label, help and whether it names a server path, and drives :meth:`GenerateOptions.validate`,
the CLI's flags (``cli/main.py``), the tab's controls (``ui/controls.py``), the HTTP API's accepted keys
(``api/inputs.py``) and the WebUI settings' choice lists (``host/a1111.py``).

Options are grouped by stage: :class:`MotionOptions` (engine, face and motion), :class:`LipsyncOptions`
(Wav2Lip-UHQ), :class:`RefineOptions` (img2img) and :class:`OutputOptions` (encoding and streaming);
:class:`GenerateOptions` is all four. To add an option, add one field with :func:`option` to its group.
"""
from __future__ import annotations

import re
import reprlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np

from .errors import OptionError

ENGINES = ("auto", "lite", "sadtalker")
PREPROCESS = ("crop", "resize", "full", "extcrop", "extfull")
#: Preprocess modes only the SadTalker engine has (the official extended crops).
SADTALKER_ONLY_PREPROCESS = ("extcrop", "extfull")
#: Preprocess modes of the lite engine (and of :mod:`sadtalker_ext.face.crop`).
LITE_PREPROCESS = tuple(m for m in PREPROCESS if m not in SADTALKER_ONLY_PREPROCESS)
PRECISIONS = ("fp32", "fp16", "bf16")
PHONEME_SOURCES = ("auto", "acoustic", "pocketsphinx")
LIPSYNC = ("auto", "none", "wav2lip")
RESTORERS = ("none", "gfpgan", "codeformer", "restoreformer")
REFINE_MODES = ("every", "keyframes")
SIZES = (256, 512)
#: Device names offered in the tab (``cuda:N`` is also accepted).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Pixel range of the lip-sync mask sizes (dilate, erode, blur).
MASK_PX = (0.0, 256.0)
#: Longest ``transcript`` accepted (characters; the text-to-speech limit, about 4 hours of speech).
MAX_TRANSCRIPT_CHARS = 200_000
#: Unknown option names listed in an error message at most (each cut to 40 characters).
_MAX_NAMES_SHOWN = 5
#: Stages, in run order, with the title of their CLI argument group.
STAGES = {"motion": "generation", "lipsync": "lip-sync (Wav2Lip-UHQ)", "refine": "img2img refinement",
          "output": "generation"}


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 60, 60, 6, 6


def _short(value, limit: int = 80) -> str:
    """A bounded ``repr(value)`` (a few nesting levels, ~60 characters per string) for one-line
    messages about hostile input; never raises."""
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr raises is still described
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _as_int(v):
    """``v`` as a Python int when it is an integer (int or numpy integer, not bool), else None."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    return int(v)


def _as_float(v):
    """``v`` as a Python float when it is a real number (int/float/numpy, not bool), else None."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    return float(v)

@dataclass(frozen=True)
class Option:
    """What one option is, for every front end (the metadata of its dataclass field, key ``"option"``).

    stage: "motion", "lipsync", "refine" or "output". label: the tab's label. help: the CLI's help
    (argparse ``%(default)s`` allowed). range: inclusive (lo, hi) checked by ``validate``; the tab's
    slider/number bounds are the same (``ui_max=False``: the number box has no upper bound, for the seed
    whose 2**63 - 1 a browser's float cannot hold). choices: allowed values (a dropdown in the tab,
    ``choices=`` on the CLI when ``cli_choices``). suggestions: values offered in the tab for a free-form
    option (``device``, ``language``). unit: e.g. "px". value: "value" (safe over HTTP), "path" (names a
    file or folder on the server: refused by the API, hidden in the tab unless the host allows it) or
    "path_or_data" (a server path or the data itself; the API takes the data only). flag: the CLI flag
    (None: not a generation flag; ``--lang`` comes with the text-to-speech flags). invert: a
    ``--no-x`` flag that sets the option false. check: validator used instead of the generic one
    (``check(options, name)``; raises OptionError, may normalise the value). section/step/control/info/
    lines/file_types/metavar: how the tab shows it and the CLI names its argument.
    """

    stage: str
    label: str
    help: str = ""
    range: Optional[tuple] = None
    choices: tuple = ()
    suggestions: tuple = ()
    unit: str = ""
    value: str = "value"
    flag: Optional[str] = ""
    invert: bool = False
    cli_choices: bool = True
    check: Optional[Callable[[Any, str], None]] = None
    section: str = "Other"
    control: Optional[str] = None
    step: Optional[float] = None
    ui_max: bool = True
    info: Optional[str] = None
    lines: int = 1
    file_types: tuple = ()
    metavar: Any = None


def option(default=None, *, default_factory=None, **meta) -> Any:
    """A dataclass field whose metadata is ``Option(**meta)``."""
    md = {"option": Option(**meta)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


def spec_of(f) -> Optional[Option]:
    """The :class:`Option` of a dataclass field (None for a field declared without :func:`option`)."""
    return f.metadata.get("option")


def flag_of(name: str, spec: Optional[Option] = None) -> Optional[str]:
    """The CLI flag of option ``name`` ("--pose-style"); None when it has none."""
    if spec is not None and spec.flag is None:
        return None
    if spec is not None and spec.flag:
        return spec.flag
    return "--" + name.replace("_", "-")


def schema(cls=None) -> dict:
    """``{name: Option}`` of every declared option of ``cls`` (GenerateOptions), in field order."""
    cls = cls or GenerateOptions
    return {f.name: spec_of(f) for f in fields(cls) if spec_of(f) is not None}


def names(value: str) -> frozenset:
    """Names of the options whose ``value`` kind is ``value`` ("value", "path", "path_or_data")."""
    return frozenset(n for n, s in schema().items() if s.value == value)


# ---------------------------------------------------------------------------------- validators
def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_choice(opts, name: str, allowed: tuple, optional: bool) -> None:
    v = getattr(opts, name)
    if optional and v is None:
        return
    if all(isinstance(a, str) for a in allowed):
        if not isinstance(v, str) or v not in allowed:
            raise OptionError(f"{_dash(name)} {_short(v)} is not valid; use one of {', '.join(allowed)}")
        return
    num = _as_int(v)
    if num not in allowed:
        raise OptionError(f"{_dash(name)} must be {' or '.join(str(a) for a in allowed)} (a whole number), "
                          f"got {_short(v)}")
    setattr(opts, name, num)


def _check_range(opts, name: str, lo, hi, integer: bool) -> None:
    v = getattr(opts, name)
    num = _as_int(v) if integer else _as_float(v)
    if num is None or not (lo <= num <= hi):
        hint = " (a whole number is needed)" if integer and _as_float(v) is not None and num is None else ""
        raise OptionError(f"{_dash(name)} must be a number in {lo}..{hi}, got {_short(v)}{hint}")
    setattr(opts, name, num)  # numpy scalars become Python numbers (JSON sidecar, hashing)


def _check_bool(opts, name: str) -> None:
    v = getattr(opts, name)
    if isinstance(v, np.bool_):
        v = bool(v)
    if not isinstance(v, bool):
        raise OptionError(f"{_dash(name)} must be true or false (a boolean), got {_short(v)}")
    setattr(opts, name, v)


def _path_check(what: str):
    def check(opts, name):
        v = getattr(opts, name)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise OptionError(f"{_dash(name)} must be the path of {what}")
    return check


def _check_device(opts, name):
    dev = opts.device
    if not isinstance(dev, str) or not (dev in DEVICES or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise OptionError(f"--device {_short(dev)} is not valid; use {', '.join(DEVICES[:3])}, cuda:N or "
                          f"{DEVICES[3]}")


def _check_fps(opts, name):
    if _as_int(opts.fps) != 25:
        raise OptionError("only 25 fps output is supported (the audio models are trained at 25 fps)")
    opts.fps = 25


def _check_transcript(opts, name):
    if opts.transcript is not None and not isinstance(opts.transcript, str):
        raise OptionError("--transcript must be text")
    if opts.transcript is not None and len(opts.transcript) > MAX_TRANSCRIPT_CHARS:
        raise OptionError(f"--transcript is {len(opts.transcript)} characters; at most {MAX_TRANSCRIPT_CHARS} "
                          f"are accepted (leave it out to recognise the speech)")


def _check_language(opts, name):
    lang = opts.language
    if (not isinstance(lang, str) or len(lang) > 32
            or not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]+)*", lang)):
        raise OptionError(f"--lang {_short(lang)} is not a language code; use e.g. en, ru, zh")


def _check_pads(opts, name):
    pads = opts.pads
    lo, hi = schema()["pads"].range
    if (isinstance(pads, (str, bytes)) or not hasattr(pads, "__len__") or len(pads) != 4
            or any(_as_int(p) is None or not lo <= p <= hi for p in pads)):
        raise OptionError(f"--pads needs 4 integers top bottom left right in {lo}..{hi}, got {_short(pads)}")
    opts.pads = tuple(int(p) for p in pads)


def _check_refine(opts, name):
    v = opts.refine
    if v is not None and not (isinstance(v, (dict, list)) or (isinstance(v, str) and v.strip())):
        raise OptionError("--refine must be the path of a keyframes JSON file")


def _validate_fields(opts) -> None:
    """Check every declared option of ``opts`` from its :class:`Option`, in field order."""
    for f in fields(opts):
        spec = spec_of(f)
        if spec is None:
            continue
        if spec.check is not None:
            spec.check(opts, f.name)
        elif isinstance(f.default, bool):
            _check_bool(opts, f.name)
        elif spec.choices:
            _check_choice(opts, f.name, spec.choices, optional=f.default is None)
        elif spec.range is not None:
            _check_range(opts, f.name, *spec.range, integer=isinstance(f.default, int))


# ---------------------------------------------------------------------------------- the options
@dataclass
class MotionOptions:
    """Engine, face and motion. Units: sizes in pixels, scales unitless.

    engine: "auto" (best available: sadtalker when its checkpoints and torch are present, else
        lite), "lite" (weights-free mesh warping) or "sadtalker".
    preprocess: "crop" (face-centred square at ``size``), "resize" (whole image, long side
        ``size``), "full" (whole image at its resolution, capped at ``max_side``; face pasted back);
        "extcrop"/"extfull" (sadtalker only).
    size: 256 or 512. still: freeze head pose. pose_style: 0..45. expression_scale: 0..3 scales
        mouth/face motion. seed: makes every random choice repeatable. face_index: which face
        (0 = largest). blinks: eye blinks on/off.
    phonemes: where the lite engine gets mouth shapes: "auto" (pocketsphinx alignment for English
        when installed, else acoustic), "acoustic", "pocketsphinx". transcript: text of the speech
        for forced alignment (optional). language: code of the spoken language; pocketsphinx phoneme
        alignment is used for "en" only, other languages get acoustic mouth shapes (or TTS phonemes).
    Neural engines (sadtalker): checkpoints: folder of model files. batch_size: frames rendered per
        forward pass (1..64). ref_eyeblink / ref_pose: path of a reference video whose eye blinks /
        head motion are copied. device: "auto" (CUDA when available, else CPU), "cpu", "cuda",
        "cuda:N" or "mps". precision: "fp32", or "fp16" / "bf16" autocast of the renderer.
    """

    engine: str = option("auto", stage="motion", choices=ENGINES, section="main", label="Engine",
                         help="animator (default: %(default)s)", info="auto = the best available engine")
    preprocess: str = option("crop", stage="motion", choices=PREPROCESS, section="main", label="Preprocess",
                             help="default: %(default)s",
                             info="crop: face square; resize: whole image; full: face pasted back into the "
                                  "original")
    size: int = option(512, stage="motion", choices=SIZES, unit="px", section="main", label="Face resolution",
                       help="256 or 512 (default: %(default)s)", cli_choices=False)
    still: bool = option(False, stage="motion", section="main", label="Still (no head motion)",
                         help="keep the head still (mouth, eyes and brows move)")
    pose_style: int = option(0, stage="motion", range=(0, 45), section="main", label="Pose style",
                             control="slider", step=1, help="head-motion style 0..45")
    expression_scale: float = option(1.0, stage="motion", range=(0.0, 3.0), section="main",
                                     label="Expression scale", control="slider", step=0.05,
                                     help="0..3, scales face motion")
    seed: int = option(0, stage="motion", range=(0, 2**63 - 1), ui_max=False, section="main", label="Seed",
                       info="same seed = same video", help="random seed; same seed = same video")
    face_index: int = option(0, stage="motion", range=(0, 63), section="Face and motion",
                             label="Face index (0 = largest)", help="which face, 0 = largest")
    blinks: bool = option(True, stage="motion", flag="--no-blinks", invert=True, section="Face and motion",
                          label="Eye blinks", help="disable eye blinks")
    max_side: int = option(2048, stage="motion", range=(256, 8192), unit="px", section="Face and motion",
                           label="Max side of 'full' output (px)", control="slider", step=64,
                           help="long-side cap of 'full' output, pixels")
    phonemes: str = option("auto", stage="motion", choices=PHONEME_SOURCES, section="Face and motion",
                           label="Mouth shapes from (lite engine)",
                           help="mouth shapes from pocketsphinx alignment (English) or acoustics")
    transcript: Optional[str] = option(None, stage="motion", check=_check_transcript, section="Face and motion",
                                       label="Transcript (optional, for forced alignment)", lines=2,
                                       help="text of the speech, for forced alignment")
    language: str = option("en", stage="motion", check=_check_language, flag=None, suggestions=("en", "ru", "zh"),
                           section="main", label="Spoken language",
                           info="code of the speech's language (also the text-to-speech voice)")
    checkpoints: Optional[str] = option(None, stage="motion", value="path", section="Neural engine",
                                        label="Checkpoint folder (empty = default lookup)",
                                        help="folder with model files (neural engines)")
    batch_size: int = option(2, stage="motion", range=(1, 64), section="Neural engine", label="Batch size",
                             control="slider", step=1,
                             help="frames rendered per forward pass, sadtalker engine (default: %(default)s)")
    ref_eyeblink: Optional[str] = option(None, stage="motion", value="path", check=_path_check("a video file"),
                                         section="Face and motion", control="file", file_types=("video",),
                                         label="Reference video for eye blinks (sadtalker)", metavar="VIDEO",
                                         help="copy eye blinks from this video (sadtalker engine)")
    ref_pose: Optional[str] = option(None, stage="motion", value="path", check=_path_check("a video file"),
                                     section="Face and motion", control="file", file_types=("video",),
                                     label="Reference video for head pose (sadtalker)", metavar="VIDEO",
                                     help="copy head motion from this video (sadtalker engine)")
    device: str = option("auto", stage="motion", check=_check_device, suggestions=DEVICES, section="Neural engine",
                         label="Device", info="or cuda:N",
                         help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    precision: str = option("fp32", stage="motion", choices=PRECISIONS, section="Neural engine",
                            label="Precision (fp16/bf16 on CUDA)",
                            help="fp16/bf16 renderer autocast on CUDA (default: %(default)s)")


@dataclass
class LipsyncOptions:
    """Lip-sync (Wav2Lip-UHQ stage). lipsync: "auto" (Wav2Lip when its checkpoint is present), "none",
    "wav2lip". pads: (top, bottom, left, right) pixels added to the face box. mouth_mask_dilate /
    face_mask_erode / mask_blur: pixels (0..256) of lip-mask growth, face-oval shrinkage and feathering.
    only_mouth: paste only the lips. restore: face restoration of the refined region ("none", "gfpgan",
    "codeformer", "restoreformer"); restore_fidelity: 0..1 (CodeFormer). wav2lip_batch_size: frames per
    Wav2Lip forward (1..1024). lipsync_debug: folder for the masks/crops of one frame (None: off).
    """

    lipsync: str = option("none", stage="lipsync", choices=LIPSYNC, section="Lip-sync (Wav2Lip)",
                          label="Lip-sync refinement", help="Wav2Lip lip refinement")
    pads: tuple = option((0, 10, 0, 0), stage="lipsync", range=(-1024, 1024), unit="px", check=_check_pads,
                         section="Lip-sync (Wav2Lip)", label="Face box padding: top, bottom, left, right (px)",
                         metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                         help="pixels added to the face box (default: %(default)s)")
    mouth_mask_dilate: float = option(8.0, stage="lipsync", range=MASK_PX, unit="px", section="Lip-sync (Wav2Lip)",
                                      label="Mouth mask dilate (px)", control="slider", step=0.5,
                                      help="lip mask growth, px")
    face_mask_erode: float = option(4.0, stage="lipsync", range=MASK_PX, unit="px", section="Lip-sync (Wav2Lip)",
                                    label="Face mask erode (px)", control="slider", step=0.5,
                                    help="face oval shrinkage, px")
    mask_blur: float = option(8.0, stage="lipsync", range=MASK_PX, unit="px", section="Lip-sync (Wav2Lip)",
                              label="Mask blur (px)", control="slider", step=0.5, help="mask feathering, px")
    only_mouth: bool = option(False, stage="lipsync", section="Lip-sync (Wav2Lip)", label="Paste only the mouth",
                              help="paste only the lips, not the lower face")
    restore: str = option("none", stage="lipsync", choices=RESTORERS, section="Lip-sync (Wav2Lip)",
                          label="Face restoration", help="face restoration of the refined region")
    restore_fidelity: float = option(0.5, stage="lipsync", range=(0.0, 1.0), section="Lip-sync (Wav2Lip)",
                                     label="Restoration fidelity (CodeFormer)", control="slider", step=0.05,
                                     help="CodeFormer fidelity 0..1")
    wav2lip_batch_size: int = option(16, stage="lipsync", range=(1, 1024), section="Lip-sync (Wav2Lip)",
                                     label="Wav2Lip batch size", help="frames per Wav2Lip forward")
    lipsync_debug: Optional[str] = option(None, stage="lipsync", value="path", check=_path_check("a folder"),
                                          section="Lip-sync (Wav2Lip)", metavar="DIR",
                                          label="Debug folder name (masks of one frame; made inside the output "
                                                "folder)",
                                          help="write the masks/crops of one frame here")


@dataclass
class RefineOptions:
    """img2img refinement (:mod:`sadtalker_ext.refine`). refine: keyframes JSON file path (or the parsed
    JSON object; None: off). refine_mode: "every" | "keyframes" (None: the
    schedule's own). sd_checkpoint: SD model for standalone refinement (single-file .safetensors/.ckpt or
    diffusers folder; None: the host's loaded model).
    """

    refine: object = option(None, stage="refine", value="path_or_data", check=_check_refine,
                            section="Refinement (img2img)", control="file", file_types=(".json",),
                            label="Keyframes JSON (empty = no refinement)", metavar="KEYFRAMES_JSON",
                            help="refine the frames with Stable Diffusion img2img under this keyframe schedule")
    refine_mode: Optional[str] = option(None, stage="refine", choices=REFINE_MODES, section="Refinement (img2img)",
                                        label="Refine mode (empty = the file's own)",
                                        help="img2img on every frame (batched) or on keyframes only, carried by "
                                             "optical flow (default: the schedule's, else keyframes)")
    sd_checkpoint: Optional[str] = option(None, stage="refine", value="path",
                                          check=_path_check("a Stable Diffusion model file or folder"),
                                          section="Refinement (img2img)", metavar="PATH",
                                          label="SD checkpoint: name of a file in the models folder (standalone "
                                                "only; the WebUI uses its loaded model)",
                                          help="SD model for refinement: .safetensors/.ckpt or diffusers folder")


@dataclass
class OutputOptions:
    """Streaming and encoding. chunk_size: frames per streamed chunk (1..256). fps: frames/s (25 only).
    crf: H.264 quality (0..51, lower = better)."""

    chunk_size: int = option(25, stage="output", range=(1, 256), section="Output", label="Frames per chunk",
                             control="slider", step=1, help="frames per streamed chunk")
    fps: int = option(25, stage="output", range=(25, 25), unit="frames/s", check=_check_fps, flag=None,
                      section="Output", label="Frames per second")
    crf: int = option(18, stage="output", range=(0, 51), section="Output",
                      label="H.264 quality (CRF, lower = better)", control="slider", step=1,
                      help="H.264 quality 0..51 (lower is better)")


@dataclass
class GenerateOptions(OutputOptions, RefineOptions, LipsyncOptions, MotionOptions):
    """Every knob of a run: :class:`MotionOptions`, :class:`LipsyncOptions`, :class:`RefineOptions` and
    :class:`OutputOptions` (in that field order)."""

    def validate(self) -> "GenerateOptions":
        """Raise OptionError naming the first invalid option and its allowed values."""
        _validate_fields(self)
        if self.engine == "lite" and self.preprocess in SADTALKER_ONLY_PREPROCESS:
            raise OptionError(f"--preprocess {self.preprocess} needs --engine sadtalker; the lite "
                              f"engine supports {', '.join(LITE_PREPROCESS[:-1])} and {LITE_PREPROCESS[-1]}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerateOptions":
        """Build from a mapping (JSON from the API); unknown keys raise OptionError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted((str(k) for k in data if k not in known), key=lambda k: (len(k), k))
        if unknown:
            shown = ", ".join(k if len(k) <= 40 else k[:37] + "..." for k in unknown[:_MAX_NAMES_SHOWN])
            more = f" and {len(unknown) - _MAX_NAMES_SHOWN} more" if len(unknown) > _MAX_NAMES_SHOWN else ""
            raise OptionError(f"unknown option(s): {shown}{more}; known: {', '.join(sorted(known))}")
        return cls(**data).validate()


#: Options that take true/false; anything else (the string "false", 0, None) is refused.
BOOL_OPTIONS = tuple(f.name for f in fields(GenerateOptions) if isinstance(f.default, bool))
