"""The tab's status line and the one-line messages of errors (shared by the tab, its panels and handlers).

:func:`status_html` is the line under Generate (and the batch and download panels): a kind (idle /
running / done / error / interrupted) and a bar; :func:`error_text` turns a run's exception into its
kind and one-line text; :func:`small_preview` subsamples a frame for the live preview and history.
"""
from __future__ import annotations

import html
import math

import numpy as np

from ..errors import GenerationInterrupted, TalkingHeadError

PREVIEW_SIDE = 256


def small_preview(frame: np.ndarray | None, side: int = PREVIEW_SIDE) -> np.ndarray | None:
    """``frame`` (uint8 [H, W, 3]) subsampled so that its long side is at most about ``side`` pixels."""
    if frame is None:
        return None
    frame = np.asarray(frame)
    step = max(1, math.ceil(max(frame.shape[:2]) / side))
    return np.ascontiguousarray(frame[::step, ::step, :3])


def status_html(kind: str, text: str, done: int | None = None, total: int | None = None) -> str:
    """The status line: kind is idle / running / done / error / interrupted; a bar when total > 0."""
    bar = ""
    if done is not None and total:
        pct = max(0.0, min(100.0, 100.0 * done / total))
        bar = (f'<div class="th-bar"><div class="th-bar-fill" style="width:{pct:.1f}%"></div></div>')
    return f'<div class="th-status th-{kind}">{bar}<span>{html.escape(text)}</span></div>'


def error_text(exc: BaseException) -> tuple:
    """(status kind, one-line message) for an exception raised by a run."""
    if isinstance(exc, GenerationInterrupted):
        return "interrupted", "Interrupted: no video was written."
    if isinstance(exc, TalkingHeadError):
        return "error", f"Error: {exc.message}"
    return "error", (f"Unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                     "see the console for the traceback.")
