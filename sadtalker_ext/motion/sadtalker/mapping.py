"""SadTalker's MappingNet: windows of 3DMM coefficients -> face-vid2vid head pose, translation and
keypoint deltas (torch).

Source followed: OpenTalker/SadTalker ``src/facerender/modules/mapping.py`` (``MappingNet``),
``src/config/facerender.yaml`` / ``facerender_still.yaml`` (``coeff_nc`` 70 / 73,
``descriptor_nc`` 1024, ``layer`` 3, ``num_kp`` 15, ``num_bins`` 66) and
``src/generate_facerender_batch.py`` (``transform_semantic``: windows of radius 13 -> 27 frames).

Input ``[B, C, 27]`` (C = 70: exp 64 + angles 3 + translation 3, from ``mapping_00229``; C = 73
adds the 3 crop parameters for the "full" preprocessing, from ``mapping_00109``). A k=7 conv
(27 -> 21 frames) and three residual dilated convs (dilation 3, each removes 6 frames, with the
residual cropped ``[3:-3]``) give ``[B, 1024, 3]``, averaged over time; linear heads then output
``yaw``/``pitch``/``roll`` logits over 66 bins of 3 degrees (``softmax . [0..65] * 3 - 99``
gives degrees), ``t`` [B, 3] and ``exp`` [B, 45] (15 keypoints x 3).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import nn

SEMANTIC_RADIUS = 13
WINDOW = 2 * SEMANTIC_RADIUS + 1  # 27


class MappingNet(nn.Module):
    """Keys: ``first.0``, ``encoder{0,1,2}.1``, ``fc_roll``, ``fc_pitch``, ``fc_yaw``, ``fc_t``,
    ``fc_exp`` (the official ``MappingNet``)."""

    def __init__(self, coeff_nc: int = 70, descriptor_nc: int = 1024, layer: int = 3,
                 num_kp: int = 15, num_bins: int = 66):
        super().__init__()
        self.coeff_nc = coeff_nc
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0))
        for i in range(layer):
            setattr(self, f"encoder{i}", nn.Sequential(
                nn.LeakyReLU(0.1),
                nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, padding=0, dilation=3)))
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(descriptor_nc, num_bins)
        self.fc_pitch = nn.Linear(descriptor_nc, num_bins)
        self.fc_yaw = nn.Linear(descriptor_nc, num_bins)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * num_kp)

    def forward(self, semantics: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``[B, coeff_nc, 27]`` float32 -> ``{'yaw','pitch','roll': [B,66] logits, 't': [B,3],
        'exp': [B,45]}``."""
        out = self.first(semantics)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = self.pooling(out).reshape(out.shape[0], -1)
        return {"yaw": self.fc_yaw(out), "pitch": self.fc_pitch(out), "roll": self.fc_roll(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}


def semantic_windows(coeffs: np.ndarray, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """Per-frame coefficient windows for MappingNet (``transform_semantic``).

    Args:
        coeffs: ``[T, C]`` coefficients per frame.
    Returns:
        ``[T, C, 2*radius+1]`` float32; frame ``f`` holds rows ``clamp(f-radius .. f+radius,
        0, T-1)`` transposed.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    t = coeffs.shape[0]
    idx = np.clip(np.arange(t)[:, None] + np.arange(-radius, radius + 1)[None, :], 0, t - 1)
    return np.ascontiguousarray(coeffs[idx].transpose(0, 2, 1))


def source_window(first_coeff: np.ndarray, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """The source image's coefficients ``[C]`` repeated into one window ``[1, C, 2*radius+1]``."""
    c = np.asarray(first_coeff, dtype=np.float32).reshape(-1)
    return np.ascontiguousarray(np.repeat(c[None, :, None], 2 * radius + 1, axis=2))
