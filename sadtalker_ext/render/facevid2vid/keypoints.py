"""Canonical keypoint detector, head-pose estimator and the keypoint transformation.

Source followed: OpenTalker/SadTalker ``src/facerender/modules/keypoint_detector.py``
(``KPDetector``, ``HEEstimator``) and ``src/facerender/modules/make_animation.py``
(``headpose_pred_to_degree``, ``get_rotation_matrix``, ``keypoint_transformation``), which follow
face-vid2vid (Wang et al., "One-Shot Free-View Neural Talking-Head Synthesis", CVPR 2021).

Units: keypoints are (x, y, z) in the [-1, 1] cube of the 3D feature volume (x along width, y along
height, z along depth); angles are degrees; head-pose logits have 66 bins of 3 degrees
(bin ``i`` centred on ``3*i - 99``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasDownsample, KPHourglass, ResBottleneck, coordinate_grid_3d
from .config import HEEstimatorConfig, KPDetectorConfig

#: The official code converts degrees to radians with pi approximated as 3.14; kept for parity.
PI_APPROX = 3.14


class KPDetector(nn.Module):
    """Canonical (identity-specific, pose-free) 3D keypoints of a source image.

    ``forward(image [B, 3, H, W] float in [0, 1]) -> [B, num_kp, 3]`` keypoints in [-1, 1].
    The image is anti-aliased and down-scaled by ``scale_factor`` (256 -> 64), passed through a 2D
    encoder / 3D decoder (:class:`~.blocks.KPHourglass`) and a 3x3x3 conv giving one
    ``[reshape_depth, H/4, W/4]`` heatmap per keypoint; a softmax with ``temperature`` over each
    heatmap gives a distribution whose expected grid coordinate is the keypoint. Parameter names
    follow the official ``KPDetector`` (``predictor.*``, ``kp.*``, ``down.weight``); the released
    model has no Jacobian head.
    """

    def __init__(self, config: KPDetectorConfig = KPDetectorConfig()):
        super().__init__()
        c = config
        self.config = c
        self.predictor = KPHourglass(c.block_expansion, c.image_channel, c.reshape_channel,
                                     c.reshape_depth, c.num_blocks, c.max_features)
        self.kp = nn.Conv3d(self.predictor.out_filters, c.num_kp, kernel_size=3, padding=1)
        if c.scale_factor != 1:
            self.down = AntiAliasDownsample(c.image_channel, c.scale_factor)
        else:
            self.down = None

    def downsample(self, image: torch.Tensor) -> torch.Tensor:
        """The anti-aliased input of the predictor, ``[B, 3, H*scale, W*scale]``."""
        return self.down(image) if self.down is not None else image

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax heatmaps ``[B, num_kp, D, H', W']`` (each sums to 1)."""
        pred = self.kp(self.predictor(self.downsample(image)))
        b, k = pred.shape[:2]
        prob = F.softmax(pred.reshape(b, k, -1) / self.config.temperature, dim=2)
        return prob.view_as(pred)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        heat = self.heatmaps(image)
        d, h, w = heat.shape[2:]
        grid = coordinate_grid_3d(d, h, w, dtype=heat.dtype, device=heat.device)
        return (heat.unsqueeze(-1) * grid.view(1, 1, d, h, w, 3)).sum(dim=(2, 3, 4))


