"""The small interface between sd-talking-head and whatever hosts it.

Only ``sadtalker_ext/host/a1111.py`` (the WebUI adapter) imports the host's ``modules.*``; every
other module talks to a :class:`Host`. :class:`LocalHost` is the standalone implementation used by
the CLI, the standalone UI and the tests.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ..refine.params import Img2ImgRequest  # the request type lives below the refinement stage

__all__ = ["Host", "LocalHost", "Img2ImgRequest"]


class Host(Protocol):
    """What the extension needs from its host."""

    name: str

    def models_dir(self) -> Path | None:
        """Folder of the host's model files for this extension (e.g. <webui>/models/SadTalker), or None."""

    def output_dir(self) -> Path:
        """Folder where finished videos and their JSON sidecars are saved."""

    def setting(self, key: str, default: Any = None) -> Any:
        """A user setting of this extension ("talking_head_*"), or ``default``."""

    def progress(self, done: int, total: int, text: str = "", preview: np.ndarray | None = None) -> None:
        """Report progress (frames done of total) and optionally a preview frame."""

    def interrupted(self) -> bool:
        """True when the user asked to stop the current job."""

    def job(self, name: str, total: int) -> contextlib.AbstractContextManager:
        """Context manager around one generation: takes the host's queue lock (never runs beside
        txt2img on the GPU), registers the job for the host's progress API, and always releases."""

    def img2img(self, request: Img2ImgRequest) -> np.ndarray:
        """Run img2img with the host's loaded SD model; returns uint8 RGB [n, H, W, 3]."""

    def restore_faces(self, image: np.ndarray) -> np.ndarray:
        """Host face restoration of one uint8 RGB image (identity when none is configured)."""


class LocalHost:
    """Standalone host: a process-wide lock, an in-memory interrupt flag, settings from a dict."""

    name = "local"
    _lock = threading.Lock()

    def __init__(self, output_dir: str | Path = "outputs/talking-head", models_dir: str | Path | None = None,
                 settings: dict | None = None, on_progress: Callable[..., None] | None = None,
                 img2img_backend: Callable[[Img2ImgRequest], np.ndarray] | None = None):
        self._output_dir = Path(output_dir)
        self._models_dir = Path(models_dir) if models_dir else None
        self._settings = dict(settings or {})
        self._on_progress = on_progress
        self._interrupt = threading.Event()
        self._img2img = img2img_backend
        self.state = {"job": "", "done": 0, "total": 0, "text": "", "preview": None}

    def models_dir(self) -> Path | None:
        return self._models_dir

    def output_dir(self) -> Path:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    def setting(self, key: str, default: Any = None) -> Any:
        return self._settings.get(key, default)

    def progress(self, done: int, total: int, text: str = "", preview: np.ndarray | None = None) -> None:
        self.state.update(done=done, total=total, text=text, preview=preview)
        if self._on_progress is not None:
            self._on_progress(done, total, text, preview)

    def interrupt(self) -> None:
        """Ask the running job to stop (it stops within one chunk)."""
        self._interrupt.set()

    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @contextlib.contextmanager
    def job(self, name: str, total: int) -> Iterator[None]:
        with self._lock:
            self._interrupt.clear()
            self.state.update(job=name, done=0, total=total, text="", preview=None)
            try:
                yield
            finally:
                self.state.update(job="")
                self._interrupt.clear()

    def can_img2img(self) -> bool:
        """Whether this host was given an img2img backend."""
        return self._img2img is not None

    def img2img(self, request: Img2ImgRequest) -> np.ndarray:
        if self._img2img is None:
            from ..errors import DependencyError
            raise DependencyError("img2img refinement needs a Stable Diffusion model: run inside the WebUI, "
                                  "or pass --sd-checkpoint with a model file")
        return self._img2img(request)

    def restore_faces(self, image: np.ndarray) -> np.ndarray:
        return image
