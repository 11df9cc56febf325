"""The CLI's Ctrl-C handler (cli/sigint.py) defers the interrupt while an import runs or while a function
that its module lists in ``_DEFER_SIGINT`` runs (mediapipe's detectors starting: their threads would
print after the CLI's last line), and raises KeyboardInterrupt anywhere else."""
from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from sadtalker_ext.cli import sigint


def test_the_face_detectors_start_up_is_deferred():
    from sadtalker_ext.face import landmarks
    assert "_detectors" in landmarks._DEFER_SIGINT
    assert landmarks._detectors.__wrapped__.__code__.co_name == "_detectors"


def _deferred_here() -> bool:
    return sigint._importing(sys._getframe())


_DEFER_SIGINT = ("_native_start",)


def _native_start() -> bool:
    return _deferred_here()


def test_deferral_follows_the_modules_list():
    assert _native_start() is True
    assert _deferred_here() is False


def test_an_interrupt_inside_a_deferred_function_arrives_after_it_returns(monkeypatch):
    old = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sigint, "_PRESSED", threading.Event())
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert sigint.install()
        trace = []

        def deferred_body():
            signal.raise_signal(signal.SIGINT)
            for _ in range(6):  # the handler re-sends the signal every 50 ms meanwhile
                time.sleep(0.05)
            trace.append("finished")

        globals()["_DEFER_SIGINT"] = ("_native_start", "deferred_body")
        with pytest.raises(KeyboardInterrupt):
            deferred_body()
            trace.append("returned")
            time.sleep(1.0)
        assert trace == ["finished", "returned"] and sigint.pressed()
    finally:
        globals()["_DEFER_SIGINT"] = ("_native_start",)
        signal.signal(signal.SIGINT, old)
