"""Request validation for the HTTP API, independent of the web framework.

The same limits as the tab: image files up to 20 MB and 8192 x 8192 pixels, audio files up to
50 MB; images must be PNG/JPEG/WebP/GIF/BMP/TIFF. Files arrive as bytes (multipart) or base64
(JSON); the API never reads a path on the server, so path-like values and the file-naming options
(``checkpoints``, ``ref_eyeblink``, ``ref_pose``, ``lipsync_debug``, ``sd_checkpoint``; ``refine``
given as a file name) are refused with a 4xx.
Options missing from a request take the host's settings (default engine, precision), then the
:class:`~sadtalker_ext.options.GenerateOptions` defaults.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ImageError, InputError, OptionError
from ..frontend import host_defaults
from .. import options as options_mod
from ..options import GenerateOptions

MB = 1024 * 1024


class PayloadTooLarge(InputError):
    """A file or the request body is over the size limit (HTTP 413)."""

    http_status = 413


class MalformedRequest(InputError):
    """The request body is not the JSON object expected, e.g. nested too deep (HTTP 400)."""

    http_status = 400


#: Deepest nesting of lists/objects accepted in a request (the ``refine`` schedule needs 5).
MAX_JSON_DEPTH = 32


def check_depth(obj: Any, what: str = "the request") -> None:
    """MalformedRequest when lists/objects in ``obj`` nest deeper than MAX_JSON_DEPTH (no recursion)."""
    from ..refine.keyframes import json_depth_ok

    if not json_depth_ok(obj, MAX_JSON_DEPTH):
        raise MalformedRequest(f"{what} is JSON nested deeper than {MAX_JSON_DEPTH} levels; send a flat "
                               f"object of options")


def loads(text, what: str = "the request body"):
    """``json.loads`` that answers hostile JSON with a 4xx: invalid -> InputError, nested beyond
    the parser's recursion limit or MAX_JSON_DEPTH -> MalformedRequest."""
    try:
        obj = json.loads(text)
    except RecursionError:
        raise MalformedRequest(f"{what} is JSON nested deeper than {MAX_JSON_DEPTH} levels; send a flat "
                               f"object of options") from None
    check_depth(obj, what)
    return obj


class UnsupportedMediaType(InputError):
    """Wrong content type of the request or of a file (HTTP 415)."""

    http_status = 415


