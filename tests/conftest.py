"""Shared fixtures: real inputs (astronaut photo, ARCTIC speech) and synthetic official checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Under CI a golden or real-host test skipped for a missing dependency fails (see ci_skips.py).
from ci_skips import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_REF = Path(os.environ.get("SADTALKER_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
GOLDENS = SHARED_REF / "goldens"
MANIFESTS = SHARED_REF / "manifests"

# A shell without job control starts background commands (``cmd &``) with SIGINT ignored, and children
# inherit an ignored signal across exec: the Ctrl-C tests' CLI would then never see their SIGINT. Catch it
# here instead (a caught signal is reset to the default in every child), as in a foreground terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def golden_tol(golden: np.ndarray) -> float:
    """The acceptance bound ``1e-4 + 1e-5 * max|golden|`` of shared/reference/README.md."""
    return 1e-4 + 1e-5 * float(np.max(np.abs(golden)))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not SHARED_REF.is_dir():
        pytest.fail(f"reference fixtures not found at {SHARED_REF}; set SADTALKER_REFERENCE_DIR")
    return SHARED_REF


@pytest.fixture(scope="session")
def synthetic_checkpoints(reference_dir) -> Path:
    """Directory holding every official checkpoint file, rebuilt from the deterministic weight rule.

    Built once per machine into a cache folder (``SADTALKER_SYNTH_DIR`` or ~/.cache/...); the
    builder keeps a file only when its keys, shapes and size match the manifest, else rewrites it.
    """
    pytest.importorskip("torch")
    out = Path(os.environ.get("SADTALKER_SYNTH_DIR",
                              Path.home() / ".cache" / "sd-talking-head" / "synthetic-ckpts"))
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(reference_dir / "synth_ckpt.py"), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut photo (Eileen Collins), uint8 RGB 512x512."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def arctic_wav(reference_dir) -> Path:
    """CMU ARCTIC a0007, 16 kHz mono 16-bit, 4.0 s."""
    return reference_dir / "audio" / "arctic_a0007.wav"


@pytest.fixture(autouse=True)
def _restore_download_hint():
    """The WebUI adapter's register() points missing-model messages to its Models panel
    (``models.locate.DOWNLOAD_HINT``); put the CLI's hint back after every test."""
    from sadtalker_ext.models import locate

    saved = locate.DOWNLOAD_HINT
    yield
    locate.DOWNLOAD_HINT = saved


@pytest.fixture(autouse=True, scope="module")
def _no_event_loop_left_running(request):
    """A module must not leave an asyncio loop running in the main thread: Playwright's sync API keeps
    its loop "running" until its context exits, and a session-scoped browser then breaks every later
    ``asyncio.run`` and ``sync_playwright`` (the CI failure of stop 20). Fails at the module that leaks."""
    yield
    import asyncio

    loop = asyncio._get_running_loop()
    if loop is not None and loop.is_running():
        pytest.fail(f"{request.module.__name__} left an asyncio event loop running in the main thread "
                    "(scope its Playwright/asyncio fixtures to the module)", pytrace=False)


def pytest_terminal_summary(terminalreporter):
    """The real-host suite's phase timings and figures (tests/real_hosts.py), when it ran."""
    real_hosts = sys.modules.get("real_hosts")
    if real_hosts is not None and real_hosts.SUMMARY:
        terminalreporter.section("real hosts: phase timings and figures")
        for line in real_hosts.SUMMARY:
            terminalreporter.write_line(line)