class HEEstimator(nn.Module):
    """Head pose and expression from an image (legacy face-vid2vid module; unused by SadTalker).

    ``forward(image [B, 3, H, W]) -> {'yaw', 'pitch', 'roll': [B, num_bins] logits, 't': [B, 3],
    'exp': [B, 3*num_kp]}``. As in the official forward, the ``'yaw'`` output comes from
    ``fc_roll`` and ``'roll'`` from ``fc_yaw`` (the names are swapped there; kept for parity).
    """

    def __init__(self, config: HEEstimatorConfig = HEEstimatorConfig()):
        super().__init__()
        c = config
        be = c.block_expansion
        self.conv1 = nn.Conv2d(c.image_channel, be, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(be, affine=True)
        self.conv2 = nn.Conv2d(be, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256, affine=True)
        self.block1 = self._stage("b1_", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512, affine=True)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = self._stage("b3_", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024, affine=True)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = self._stage("b5_", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(2048, affine=True)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = self._stage("b7_", 2048, 2)
        self.fc_roll = nn.Linear(2048, c.num_bins)
        self.fc_pitch = nn.Linear(2048, c.num_bins)
        self.fc_yaw = nn.Linear(2048, c.num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * c.num_kp)

    @staticmethod
    def _stage(prefix: str, features: int, n: int) -> nn.Sequential:
        stage = nn.Sequential()
        for i in range(n):
            stage.add_module(f"{prefix}{i}", ResBottleneck(features, stride=1))
        return stage

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = F.relu(self.norm1(self.conv1(image)))
        out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.block1(out)
        out = F.relu(self.norm3(self.conv3(out)))
        out = self.block3(self.block2(out))
        out = F.relu(self.norm4(self.conv4(out)))
        out = self.block5(self.block4(out))
        out = F.relu(self.norm5(self.conv5(out)))
        out = self.block7(self.block6(out))
        feat = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return {"yaw": self.fc_roll(feat), "pitch": self.fc_pitch(feat), "roll": self.fc_yaw(feat),
                "t": self.fc_t(feat), "exp": self.fc_exp(feat)}


def headpose_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of 66-bin logits: ``softmax(logits) . [0..65] * 3 - 99`` degrees.

    ``[B, 66]`` -> ``[B]``, range (-99, 96) degrees.
    """
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * idx, dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation ``R = R_pitch @ R_yaw @ R_roll`` from angles in degrees, ``[B]`` each -> ``[B, 3, 3]``.

    Pitch rotates about x, yaw about y and roll about z (right-handed, as in the official
    ``get_rotation_matrix``). Degrees become radians as ``deg / 180 * 3.14`` (the official
    approximation of pi, :data:`PI_APPROX`).
    """
    def rad(a: torch.Tensor) -> torch.Tensor:
        return a / 180 * PI_APPROX

    p, y, r = rad(pitch), rad(yaw), rad(roll)
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    pitch_m = torch.stack([one, zero, zero,
                           zero, torch.cos(p), -torch.sin(p),
                           zero, torch.sin(p), torch.cos(p)], dim=1).view(-1, 3, 3)
    yaw_m = torch.stack([torch.cos(y), zero, torch.sin(y),
                         zero, one, zero,
                         -torch.sin(y), zero, torch.cos(y)], dim=1).view(-1, 3, 3)
    roll_m = torch.stack([torch.cos(r), -torch.sin(r), zero,
                          torch.sin(r), torch.cos(r), zero,
                          zero, zero, one], dim=1).view(-1, 3, 3)
    return torch.einsum("bij,bjk,bkm->bim", pitch_m, yaw_m, roll_m)


def keypoint_transformation(kp_canonical: torch.Tensor, he: Dict[str, torch.Tensor], *,
                            yaw_in: Optional[torch.Tensor] = None,
                            pitch_in: Optional[torch.Tensor] = None,
                            roll_in: Optional[torch.Tensor] = None,
                            wo_exp: bool = False) -> torch.Tensor:
    """Pose and expression applied to canonical keypoints (face-vid2vid's ``T(x_c, R, t, delta)``).

    Args:
        kp_canonical: ``[1 or B, K, 3]`` from :class:`KPDetector` (broadcast to ``B``).
        he: ``{'yaw', 'pitch', 'roll': [B, 66] logits, 't': [B, 3], 'exp': [B, 3K]}`` (the
            MappingNet / HEEstimator output). Not modified.
        yaw_in, pitch_in, roll_in: optional ``[B]`` angles in degrees that replace the decoded
            ones (the user's pose override, official ``he['yaw_in']`` etc.).
        wo_exp: drop the expression offsets.

    Returns:
        ``[B, K, 3]``: ``R @ kp + (0, t_y, 0) + exp.view(B, K, 3)``. Only the y translation is
        kept (the official code zeroes t's x and z in place).
    """
    yaw = headpose_to_degrees(he["yaw"]) if yaw_in is None else yaw_in
    pitch = headpose_to_degrees(he["pitch"]) if pitch_in is None else pitch_in
    roll = headpose_to_degrees(he["roll"]) if roll_in is None else roll_in
    b = yaw.shape[0]
    yaw, pitch, roll = (a.to(he["t"].dtype).reshape(b) for a in (yaw, pitch, roll))
    rot = rotation_matrix(yaw, pitch, roll)
    kp = kp_canonical.expand(b, -1, -1)
    rotated = torch.einsum("bmp,bkp->bkm", rot, kp)
    t = he["t"].clone()
    t[:, 0] = t[:, 0] * 0
    t[:, 2] = t[:, 2] * 0
    out = rotated + t.unsqueeze(1)
    exp = he["exp"].view(b, -1, 3)
    if wo_exp:
        exp = exp * 0
    return out + exp


__all__ = ["PI_APPROX", "KPDetector", "HEEstimator", "headpose_to_degrees", "rotation_matrix",
           "keypoint_transformation"]
