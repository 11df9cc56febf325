"""Out-of-memory failures as one typed error, raised only after the failed run's memory is freed.

torch reports a full GPU as ``torch.cuda.OutOfMemoryError`` (a RuntimeError; older versions and
other back ends: a RuntimeError whose text says "out of memory"); numpy raises MemoryError. Left
alone, such an error reaches the user as a traceback (CLI) or a 500 (HTTP API), and its traceback
keeps the failed run's frames, and so their tensors, alive. :func:`oom_guard` turns it into
:class:`~sadtalker_ext.errors.OutOfMemory` with a one-line hint, after dropping that traceback,
collecting garbage and emptying the CUDA/MPS caches. torch is never imported here (lite runs
stay torch-free): only an already-imported torch is asked to release its cache.
"""
from __future__ import annotations

import functools
import gc
import inspect
import re
import sys
from typing import Callable, TypeVar

from .errors import OutOfMemory

F = TypeVar("F", bound=Callable)

_MARKERS = ("out of memory", "cudnn_status_alloc_failed", "cublas_status_alloc_failed",
            "not enough memory")
_TRIED = re.compile(r"tried to allocate [0-9.]+ ?[kmgt]?i?b", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` and RuntimeErrors that report a full GPU."""
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(m in text for m in _MARKERS)
    return False


def release_accelerator_memory() -> None:
    """Collect garbage, then empty torch's CUDA and MPS caches when torch is already imported."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        torch.cuda.empty_cache()  # a no-op when CUDA was never initialised
    except Exception:  # noqa: BLE001 - freeing memory must never raise over the real error
        pass
    try:
        mps = getattr(torch, "mps", None)
        if mps is not None and torch.backends.mps.is_available():
            mps.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError) or "cpuallocator" in str(exc).lower():
        return ("out of memory (RAM); use a smaller image or --max-side, a shorter audio clip, or "
                "close other programs")
    tried = _TRIED.search(str(exc))
    detail = f" ({tried.group(0)})" if tried else ""
    return (f"out of GPU memory{detail}; the run was stopped and the memory released: lower "
            f"--batch-size / --wav2lip-batch-size or --size, close other GPU programs, or use --device cpu")


_END = object()


def oom_guard(fn: F) -> F:
    """Decorator: out-of-memory errors raised by ``fn`` become :class:`OutOfMemory` (one line)
    after :func:`release_accelerator_memory`; every other exception passes unchanged. A generator
    function is guarded while it is iterated."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            it = fn(*args, **kwargs)
            step = oom_guard(functools.partial(next, it, _END))  # each step guarded as a call
            try:
                while (item := step()) is not _END:
                    yield item
            finally:
                it.close()
        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, MemoryError) as exc:
            if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
                raise
            message = _message(exc)
        # here the failed call's exception and traceback (its frames and tensors) are gone
        release_accelerator_memory()
        raise OutOfMemory(message)
    return wrapper  # type: ignore[return-value]


__all__ = ["is_out_of_memory", "oom_guard", "release_accelerator_memory"]
