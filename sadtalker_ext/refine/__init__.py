"""img2img refinement of the generated frames, controlled by keyframes.

Modules: :mod:`.keyframes` (schedule, interpolation, JSON), :mod:`.regions` (masks, crops,
paste-back), :mod:`.flow` (optical-flow carrying between keyframes), :mod:`.backends` (host /
diffusers img2img), :mod:`.stage` (the pipeline stage), :mod:`.testing` (a tiny offline SD
pipeline for tests and benchmarks). Importing this package imports neither torch nor diffusers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Keyframe": "keyframes", "KeyframeSchedule": "keyframes", "RefineParams": "keyframes",
    "portrait_prompt": "keyframes", "prompt_from_infotext": "keyframes",
    "RefineStage": "stage", "refine_stage_for": "stage", "load_schedule": "stage",
    "HostBackend": "backends", "DiffusersBackend": "backends", "make_backend": "backends",
    "refine_status": "backends",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
