"""SadTalker's audio -> 3DMM-coefficient networks, re-implemented in torch.

Modules (all but ``blink`` need torch; nothing here is imported by the lite engine):

* :mod:`.audio_encoder` - the shared 13-block mel encoder ``[N,1,80,16] -> [N,512]``.
* :mod:`.expnet` - :class:`ExpNet` (``SimpleWrapperV2``) and :func:`predict_expression`
  (``Audio2Exp.test``, 10-frame chunks) -> ``[B,T,64]`` expression coefficients.
* :mod:`.posevae` - :class:`PoseVAE` (audio encoder + CVAE decoder with 46 pose styles, 64-d
  latent, 32-frame windows) and :func:`predict_pose` (``Audio2Pose.test``) with injectable noise
  (``noise_fn`` / ``generator`` / ``seed``; :func:`recorded_noise`).
* :mod:`.audio2coeff` - :class:`Audio2Coeff` glue -> ``[T,70]`` (exp + Savitzky-Golay smoothed
  pose), :func:`smooth_pose`, :func:`apply_reference_pose`.
* :mod:`.mapping` - :class:`MappingNet` (70 / 73 coefficients) and the 27-frame windows.
* :mod:`.blink` - random eye-blink schedule (numpy only; importable without torch).
* :mod:`.loaders` - :func:`load_audio2exp`, :func:`load_audio2pose`, :func:`load_audio2coeff`,
  :func:`load_mapping` from the official files.
"""
from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports (PEP 562): importing the package (e.g. for ``blink``) does not import torch;
# the first use of a torch-backed name does.
_EXPORTS = {
    "Audio2Coeff": "audio2coeff", "apply_reference_pose": "audio2coeff",
    "smooth_pose": "audio2coeff", "random_blink_ratio": "blink", "ExpNet": "expnet",
    "predict_expression": "expnet", "load_audio2coeff": "loaders", "load_audio2exp": "loaders",
    "load_audio2pose": "loaders", "load_mapping": "loaders", "MappingNet": "mapping",
    "semantic_windows": "mapping", "source_window": "mapping", "PoseVAE": "posevae",
    "predict_pose": "posevae", "recorded_noise": "posevae",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
