"""Builders that create the face-renderer modules and load the official weights strictly.

Source followed: OpenTalker/SadTalker ``src/facerender/animate.py`` (``load_cpk_facevid2vid_safetensor``:
the keys containing ``generator`` / ``kp_extractor`` with that substring removed, strict
``load_state_dict``), and the legacy ``facevid2vid_00189-model.pth.tar`` layout for the
HEEstimator (``ckpt['he_estimator']``, keys without prefix).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ...models.loading import (SADTALKER_EXPECTED, SafetensorsCheckpoint, load_torch_checkpoint,
                               strict_load)
from .config import GeneratorConfig, HEEstimatorConfig, KPDetectorConfig
from .generator import OcclusionAwareSPADEGenerator
from .keypoints import HEEstimator, KPDetector

CheckpointLike = Union[str, "os.PathLike[str]", SafetensorsCheckpoint]

HE_ESTIMATOR_EXPECTED = ("facevid2vid_00189-model.pth.tar (legacy face-vid2vid checkpoint with an "
                         "'he_estimator' entry)")


def _open(ckpt: CheckpointLike) -> SafetensorsCheckpoint:
    if isinstance(ckpt, SafetensorsCheckpoint):
        return ckpt
    return SafetensorsCheckpoint(Path(ckpt))


def _finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
    return module


def load_kp_detector(ckpt: CheckpointLike, *, config: KPDetectorConfig = KPDetectorConfig(),
                     device: Optional[Union[str, torch.device]] = None,
                     dtype: Optional[torch.dtype] = None) -> KPDetector:
    """:class:`KPDetector` with the ``kp_extractor.`` section of ``SadTalker_V0.0.2_{256,512}.safetensors``.

    Args:
        ckpt: path of the safetensors file, or an open :class:`SafetensorsCheckpoint`.
        device, dtype: optional placement (default: CPU float32).

    Returns:
        The module in eval mode, gradients off.

    Raises:
        CheckpointError: missing/damaged file, or keys/shapes that differ from the official layout.
    """
    ck = _open(ckpt)
    net = KPDetector(config)
    strict_load(net, ck.section("kp_extractor."), file=ck.path, prefix="kp_extractor.",
                expected=ck.expected if hasattr(ck, "expected") else SADTALKER_EXPECTED)
    return _finish(net, device, dtype)


def load_generator(ckpt: CheckpointLike, *, config: GeneratorConfig = GeneratorConfig(),
                   device: Optional[Union[str, torch.device]] = None,
                   dtype: Optional[torch.dtype] = None) -> OcclusionAwareSPADEGenerator:
    """:class:`OcclusionAwareSPADEGenerator` with the ``generator.`` section of the SadTalker file.

    Same arguments, return value and errors as :func:`load_kp_detector`.
    """
    ck = _open(ckpt)
    net = OcclusionAwareSPADEGenerator(config)
    strict_load(net, ck.section("generator."), file=ck.path, prefix="generator.",
                expected=ck.expected if hasattr(ck, "expected") else SADTALKER_EXPECTED)
    return _finish(net, device, dtype)


def load_he_estimator(source: Union[str, "os.PathLike[str]", Mapping[str, torch.Tensor]], *,
                      config: HEEstimatorConfig = HEEstimatorConfig(),
                      device: Optional[Union[str, torch.device]] = None,
                      dtype: Optional[torch.dtype] = None) -> HEEstimator:
    """:class:`HEEstimator` from the legacy ``facevid2vid_00189-model.pth.tar`` (or a state dict).

    ``source`` is the ``.pth.tar`` path (read with ``weights_only=True``, entry ``he_estimator``)
    or a ``{key: Tensor}`` dict with bare keys. Raises ``CheckpointError`` on any mismatch. The
    released SadTalker files do not contain this network; inference never needs it.
    """
    if isinstance(source, Mapping):
        sd, file = dict(source), "he_estimator state dict"
    else:
        sd = load_torch_checkpoint(source, key="he_estimator", expected=HE_ESTIMATOR_EXPECTED)
        file = str(source)
    net = HEEstimator(config)
    strict_load(net, sd, file=file, expected=HE_ESTIMATOR_EXPECTED)
    return _finish(net, device, dtype)


__all__ = ["load_kp_detector", "load_generator", "load_he_estimator", "HE_ESTIMATOR_EXPECTED"]
