"""Safe, strict loading of the official SadTalker / Wav2Lip checkpoint files.

Every neural engine loads its weights through this module, so that a truncated download, a file of
the wrong model or a hostile pickle always ends in one :class:`~sadtalker_ext.errors.CheckpointError`
whose one-line message names the file and says what to download. Nothing here ever unpickles
arbitrary objects: safetensors files are parsed as data, and torch pickles are read with
``torch.load(..., weights_only=True)``.

Public API
----------
``SafetensorsCheckpoint(path)``
    A flat safetensors file such as ``SadTalker_V0.0.2_256.safetensors`` (725 MB, 1,305 tensors).
    Construction is cached per process: calling it again with the same file (same resolved path,
    size and mtime) returns the same object; a replaced file (new size or mtime) is opened afresh.
    The header is read and validated once (a truncated file or a garbage header raises
    ``CheckpointError``); ``section()`` then reads only that section's tensor bytes through a
    memory map, so the 725 MB file is read at most once per section (no copy of the whole file is
    kept in memory; the loaded modules own their weights).

    * ``.path`` (``Path``), ``.keys()`` (list of stored key names, file order),
      ``.shapes()`` (``{key: tuple}``), ``len(ckpt)``, ``key in ckpt``.
    * ``.section(prefix) -> dict[str, torch.Tensor]``: all entries whose key starts with ``prefix``
      (e.g. ``"audio2exp."``), with the prefix stripped, as CPU tensors that own their memory
      (float32 / int64 as stored). Raises ``CheckpointError`` when no key has that prefix.
      The official files use the prefixes ``kp_extractor.``, ``generator.``, ``audio2exp.``,
      ``audio2pose.`` and ``face_3drecon.`` (:data:`SADTALKER_SECTIONS`).
``clear_cache()``
    Forget every cached ``SafetensorsCheckpoint`` (closing its memory map).
``load_torch_checkpoint(path, key=None, strip_prefix=None, *, expected=None) -> dict``
    ``torch.load(path, map_location="cpu", weights_only=True)``; with ``key`` returns ``ckpt[key]``
    (``"mapping"`` for ``mapping_*.pth.tar``, ``"state_dict"`` for ``wav2lip*.pth``); with
    ``strip_prefix`` removes that leading prefix (``"module."`` for Wav2Lip) from every key that has
    it. The returned value must be a dict of tensors when ``key`` or ``strip_prefix`` is given.
    Missing, truncated or corrupt files, a pickle that is not a dict, a missing ``key``, and pickles
    that ``weights_only`` refuses (anything that would import or call code) all raise
    ``CheckpointError``; ``expected`` (free text such as ``"mapping_00229-model.pth.tar from the
    SadTalker release"``) is put into the message as the file to download.
``strict_load(module, state_dict, *, file, expected, prefix="") -> module``
    Compares key names and shapes of ``state_dict`` with ``module.state_dict()`` *before* calling
    ``module.load_state_dict(state_dict, strict=True)``, and raises ``CheckpointError`` naming
    ``file``, the missing keys, the unexpected keys (the first few of each, plus the count) and the
    shape mismatches (``key: expected [..] got [..]``), followed by ``expected`` (what to download).
    ``prefix`` is prepended to key names in the message so that they read as stored in the file
    (e.g. ``"audio2exp."``). Returns ``module``.

Typical use::

    ckpt = SafetensorsCheckpoint(checkpoint_dir / "SadTalker_V0.0.2_256.safetensors")
    strict_load(net, ckpt.section("audio2exp."), file=ckpt.path, prefix="audio2exp.",
                expected=SADTALKER_EXPECTED)

Source followed: the loaders of OpenTalker/SadTalker (``src/utils/safetensor_helper.py``: keep the
keys containing the section name and delete that substring; ``load_cpk_mapping``:
``ckpt['mapping']``) and Rudrabha/Wav2Lip ``inference.py`` (``ckpt['state_dict']`` with
``module.`` removed), all with strict ``load_state_dict``. Prefix stripping is equivalent for the
released files (no key contains a section name anywhere else).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..errors import CheckpointError, DependencyError
from .cache import MODELS

PathLike = Union[str, "os.PathLike[str]"]

#: Section prefixes of ``SadTalker_V0.0.2_256/512.safetensors``.
SADTALKER_SECTIONS = ("kp_extractor.", "generator.", "audio2exp.", "audio2pose.", "face_3drecon.")

#: What to download when a SadTalker safetensors file is missing or does not match.
SADTALKER_EXPECTED = ("SadTalker_V0.0.2_256.safetensors (or _512) from the SadTalker v0.0.2 release "
                      "(about 725 MB)")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_LISTED = 5  # keys listed per category in mismatch messages
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header size

# safetensors dtype -> bytes per element
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise DependencyError("PyTorch is not installed; install torch (>= 2.1) to use the "
                              "neural engines, or choose the lite engine.") from exc
    return torch


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """First line of an exception message without terminal colour codes, at most ``limit`` chars."""
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". ")[0].rstrip(".")[:limit]


def _name(path: PathLike) -> str:
    return str(path)


def _redownload(expected: Optional[str], path: Path) -> str:
    what = expected or path.name
    return f"delete it and download {what} again"


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

_CACHE: Dict[Tuple[str, int, int], "SafetensorsCheckpoint"] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Drop every cached :class:`SafetensorsCheckpoint`; the next construction re-reads the header."""
    with _CACHE_LOCK:
        for ckpt in _CACHE.values():
            ckpt._close()
        _CACHE.clear()


