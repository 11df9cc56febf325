"""Scoped tuning of glibc's allocator for CPU rendering (no torch import).

A 256x256 frame of the face renderer allocates and frees several gigabytes of large tensors
(32 MB to 300 MB each). glibc serves every block above its mmap threshold (at most 32 MB in its
default dynamic mode) with a fresh ``mmap`` and returns it with ``munmap`` on free, so each new tensor
is page-faulted and zero-filled by the kernel again: about 0.7 million page faults per frame, 15-20 %
of the CPU time, and more with batches (every tensor is then above the threshold).

:func:`cpu_allocator_tuned` raises the mmap and trim thresholds for the duration of a render, so that
freed blocks stay in the heap and are reused, then restores fixed defaults (mmap threshold 32 MiB,
trim threshold 64 MiB: the values glibc's dynamic mode settles at) and calls ``malloc_trim(0)`` to
give the memory back. It is process-wide (other threads allocating meanwhile are affected the same
way), re-entrant and thread-safe (the settings are restored when the last user leaves), and a no-op
where the C library is not glibc (macOS, Windows, musl).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from typing import Iterator, Optional

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TUNED_MMAP = 256 << 20       # 256 MiB: all tensors of a 256-px frame come from the heap
_TUNED_TRIM = (1 << 31) - 1    # never trim while rendering
_DEFAULT_MMAP = 32 << 20       # glibc's dynamic-threshold ceiling on 64-bit
_DEFAULT_TRIM = 64 << 20       # 2 x mmap threshold, as dynamic mode sets it

_lock = threading.Lock()
_depth = 0
_libc: Optional[ctypes.CDLL] = None
_checked = False


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _checked
    if not _checked:
        _checked = True
        try:
            if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                    lib.malloc_trim.argtypes = [ctypes.c_size_t]
                    _libc = lib
        except (OSError, AttributeError, ValueError):  # pragma: no cover - exotic platforms
            _libc = None
    return _libc


def allocator_tuning_available() -> bool:
    """True where :func:`cpu_allocator_tuned` has an effect (Linux with glibc)."""
    return _glibc() is not None


def acquire() -> bool:
    """Start (or join) a tuning period; returns True when tuning is active. Pair with :func:`release`."""
    lib = _glibc()
    if lib is None:
        return False
    global _depth
    with _lock:
        if _depth == 0:
            lib.mallopt(_M_MMAP_THRESHOLD, _TUNED_MMAP)
            lib.mallopt(_M_TRIM_THRESHOLD, _TUNED_TRIM)
        _depth += 1
    return True


def release() -> None:
    """Leave a tuning period started by :func:`acquire` (returning True); the last one restores
    the defaults and trims the heap."""
    lib = _glibc()
    if lib is None:
        return
    global _depth
    with _lock:
        if _depth <= 0:
            return
        _depth -= 1
        if _depth == 0:
            lib.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP)
            lib.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
            lib.malloc_trim(0)


@contextlib.contextmanager
def cpu_allocator_tuned(enabled: bool = True) -> Iterator[bool]:
    """Context manager: keep large freed blocks for reuse while rendering on the CPU.

    Yields True when the tuning is active. Nested and concurrent uses share one tuning period.
    """
    active = acquire() if enabled else False
    try:
        yield active
    finally:
        if active:
            release()


__all__ = ["cpu_allocator_tuned", "allocator_tuning_available", "acquire", "release"]
