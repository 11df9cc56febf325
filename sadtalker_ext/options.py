"""Options of a generation run, validated in one place for the CLI, the tab and the HTTP API."""
from __future__ import annotations

import re
import reprlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import OptionError

ENGINES = ("auto", "lite", "sadtalker")
PREPROCESS = ("crop", "resize", "full", "extcrop", "extfull")
#: Preprocess modes only the SadTalker engine has (the official extended crops).
SADTALKER_ONLY_PREPROCESS = ("extcrop", "extfull")
PRECISIONS = ("fp32", "fp16", "bf16")
PHONEME_SOURCES = ("auto", "acoustic", "pocketsphinx")
LIPSYNC = ("auto", "none", "wav2lip")
RESTORERS = ("none", "gfpgan", "codeformer", "restoreformer")
REFINE_MODES = ("every", "keyframes")
#: Longest ``transcript`` accepted (characters; the text-to-speech limit, about 4 hours of speech).
MAX_TRANSCRIPT_CHARS = 200_000
#: Unknown option names listed in an error message at most (each cut to 40 characters).
_MAX_NAMES_SHOWN = 5


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

#: Options that take true/false; anything else (the string "false", 0, None) is refused.
BOOL_OPTIONS = ("still", "blinks", "only_mouth")


@dataclass
class GenerateOptions:
    """Every knob of a run. Units: fps in frames/s, sizes in pixels, scales unitless.

    engine: "auto" (best available: sadtalker when its checkpoints and torch are present, else
        lite), "lite" (weights-free mesh warping) or "sadtalker".
    preprocess: "crop" (face-centred square at ``size``), "resize" (whole image, long side
        ``size``), "full" (whole image at its resolution, capped at ``max_side``; face pasted back).
    size: 256 or 512. still: freeze head pose. pose_style: 0..45. expression_scale: 0..3 scales
        mouth/face motion. seed: makes every random choice repeatable. face_index: which face
        (0 = largest). blinks: eye blinks on/off. chunk_size: frames per streamed chunk (1..256).
    phonemes: where the lite engine gets mouth shapes: "auto" (pocketsphinx alignment for English
        when installed, else acoustic), "acoustic", "pocketsphinx". transcript: text of the speech
        for forced alignment (optional). language: code of the spoken language; pocketsphinx phoneme
        alignment is used for "en" only, other languages get acoustic mouth shapes (or TTS phonemes).
        lipsync: "auto" (Wav2Lip when its checkpoint is present), "none", "wav2lip". crf: H.264 quality (0..51, lower = better).
    Neural engines (sadtalker): batch_size: frames rendered per forward pass (1..64).
        ref_eyeblink / ref_pose: path of a reference video whose eye blinks / head motion are
        copied. device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps".
        precision: "fp32", or "fp16" / "bf16" autocast of the renderer on CUDA.
    Lip-sync (Wav2Lip-UHQ stage): pads: (top, bottom, left, right) pixels added to the face box.
        mouth_mask_dilate / face_mask_erode / mask_blur: pixels of lip-mask growth, face-oval
        shrinkage and feathering. only_mouth: paste only the lips. restore: face restoration of the
        refined region ("none", "gfpgan", "codeformer", "restoreformer"); restore_fidelity: 0..1
        (CodeFormer). wav2lip_batch_size: frames per Wav2Lip forward (1..1024). lipsync_debug:
        folder for the masks/crops of one frame (None: off).
    img2img refinement (:mod:`sadtalker_ext.refine`): refine: keyframes JSON file path (or the
        parsed JSON object / a KeyframeSchedule; None: off). refine_mode: "every" | "keyframes"
        (None: the schedule's own). sd_checkpoint: SD model for standalone refinement (single-file
        .safetensors/.ckpt or diffusers folder; None: the host's loaded model).
    """

    engine: str = "auto"
    preprocess: str = "crop"
    size: int = 512
    still: bool = False
    pose_style: int = 0
    expression_scale: float = 1.0
    seed: int = 0
    face_index: int = 0
    blinks: bool = True
    chunk_size: int = 25
    fps: int = 25
    max_side: int = 2048
    phonemes: str = "auto"
    transcript: str | None = None
    language: str = "en"
    lipsync: str = "none"
    crf: int = 18
    checkpoints: str | None = None
    batch_size: int = 2
    ref_eyeblink: str | None = None
    ref_pose: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    pads: tuple = (0, 10, 0, 0)
    mouth_mask_dilate: float = 8.0
    face_mask_erode: float = 4.0
    mask_blur: float = 8.0
    only_mouth: bool = False
    restore: str = "none"
    restore_fidelity: float = 0.5
    wav2lip_batch_size: int = 16
    lipsync_debug: str | None = None
    refine: object = None
    refine_mode: str | None = None
    sd_checkpoint: str | None = None

    def validate(self) -> "GenerateOptions":
        """Raise OptionError naming the first invalid option and its allowed values."""
        def choice(name, allowed):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in allowed:
                raise OptionError(f"--{name.replace('_', '-')} {_short(v)} is not valid; use one of {', '.join(allowed)}")

        def rng(name, lo, hi, kind=(int, float)):
            v = getattr(self, name)
            num = _as_int(v) if kind is int else _as_float(v)
            if num is None or not (lo <= num <= hi):
                hint = " (a whole number is needed)" if kind is int and _as_float(v) is not None and num is None else ""
                raise OptionError(f"--{name.replace('_', '-')} must be a number in {lo}..{hi}, got {_short(v)}{hint}")
            setattr(self, name, num)  # numpy scalars become Python numbers (JSON sidecar, hashing)

        def flag(name):
            v = getattr(self, name)
            if isinstance(v, np.bool_):
                v = bool(v)
            if not isinstance(v, bool):
                raise OptionError(f"--{name.replace('_', '-')} must be true or false (a boolean), got {_short(v)}")
            setattr(self, name, v)

        choice("engine", ENGINES)
        choice("preprocess", PREPROCESS)
        choice("phonemes", PHONEME_SOURCES)
        choice("lipsync", LIPSYNC)
        for name in BOOL_OPTIONS:
            flag(name)
        size = _as_int(self.size)
        if size not in (256, 512):
            raise OptionError(f"--size must be 256 or 512 (a whole number), got {_short(self.size)}")
        self.size = size
        rng("pose_style", 0, 45, int)
        rng("expression_scale", 0.0, 3.0)
        rng("seed", 0, 2**63 - 1, int)
        rng("face_index", 0, 63, int)
        rng("chunk_size", 1, 256, int)
        rng("crf", 0, 51, int)
        rng("max_side", 256, 8192, int)
        rng("batch_size", 1, 64, int)
        choice("precision", PRECISIONS)
        if self.engine == "lite" and self.preprocess in SADTALKER_ONLY_PREPROCESS:
            raise OptionError(f"--preprocess {self.preprocess} needs --engine sadtalker; the lite "
                              f"engine supports crop, resize and full")
        for name in ("ref_eyeblink", "ref_pose"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise OptionError(f"--{name.replace('_', '-')} must be the path of a video file")
        dev = self.device
        if not isinstance(dev, str) or not (dev in ("auto", "cpu", "cuda", "mps") or (
                dev.startswith("cuda:") and dev[5:].isdigit())):
            raise OptionError(f"--device {_short(dev)} is not valid; use auto, cpu, cuda, cuda:N or mps")
        if _as_int(self.fps) != 25:
            raise OptionError("only 25 fps output is supported (the audio models are trained at 25 fps)")
        self.fps = 25
        if self.transcript is not None and not isinstance(self.transcript, str):
            raise OptionError("--transcript must be text")
        if self.transcript is not None and len(self.transcript) > MAX_TRANSCRIPT_CHARS:
            raise OptionError(f"--transcript is {len(self.transcript)} characters; at most {MAX_TRANSCRIPT_CHARS} "
                              f"are accepted (leave it out to recognise the speech)")
        if (not isinstance(self.language, str) or len(self.language) > 32
                or not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]+)*", self.language)):
            raise OptionError(f"--lang {_short(self.language)} is not a language code; use e.g. en, ru, zh")
        pads = self.pads
        if (isinstance(pads, (str, bytes)) or not hasattr(pads, "__len__") or len(pads) != 4
                or any(_as_int(p) is None or not -1024 <= p <= 1024 for p in pads)):
            raise OptionError(f"--pads needs 4 integers top bottom left right in -1024..1024, got {_short(pads)}")
        self.pads = tuple(int(p) for p in pads)
        for name in ("mouth_mask_dilate", "face_mask_erode", "mask_blur"):
            rng(name, 0.0, 256.0)
        choice("restore", RESTORERS)
        rng("restore_fidelity", 0.0, 1.0)
        rng("wav2lip_batch_size", 1, 1024, int)
        if self.lipsync_debug is not None and (not isinstance(self.lipsync_debug, str) or not self.lipsync_debug.strip()):
            raise OptionError("--lipsync-debug must be the path of a folder")
        if self.refine is not None and not (isinstance(self.refine, (dict, list)) or type(self.refine).__name__ == "KeyframeSchedule"
                                            or (isinstance(self.refine, str) and self.refine.strip())):
            raise OptionError("--refine must be the path of a keyframes JSON file")
        if self.refine_mode is not None:
            choice("refine_mode", REFINE_MODES)
        if self.sd_checkpoint is not None and (not isinstance(self.sd_checkpoint, str) or not self.sd_checkpoint.strip()):
            raise OptionError("--sd-checkpoint must be the path of a Stable Diffusion model file or folder")
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
