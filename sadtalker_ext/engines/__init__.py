"""Engine registry: ``get_engine(name)`` returns an engine; "auto" picks the best available."""
from __future__ import annotations

import logging

from ..errors import DependencyError, OptionError

log = logging.getLogger(__name__)


def sadtalker_available(checkpoints: str | None = None, host_dir=None) -> bool:
    """True when torch imports and the SadTalker checkpoint files are found."""
    try:
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            return False
        from ..models.locate import engine_available, search_dirs
        return engine_available("sadtalker", search_dirs(checkpoints, host_dir, existing_only=True))
    except (ImportError, OSError) as exc:
        log.debug("sadtalker availability check failed: %s", exc)
        return False


def resolve_engine_name(name: str, checkpoints: str | None = None, host_dir=None) -> str:
    if name == "auto":
        return "sadtalker" if sadtalker_available(checkpoints, host_dir) else "lite"
    return name


def get_engine(name: str = "auto", *, checkpoints: str | None = None, host_dir=None, device: str | None = None):
    """An engine instance. Raises OptionError for unknown names, DependencyError when torch is missing."""
    name = resolve_engine_name(name, checkpoints, host_dir)
    if name == "lite":
        from .lite import LiteEngine
        return LiteEngine()
    if name == "sadtalker":
        try:
            from .sadtalker import SadTalkerEngine
        except ImportError as exc:
            raise DependencyError("the SadTalker engine needs PyTorch; install it (pip install torch) "
                                  "or use --engine lite") from exc
        return SadTalkerEngine(checkpoints=checkpoints, host_dir=host_dir, device=device)
    raise OptionError(f"unknown engine {name!r}; use auto, lite or sadtalker")
