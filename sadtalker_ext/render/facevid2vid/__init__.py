"""SadTalker's face renderer (face-vid2vid), re-implemented: keypoints, dense motion, SPADE generator.

Modules (all but ``config`` and ``alloc`` need torch; nothing here imports torch until used):

* ``config``: hyper-parameters of ``facerender.yaml`` as dataclasses.
* ``keypoints``: ``KPDetector`` (canonical 3D keypoints), ``HEEstimator`` (legacy),
  ``headpose_to_degrees``, ``rotation_matrix``, ``keypoint_transformation``.
* ``generator``: ``DenseMotionNetwork``, ``SPADEDecoder``, ``OcclusionAwareSPADEGenerator``
  (straightforward forward, as the official code).
* ``fast``: ``FaceRenderer`` - the same renderer with the source work done once and frames rendered
  in batches (``prepare_source`` then ``render`` / ``render_frames``).
* ``checkpoint``: ``load_kp_detector``, ``load_generator``, ``load_he_estimator`` (strict loading of
  the official ``SadTalker_V0.0.2_{256,512}.safetensors`` sections).
* ``alloc``: ``cpu_allocator_tuned`` (scoped glibc tuning used while rendering on the CPU).

Typical use::

    from sadtalker_ext.render.facevid2vid import (FaceRenderer, keypoint_transformation,
                                                  load_generator, load_kp_detector)
    kp_detector = load_kp_detector(ckpt_path)
    renderer = FaceRenderer(load_generator(ckpt_path))
    kp_canonical = kp_detector(source_image)                       # [1, 15, 3]
    renderer.prepare_source(source_image, keypoint_transformation(kp_canonical, he_source))
    for frames in renderer.render_frames(kp_driving_all, batch_size=4):
        ...                                                         # [b, 3, H, W] CPU float32

Source followed: OpenTalker/SadTalker ``src/facerender`` (see each module).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "KPDetectorConfig": "config", "GeneratorConfig": "config", "DenseMotionConfig": "config",
    "HEEstimatorConfig": "config",
    "KPDetector": "keypoints", "HEEstimator": "keypoints", "headpose_to_degrees": "keypoints",
    "rotation_matrix": "keypoints", "keypoint_transformation": "keypoints",
    "DenseMotionNetwork": "generator", "SPADEDecoder": "generator",
    "OcclusionAwareSPADEGenerator": "generator",
    "FaceRenderer": "fast",
    "load_kp_detector": "checkpoint", "load_generator": "checkpoint",
    "load_he_estimator": "checkpoint",
    "cpu_allocator_tuned": "alloc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