# opened checkpoint files close with the models (one release: sadtalker_ext.models.cache)
MODELS.on_release(clear_cache)


def _stat_key(path: PathLike, expected: Optional[str]) -> Tuple[Path, Tuple[str, int, int]]:
    p = Path(path).expanduser()
    try:
        resolved = p.resolve(strict=True)
        st = resolved.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"Checkpoint file {p} was not found; download "
                              f"{expected or p.name} into the checkpoints folder.") from None
    except OSError as exc:
        raise CheckpointError(f"Checkpoint file {p} cannot be read ({exc.strerror or exc}); check "
                              f"its permissions or download {expected or p.name} again.") from None
    if not resolved.is_file():
        raise CheckpointError(f"Checkpoint path {p} is not a file; download {expected or p.name} "
                              f"into the checkpoints folder.")
    return resolved, (str(resolved), int(st.st_size), int(st.st_mtime_ns))


class SafetensorsCheckpoint:
    """A flat safetensors checkpoint, opened once per process (see the module docstring).

    ``SafetensorsCheckpoint(path, expected=None)``: ``expected`` names the file to download in
    error messages (default: :data:`SADTALKER_EXPECTED` when the name starts with ``SadTalker``,
    else the file name). Raises ``CheckpointError`` for a missing file, a header that is not valid
    safetensors JSON, or a payload shorter than the header says (truncated download).
    """

    _initialised: bool

    def __new__(cls, path: PathLike, expected: Optional[str] = None):
        resolved, key = _stat_key(path, expected)
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                return hit
        obj = super().__new__(cls)
        obj._initialised = False
        obj._setup(resolved, key, expected)
        with _CACHE_LOCK:
            # drop stale entries of the same path (the file was replaced)
            for old in [k for k in _CACHE if k[0] == key[0] and k != key]:
                _CACHE.pop(old)._close()
            return _CACHE.setdefault(key, obj)

    def __init__(self, path: PathLike, expected: Optional[str] = None):  # noqa: D107 - see class
        pass  # everything happens once, in __new__/_setup

    # -- setup ---------------------------------------------------------------------------------
    def _setup(self, resolved: Path, key: Tuple[str, int, int], expected: Optional[str]) -> None:
        self.path = resolved
        self.size = key[1]
        if expected is None:
            expected = SADTALKER_EXPECTED if resolved.name.lower().startswith("sadtalker") \
                else resolved.name
        self.expected = expected
        self._entries = self._read_header()
        self._initialised = True

    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"Checkpoint {self.path} {what}; it is truncated or not a "
                               f"safetensors file: {_redownload(self.expected, self.path)}.")

    def _read_header(self) -> Dict[str, Tuple[str, Tuple[int, ...], int, int]]:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise self._fail(f"is only {self.size} bytes long")
                (n,) = struct.unpack("<Q", head)
                if n < 2 or n > _MAX_HEADER or 8 + n > self.size:
                    raise self._fail("has an invalid or cut-off header")
                raw = fh.read(n)
        except OSError as exc:
            raise CheckpointError(f"Checkpoint {self.path} cannot be read ({exc.strerror or exc}); "
                                  f"check the disk or {_redownload(self.expected, self.path)}.") \
                from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._fail("has a header that is not valid JSON") from None
        if not isinstance(header, dict):
            raise self._fail("has a header that is not a JSON object")
        data_size = self.size - 8 - n
        entries: Dict[str, Tuple[str, Tuple[int, ...], int, int]] = {}
        max_end = 0
        for k, spec in header.items():
            if k == "__metadata__":
                continue
            try:
                dtype = str(spec["dtype"])
                shape = tuple(int(s) for s in spec["shape"])
                begin, end = (int(v) for v in spec["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._fail(f"has a malformed header entry {k!r}") from None
            itemsize = _ST_ITEMSIZE.get(dtype)
            if itemsize is None or any(s < 0 for s in shape):
                raise self._fail(f"has an unsupported entry {k!r} ({dtype} {list(shape)})")
            if end - begin != itemsize * math.prod(shape) or begin < 0:
                raise self._fail(f"has inconsistent offsets for {k!r}")
            if end > data_size:
                raise self._fail(f"ends before the data of {k!r} "
                                 f"({self.size} bytes, needs at least {8 + n + end})")
            max_end = max(max_end, end)
            entries[k] = (dtype, shape, begin, end)
        if not entries:
            raise self._fail("holds no tensors")
        self._data_start = 8 + n
        return entries

    def _close(self) -> None:
        """Nothing is held open between calls; kept so the cache can release future resources."""

    # -- queries -------------------------------------------------------------------------------
    def keys(self) -> List[str]:
        """Stored key names, in file (header) order."""
        return list(self._entries)

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """``{stored key: shape}`` for every tensor."""
        return {k: v[1] for k, v in self._entries.items()}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"SafetensorsCheckpoint({str(self.path)!r}, {len(self)} tensors)"

    def section(self, prefix: str) -> Dict[str, Any]:
        """Entries whose stored key starts with ``prefix``, prefix stripped -> ``{key: Tensor}``.

        Tensors are CPU tensors with their stored dtype (float32 parameters, int64
        ``num_batches_tracked``), independent of the file. Raises ``CheckpointError`` when no key has
        the prefix (a different model's file) or the payload cannot be read.
        """
        keys = [k for k in self._entries if k.startswith(prefix)]
        if not keys:
            raise CheckpointError(
                f"Checkpoint {self.path} has no '{prefix}' entries, so it is not the expected model "
                f"file; download {self.expected} and select it.")
        torch = _torch()
        out: Dict[str, Any] = {}
        try:
            from safetensors import safe_open
        except ImportError:  # pragma: no cover - safetensors ships with every torch install we use
            raise DependencyError("The safetensors package is not installed; pip install "
                                  "safetensors.") from None
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as fh:
                for k in keys:
                    t = fh.get_tensor(k)
                    out[k[len(prefix):]] = t.clone() if not t.is_contiguous() else t
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
            raise CheckpointError(f"Checkpoint {self.path} could not be read "
                                  f"({type(exc).__name__}: {exc}); "
                                  f"{_redownload(self.expected, self.path)}.") from None
        for k, t in out.items():
            if not isinstance(t, torch.Tensor):  # pragma: no cover - defensive
                raise CheckpointError(f"Checkpoint {self.path} entry {prefix}{k} is not a tensor; "
                                      f"{_redownload(self.expected, self.path)}.")
        return out


# --------------------------------------------------------------------------------------------
# torch pickles
# --------------------------------------------------------------------------------------------

def load_torch_checkpoint(path: PathLike, key: Optional[str] = None,
                          strip_prefix: Optional[str] = None, *,
                          expected: Optional[str] = None) -> dict:
    """Read a ``torch.save`` file safely (``weights_only=True``) and optionally pick a sub-dict.

    Args:
        path: the ``.pth`` / ``.pth.tar`` file.
        key: sub-dict to return (``"mapping"`` for SadTalker's mapping nets, ``"state_dict"`` for
            Wav2Lip); ``None`` returns the whole top-level dict.
        strip_prefix: leading prefix removed from every key that has it (``"module."`` for the
            DataParallel-saved Wav2Lip files).
        expected: the file a user should download, quoted in error messages (default: the name).

    Returns:
        A dict (``{str: Tensor}`` when ``key`` or ``strip_prefix`` is given), tensors on the CPU.

    Raises:
        CheckpointError: missing/unreadable file, truncated or corrupt archive, content that
            ``weights_only`` refuses (a pickle that would import or run code), a top level that is
            not a dict, a missing ``key``, or a sub-dict that is not a state dict.
    """
    torch = _torch()
    p, _ = _stat_key(path, expected)
    what = expected or p.name
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text.lower():
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            why = (f"it would import {found.group(1)}" if found
                   else "it holds objects or pickle instructions other than plain tensors")
            raise CheckpointError(
                f"Refused to load {p}: {why}, so it is not a plain weights file; do not use it, "
                f"download {what} from the official release instead.") from None
        raise CheckpointError(f"Checkpoint {p} is corrupt ({_first_line(exc)}); delete it and "
                              f"download {what} again.") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, struct.error, MemoryError) as exc:
        raise CheckpointError(f"Checkpoint {p} could not be read, it is truncated or corrupt "
                              f"({type(exc).__name__}: {_first_line(exc)}); delete it and download "
                              f"{what} again.") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"Checkpoint {p} holds a {type(ckpt).__name__}, not a dict of "
                              f"weights; it is not {what}: download {what} again.")
    out: Any = ckpt
    if key is not None:
        if key not in ckpt:
            have = ", ".join(sorted(str(k) for k in ckpt)[:_MAX_LISTED]) or "nothing"
            raise CheckpointError(f"Checkpoint {p} has no '{key}' entry (it has: {have}); it is "
                                  f"not {what}: download {what} and select it.")
        out = ckpt[key]
    if key is not None or strip_prefix is not None:
        if not isinstance(out, dict) or not all(isinstance(v, torch.Tensor) for v in out.values()):
            where = f"'{key}' entry" if key is not None else "content"
            raise CheckpointError(f"Checkpoint {p}: its {where} is not a state dict of tensors; "
                                  f"download {what} again.")
        if strip_prefix:
            n = len(strip_prefix)
            out = {(k[n:] if k.startswith(strip_prefix) else k): v for k, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------
# strict loading
# --------------------------------------------------------------------------------------------

def _listing(keys: List[str], prefix: str) -> str:
    shown = ", ".join(prefix + k for k in keys[:_MAX_LISTED])
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{shown}{more}"


def strict_load(module, state_dict: Mapping[str, Any], *, file: PathLike, expected: str,
                prefix: str = ""):
    """Load ``state_dict`` into ``module`` only if every key and shape matches exactly.

    Args:
        module: a ``torch.nn.Module``.
        state_dict: ``{key: Tensor}`` as returned by :meth:`SafetensorsCheckpoint.section` or
            :func:`load_torch_checkpoint`.
        file: the checkpoint file (named in errors; may include a section description).
        expected: what to download when it does not match (e.g. :data:`SADTALKER_EXPECTED`).
        prefix: prepended to key names in the error message (the stored section prefix).

    Returns:
        ``module`` with the weights copied in (``load_state_dict(strict=True)``).

    Raises:
        CheckpointError: ``file: N missing keys (..), M unexpected keys (..), K shape mismatches
            (key: expected [..] got [..]); download <expected>``. Values that are not tensors are
            reported the same way.
    """
    torch = _torch()
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = []
    for k, v in state_dict.items():
        if k not in own:
            continue
        if not isinstance(v, torch.Tensor):
            bad_shape.append(f"{prefix}{k}: expected tensor {list(own[k].shape)} got "
                             f"{type(v).__name__}")
        elif tuple(v.shape) != tuple(own[k].shape):
            bad_shape.append(f"{prefix}{k}: expected {list(own[k].shape)} got {list(v.shape)}")
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key{'s' if len(missing) != 1 else ''} "
                         f"({_listing(missing, prefix)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key{'s' if len(unexpected) != 1 else ''} "
                         f"({_listing(unexpected, prefix)})")
        if bad_shape:
            more = (f" and {len(bad_shape) - _MAX_LISTED} more"
                    if len(bad_shape) > _MAX_LISTED else "")
            parts.append(f"{len(bad_shape)} shape mismatch{'es' if len(bad_shape) != 1 else ''} "
                         f"({'; '.join(bad_shape[:_MAX_LISTED])}{more})")
        raise CheckpointError(f"Checkpoint {_name(file)} does not match "
                              f"{type(module).__name__}: {', '.join(parts)}; it is the wrong or a "
                              f"damaged file: download {expected}.")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"Checkpoint {_name(file)} could not be loaded into "
                              f"{type(module).__name__} ({_first_line(exc, 200)}); download "
                              f"{expected}.") from None
    return module


__all__ = ["SADTALKER_EXPECTED", "SADTALKER_SECTIONS", "SafetensorsCheckpoint", "clear_cache",
           "load_torch_checkpoint", "strict_load"]
