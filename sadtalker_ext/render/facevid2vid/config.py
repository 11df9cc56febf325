"""Hyper-parameters of SadTalker's face renderer (face-vid2vid), as dataclasses.

Source followed: OpenTalker/SadTalker ``src/config/facerender.yaml`` (``model_params``:
``common_params``, ``kp_detector_params``, ``he_estimator_params``, ``generator_params`` with
``dense_motion_params``). The values below are the released configuration; both the 256 and the 512
checkpoints use it (only the image size differs). No torch import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KPDetectorConfig:
    """``kp_detector_params`` + common params: canonical 3D keypoint detector.

    Attributes:
        num_kp: keypoints (15).
        image_channel: input channels (3, RGB in [0, 1]).
        block_expansion: channels of the first 2D down block (32).
        max_features: channel cap of the 2D encoder (1024).
        num_blocks: 2D down blocks = 3D up blocks (5).
        reshape_channel: channels of the 1x1 conv before the 2D -> 3D reshape (16384).
        reshape_depth: depth of the 3D volume (16).
        temperature: softmax temperature of the heatmap (0.1).
        scale_factor: anti-aliased input down-scaling (0.25: 256 -> 64 pixels).
    """

    num_kp: int = 15
    image_channel: int = 3
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_channel: int = 16384
    reshape_depth: int = 16
    temperature: float = 0.1
    scale_factor: float = 0.25


@dataclass(frozen=True)
class DenseMotionConfig:
    """``generator_params.dense_motion_params``: the 3D hourglass predicting mask and occlusion."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    kp_variance: float = 0.01


@dataclass(frozen=True)
class GeneratorConfig:
    """``generator_params`` + common params of ``OcclusionAwareSPADEGenerator``.

    Attributes:
        num_kp: keypoints (15).
        image_channel: 3.
        feature_channel: channels of the 3D appearance volume (32).
        block_expansion: channels of the first 2D block (64).
        max_features: channels of the 2D feature map before the 3D reshape (512 = 32 x 16).
        num_down_blocks: 2D down blocks (2: 256 -> 64 pixels).
        reshape_channel / reshape_depth: 3D volume shape (32 channels x 16 depth).
        num_resblocks: 3D residual blocks (6).
        estimate_occlusion_map: True (the released model predicts an occlusion map).
        dense_motion: :class:`DenseMotionConfig`.
    """

    num_kp: int = 15
    image_channel: int = 3
    feature_channel: int = 32
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class HEEstimatorConfig:
    """``he_estimator_params``: the (legacy, inference-unused) head pose / expression estimator."""

    num_kp: int = 15
    image_channel: int = 3
    block_expansion: int = 64
    max_features: int = 2048
    num_bins: int = 66


__all__ = ["KPDetectorConfig", "DenseMotionConfig", "GeneratorConfig", "HEEstimatorConfig"]
