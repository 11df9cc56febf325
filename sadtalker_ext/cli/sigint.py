"""Ctrl-C for the command line that never lands inside an import.

A KeyboardInterrupt raised while a C extension initialises (numpy, cv2, av, mediapipe import each
other from C) comes out as an ImportError with a long traceback ("numpy.core.multiarray failed to
import"), or is swallowed by a library's ``except ImportError:`` fallback so that the run goes on
and writes its video after the user pressed Ctrl-C. :func:`install` replaces Python's SIGINT
handler by one that raises KeyboardInterrupt as before, except while an import is running: then the
signal is sent again 50 ms later, until the import has finished, so the interrupt arrives in the
program's own code (the CLI prints one line and exits 130). The same holds inside the functions a
module lists in ``_DEFER_SIGINT`` (face/landmarks.py: mediapipe's detectors starting up). Python may still lose a
KeyboardInterrupt (C code that clears every error, e.g. ``hasattr``); :func:`pressed` remembers the
key press, and the CLI passes it to the pipeline as ``should_stop``, which stops the run at the next
chunk at the latest, before anything is written.
"""
from __future__ import annotations

import os
import signal
import threading

RETRY_S = 0.05
_PRESSED = threading.Event()


def pressed() -> bool:
    """True once Ctrl-C was pressed (after :func:`install`)."""
    return _PRESSED.is_set()


def _importing(frame) -> bool:
    """True while an import runs, or a function that its module names in ``_DEFER_SIGINT`` (native
    start-up: mediapipe's graphs print from their own threads while they start, and would print after
    the CLI's last line if the interrupt left them half-built)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        if frame.f_code.co_name in frame.f_globals.get("_DEFER_SIGINT", ()):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame):
    _PRESSED.set()
    if _importing(frame):
        timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt


def install() -> bool:
    """Use the import-safe handler when SIGINT has Python's default one (main thread only).
    Returns True when it is installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGINT)
    if current is _handler:
        return True
    if current is not signal.default_int_handler:  # ignored, or someone else's handler: leave it
        return False
    signal.signal(signal.SIGINT, _handler)
    return True


__all__ = ["install", "pressed"]