@dataclass(frozen=True)
class Limits:
    """Size limits (bytes, pixels) of one request."""

    image_bytes: int = 20 * MB
    audio_bytes: int = 50 * MB
    image_pixels: int = 8192 * 8192

    @property
    def max_side(self) -> int:
        """Side of the largest square image allowed (8192 by default)."""
        return math.isqrt(self.image_pixels)

    def body_bytes(self, base64_encoded: bool) -> int:
        """Largest accepted request body: both files (+1/3 for base64) and 1 MB for the rest."""
        files = self.image_bytes + self.audio_bytes
        return (files * 4 // 3 if base64_encoded else files) + MB


#: Options that name files or folders on the server: never accepted over HTTP.
PATH_OPTIONS = options_mod.names("path")
#: Options that take either a server path (refused) or the data itself (accepted).
PATH_OR_DATA_OPTIONS = options_mod.names("path_or_data")
#: String options that are plain values (choices or text), safe over HTTP.
VALUE_OPTIONS = frozenset(n for n in options_mod.names("value")
                          if isinstance(getattr(options_mod.GenerateOptions(), n), (str, type(None))))
_PATHY_NAME = re.compile(r"(path|dir|folder|file|checkpoint|debug)", re.IGNORECASE)
_PATHY_PREFIX = re.compile(r"^(file:|~|\.{1,2}[\\/]|[A-Za-z]:[\\/]|\\\\)")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")
REQUEST_FIELDS = ("image", "audio", "options", "return_video")

_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
                (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def is_path_option(name: str) -> bool:
    """True for option/field names that would make the server read or write a path."""
    return name in PATH_OPTIONS or (name not in VALUE_OPTIONS and name not in REQUEST_FIELDS
                                    and name not in PATH_OR_DATA_OPTIONS and bool(_PATHY_NAME.search(name)))


def looks_like_path(value: str) -> bool:
    """True for strings such as ``/etc/passwd``, ``C:\\x.png``, ``~/a.wav``, ``file:///...``."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if len(text) > 4096:
        return False
    if _PATHY_PREFIX.match(text):
        return True
    # base64 of a real file may start with "/" (JPEG: "/9j/") but is long and all base64 characters
    return text.startswith("/") and (len(text) < 256 or bool(_NOT_BASE64.search(text)))


def image_kind(data: bytes) -> Optional[str]:
    """"PNG", "JPEG", "WebP", "GIF", "TIFF", "BMP" from the file's first bytes, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for magic, kind in _IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    return None


def describe(data: bytes) -> str:
    """A short guess of what some bytes are, for error messages."""
    kind = image_kind(data)
    if kind:
        return f"a {kind} image"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV audio"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "MP3 audio"
    if data[:4] in (b"OggS", b"fLaC"):
        return "Ogg/FLAC audio"
    if data[4:8] == b"ftyp":
        return "an MP4/M4A file"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "a WebM/Matroska file"
    if data[:4] == b"%PDF":
        return "a PDF document"
    if data[:2] == b"PK":
        return "a ZIP archive"
    try:
        data[:256].decode("utf8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


def decode_base64(value: Any, what: str, limit: int) -> bytes:
    """The bytes of a base64 string (a ``data:...;base64,`` prefix and missing padding are fine).

    Raises InputError (not a string, not base64, or a server path), PayloadTooLarge (over
    ``limit`` bytes, checked before decoding).
    """
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"'{what}' must be the {what} file's bytes as a base64 string")
    text = value.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise InputError(f"'{what}' is a data: URL without ';base64'; send the file base64-encoded")
    text = "".join(text.split())
    if len(text) * 3 // 4 > limit + 3:
        raise PayloadTooLarge(f"'{what}' is about {len(text) * 3 / 4 / MB:.1f} MB; the limit is "
                              f"{limit / MB:.0f} MB")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        data = None
    if data is None or (len(data) < 64 and looks_like_path(value)):
        if looks_like_path(value):
            raise InputError(f"'{what}' looks like a file path; the API never reads files on the server: "
                             f"send the file's bytes (base64 in JSON, or a multipart upload)")
        raise InputError(f"'{what}' is not valid base64; send the {what} file's bytes base64-encoded")
    return data


def _check_length(data: bytes, limit: int, what: str, empty: InputError) -> None:
    """PayloadTooLarge when ``data`` is longer than ``limit`` bytes, ``empty`` when it has none."""
    if len(data) > limit:
        raise PayloadTooLarge(f"the {what} is {len(data) / MB:.1f} MB; the limit is {limit / MB:.0f} MB")
    if not data:
        raise empty


def check_image(data: bytes, limits: Limits) -> str:
    """Validate an uploaded image's size, type and pixel count; returns its kind ("PNG", ...)."""
    _check_length(data, limits.image_bytes, "image",
                  ImageError("the image is empty (0 bytes); send a PNG/JPEG/WebP portrait"))
    kind = image_kind(data)
    if kind is None:
        raise UnsupportedMediaType(f"the image is {describe(data)}, not a picture; send a PNG, JPEG, "
                                   f"WebP, GIF, BMP or TIFF file")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise PayloadTooLarge(f"the image has too many pixels; images up to {limits.max_side}x"
                              f"{limits.max_side} are supported") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read the {kind} image ({type(exc).__name__}); the file is damaged") from None
    if w * h > limits.image_pixels:
        raise PayloadTooLarge(f"the image is {w}x{h}; images up to {limits.max_side}x{limits.max_side} "
                              f"pixels are supported, downscale it first")
    return kind


def check_audio(data: bytes, limits: Limits) -> None:
    """Validate an uploaded audio file's size and refuse obvious non-audio (images, documents)."""
    from ..errors import AudioError

    _check_length(data, limits.audio_bytes, "audio",
                  AudioError("the audio is empty (0 bytes); send a recording with speech"))
    kind = describe(data)
    if kind.startswith("a ") and not kind.startswith(("a WebM", "an MP4")):
        raise UnsupportedMediaType(f"the audio is {kind}, not a sound file; send wav, mp3, flac, ogg or m4a")


def parse_options(raw: Any, host=None) -> GenerateOptions:
    """GenerateOptions from a JSON object (or its text); the host's defaults fill omitted keys.

    Raises OptionError naming an unknown option, an invalid value, or a path-valued option.
    """
    if raw is None or raw == "":
        raw = {}
    if isinstance(raw, (bytes, str)):
        try:
            raw = loads(raw, "'options'")
        except ValueError:
            raise OptionError("'options' must be a JSON object, e.g. {\"size\": 256}") from None
    check_depth(raw, "'options'")
    if not isinstance(raw, Mapping):
        raise OptionError("'options' must be a JSON object, e.g. {\"size\": 256}")
    refused = sorted(k for k in raw if is_path_option(str(k)))
    if refused:
        raise OptionError(f"option(s) {names_list(refused)} name files on the server, which the API "
                          f"never reads; leave them out")
    for name in sorted(PATH_OR_DATA_OPTIONS & set(raw)):
        if isinstance(raw[name], str):
            raise OptionError(f"'{name}' must be the JSON object itself, not a file name: the API never "
                              f"reads files on the server")
    if raw.get("refine") is not None:  # the schedule is checked now, not when the job's turn comes
        from ..refine.keyframes import KeyframeSchedule
        KeyframeSchedule.from_dict(raw["refine"])
    data = host_defaults(host)
    data.update(raw)
    tuple_fields = {f.name for f in fields(GenerateOptions) if isinstance(f.default, tuple)}
    for name in tuple_fields & set(data):
        if isinstance(data[name], list):
            data[name] = tuple(data[name])
    try:
        return GenerateOptions.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"invalid options: {' '.join(str(exc).split())}") from None


def parse_flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise InputError(f"'{what}' must be true or false")


@dataclass
class GenerateRequestData:
    """A validated request: file bytes, their kinds, options, whether to return the video."""

    image: bytes
    audio: bytes
    image_kind: str
    options: GenerateOptions
    return_video: bool = True
    source: Dict[str, Any] = field(default_factory=dict)


def names_list(names, shown: int = 5) -> str:
    """Client-given names for a one-line message: the first ``shown``, each cut to 40 characters."""
    names = sorted((str(n) for n in names), key=lambda n: (len(n), n))
    text = ", ".join(n if len(n) <= 40 else n[:37] + "..." for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _check_fields(names) -> None:
    unknown = [n for n in names if n not in REQUEST_FIELDS]
    pathy = [n for n in unknown if is_path_option(n) or "path" in n.lower()]
    if pathy:
        raise InputError(f"field(s) {names_list(pathy)} name files on the server, which the API never "
                         f"reads; send 'image' and 'audio' as file bytes (base64 in JSON, or multipart)")
    if unknown:
        raise InputError(f"unknown field(s) {names_list(unknown)}; send {', '.join(REQUEST_FIELDS)}")


def _finish(image: bytes, audio: bytes, options: GenerateOptions, return_video: bool,
            limits: Limits, via: str) -> GenerateRequestData:
    kind = check_image(image, limits)
    check_audio(audio, limits)
    source = {"via": via, "image_sha256": hashlib.sha256(image).hexdigest(),
              "audio_sha256": hashlib.sha256(audio).hexdigest(), "image_bytes": len(image),
              "audio_bytes": len(audio)}
    return GenerateRequestData(image, audio, kind, options, return_video, source)


def request_from_json(obj: Any, host=None, limits: Limits = Limits()) -> GenerateRequestData:
    """Validate a JSON body ``{"image": b64, "audio": b64, "options": {...}, "return_video": bool}``."""
    if not isinstance(obj, Mapping):
        raise InputError("the body must be a JSON object with 'image' and 'audio' (base64) and 'options'")
    check_depth(obj, "the request body")
    _check_fields(obj.keys())
    for name in ("image", "audio"):
        if name not in obj:
            raise InputError(f"'{name}' is required (the {name} file's bytes, base64-encoded)")
    image = decode_base64(obj["image"], "image", limits.image_bytes)
    audio = decode_base64(obj["audio"], "audio", limits.audio_bytes)
    options = parse_options(obj.get("options"), host)
    return _finish(image, audio, options, parse_flag(obj.get("return_video", True), "return_video"),
                   limits, "api-json")


def request_from_form(form: Mapping[str, Tuple], host=None, limits: Limits = Limits()) -> GenerateRequestData:
    """Validate multipart fields: ``{name: ("file", bytes, filename, content_type) | ("text", str)}``.

    ``image`` and ``audio`` are file parts (or base64 text parts), ``options`` JSON text,
    ``return_video`` "true"/"false".
    """
    _check_fields(form.keys())
    files = {}
    for name, limit in (("image", limits.image_bytes), ("audio", limits.audio_bytes)):
        part = form.get(name)
        if part is None:
            raise InputError(f"'{name}' is required: upload the {name} file as the multipart field '{name}'")
        files[name] = part[1] if part[0] == "file" else decode_base64(part[1], name, limit)
    options_part = form.get("options")
    raw_options = None
    if options_part is not None:
        raw_options = options_part[1]
        if isinstance(raw_options, bytes):
            try:
                raw_options = raw_options.decode("utf8")
            except UnicodeDecodeError:
                raise OptionError("'options' must be UTF-8 JSON text") from None
    options = parse_options(raw_options, host)
    flag = form.get("return_video")
    return_video = True if flag is None else parse_flag(flag[1] if flag[0] == "text" else flag[1].decode("utf8", "replace"),
                                                       "return_video")
    return _finish(files["image"], files["audio"], options, return_video, limits, "api-multipart")


IMAGE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WebP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}
