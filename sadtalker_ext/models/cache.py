"""The process's loaded models, in one place, with one :meth:`ModelCache.release`.

Every model kept between runs goes through :data:`MODELS`: SadTalker's modules, the engines a host keeps,
Wav2Lip, the standalone face restorers and the diffusers img2img pipeline; the opened safetensors files
(:class:`~sadtalker_ext.models.loading.SafetensorsCheckpoint`, an identity map of open files) are closed by
the same release. The host owns the policy: the WebUI adapter calls :func:`release_models` after every
job when its "Keep models loaded" setting is off (and when the setting is turned off); a standalone
process keeps its models until it exits. Keys are tuples whose first item is the kind of model
("sadtalker", "engine", "wav2lip", "restorer", "diffusers") followed by what it was built from
(resolved file, size, mtime, device, dtype, ...), so a replaced file or another device loads again.

Device and precision for every torch model are resolved by :func:`resolve_device` / :func:`resolve_dtype`.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List

from ..errors import OptionError

log = logging.getLogger(__name__)


class ModelCache:
    """Loaded models by key (see the module docstring). Thread-safe; a model is built under the lock,
    so two runs that ask for the same model at once load it once."""

    def __init__(self) -> None:
        self._items: Dict[tuple, Any] = {}
        self._lock = threading.RLock()  # reentrant: a model's build may ask for another one
        self._on_release: List[Callable[[], None]] = []

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        """The model cached under ``key``, built by ``build()`` (and kept) on first use."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                hit = build()
                self._items[key] = hit
            return hit

    def get_latest(self, key: tuple, build: Callable[[], Any]) -> Any:
        """Like :meth:`get`, but only one model of the kind ``key[0]`` is kept: the others are dropped
        before ``build()`` runs (large models that a run swaps, e.g. the img2img checkpoint)."""
        with self._lock:
            if key not in self._items:
                for k in [k for k in self._items if k[0] == key[0]]:
                    del self._items[k]
            return self.get(key, build)

    def kinds(self) -> Dict[str, int]:
        """How many models of each kind are loaded (for tests and status lines)."""
        with self._lock:
            out: Dict[str, int] = {}
            for k in self._items:
                out[k[0]] = out.get(k[0], 0) + 1
            return out

    def on_release(self, fn: Callable[[], None]) -> None:
        """Also call ``fn()`` in :meth:`release` (caches that are not models, e.g. open checkpoint files)."""
        with self._lock:
            if fn not in self._on_release:
                self._on_release.append(fn)

    def release(self) -> None:
        """Drop every model and run the release hooks, then collect garbage and empty the CUDA cache.
        The next run loads what it needs again."""
        with self._lock:
            self._items.clear()
            hooks = list(self._on_release)
        for fn in hooks:
            fn()
        gc.collect()
        free_cuda_cache()


#: the process's model cache
MODELS = ModelCache()


def release_models() -> None:
    """:meth:`ModelCache.release` of :data:`MODELS`."""
    MODELS.release()


def free_cuda_cache() -> None:
    """``torch.cuda.empty_cache()`` when torch is loaded and sees a CUDA GPU (else nothing; never imports torch)."""
    if "torch" not in sys.modules:  # nothing of ours ever touched the GPU
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def file_key(path) -> tuple:
    """(resolved path, size, mtime in ns) of a model file: part of a cache key, so a replaced file reloads.
    A file that cannot be read gives (path, None, None): its loader then raises the useful error."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (str(p), None, None)
    return (str(p.resolve()), st.st_size, st.st_mtime_ns)


def resolve_device(name: str | None):
    """The torch device for ``--device`` (``"auto"`` or None: CUDA when torch sees a GPU, else the CPU).

    Raises OptionError for a name torch does not know, or "cuda" when torch sees no CUDA GPU."""
    import torch

    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise OptionError(f"--device {name!r} is not valid; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda was asked but PyTorch sees no CUDA GPU; use --device "
                          "cpu (or install a CUDA build of torch)")
    return dev


_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_dtype(precision: str | None, device, supported=("fp32", "fp16", "bf16"),
                  cpu_bf16: Callable[[], bool] | None = None):
    """The torch dtype for ``--precision`` on ``device``: reduced precision on CUDA, and bf16 also on a CPU
    when ``cpu_bf16()`` says the model gains from it there; fp32 elsewhere (with a warning). A precision
    outside ``supported`` (a model that has no such path) runs in fp32. Raises OptionError for an unknown
    precision."""
    import torch

    prec = precision or "fp32"
    if prec not in _DTYPE_NAMES:
        raise OptionError(f"--precision {prec!r} is not valid; use fp32, fp16 or bf16")
    if prec not in supported:
        prec = "fp32"
    dtype = getattr(torch, _DTYPE_NAMES[prec])
    dev = torch.device(device)
    if dtype == torch.bfloat16 and dev.type == "cpu" and cpu_bf16 is not None and cpu_bf16():
        return dtype
    if dtype != torch.float32 and dev.type != "cuda":
        why = ("this CPU has no native bfloat16 (AVX512-BF16 or AMX)" if dtype == torch.bfloat16 and cpu_bf16
               else f"{_DTYPE_NAMES[prec]} is only used on CUDA")
        log.warning("--precision %s: %s; running in fp32 on %s", prec, why, dev)
        dtype = torch.float32
    return dtype


__all__ = ["MODELS", "ModelCache", "file_key", "free_cuda_cache", "release_models", "resolve_device",
           "resolve_dtype"]
