"""Deep3DFaceRecon's coefficient regressor (ResNet-50 -> 257 3DMM coefficients), torch only.

Source followed: OpenTalker/SadTalker ``src/face3d/models/networks.py`` (``define_net_recon(
"resnet50", use_last_fc=False)`` -> ``ReconNetWrapper``), itself from sicxu/Deep3DFaceRecon_pytorch
(Deng et al., "Accurate 3D Face Reconstruction with Weakly-Supervised Learning", CVPRW 2019). The
backbone is the torchvision ResNet-50 (v1.5: stride on the 3x3 conv of each bottleneck) with the
classifier removed; it is written out here so torchvision is not needed. Key names match the
checkpoint section ``face_3drecon.`` of ``SadTalker_V0.0.2_256/512.safetensors``: ``backbone.*``
(conv1, bn1, layer1..4 with conv1-3/bn1-3/downsample.0-1) and ``final_layers.0..6``.

Input: ``[B, 3, 224, 224]`` float32 RGB in [0, 1], the face aligned by the 5-point similarity
transform (no mean/std normalisation). Output ``[B, 257]`` float32:

==========  =======  ====================================================
slice       size     meaning
==========  =======  ====================================================
0:80        80       identity (shape) coefficients of the BFM
80:144      64       expression coefficients
144:224     80       texture coefficients
224:227     3        rotation angles (radians: pitch, yaw, roll)
227:254     27       spherical-harmonics lighting (gamma, 9 bands x RGB)
254:257     3        translation (x, y, z)
==========  =======  ====================================================

SadTalker keeps exp, angles and translation (:func:`sadtalker_coeffs`, 70 values).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..models.loading import SADTALKER_EXPECTED, SafetensorsCheckpoint, strict_load

#: (name, size) of the output slices, in order.
COEFF_LAYOUT: Tuple[Tuple[str, int], ...] = (("id", 80), ("exp", 64), ("tex", 80),
                                             ("angle", 3), ("gamma", 27), ("trans_xy", 2),
                                             ("trans_z", 1))
NUM_COEFFS = sum(n for _, n in COEFF_LAYOUT)  # 257
FEATURE_DIM = 2048


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN after each, identity or
    ``downsample`` (1x1 conv stride + BN) shortcut, ReLU after the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to global average pooling: ``[B,3,H,W]`` -> ``[B,2048,1,1]``."""

    def __init__(self, layers: Tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], stride=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_ch = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch))
        mods: List[nn.Module] = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_ch
        mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """``ReconNetWrapper('resnet50', use_last_fc=False)``: backbone + seven 1x1-conv heads."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList(
            [nn.Conv2d(FEATURE_DIM, n, kernel_size=1, bias=True) for _, n in COEFF_LAYOUT])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,224,224]`` RGB in [0,1] -> ``[B,257]`` coefficients (layout in module doc)."""
        feats = self.backbone(image)
        return torch.cat([head(feats) for head in self.final_layers], dim=1).flatten(1)


def split_coeffs(coeffs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``[B,257]`` -> ``{'id','exp','tex','angle','gamma','trans'}`` (``split_coeff``)."""
    out: Dict[str, torch.Tensor] = {}
    start = 0
    for name, n in COEFF_LAYOUT:
        out[name] = coeffs[:, start:start + n]
        start += n
    out["trans"] = torch.cat([out.pop("trans_xy"), out.pop("trans_z")], dim=1)
    return out


def sadtalker_coeffs(coeffs: torch.Tensor) -> torch.Tensor:
    """``[B,257]`` -> ``[B,70]`` = exp (64), angle (3), trans (3), SadTalker's ``coeff_3dmm[:, :70]``
    (the 3 crop/alignment parameters that complete the 73 columns come from the aligner)."""
    parts = split_coeffs(coeffs)
    return torch.cat([parts["exp"], parts["angle"], parts["trans"]], dim=1)


def load_recon_net(ckpt: Union[str, "os.PathLike[str]", SafetensorsCheckpoint]) -> ReconNet:
    """ReconNet from the ``face_3drecon.`` section (332 entries), strict, eval mode, gradients off, CPU.

    Raises:
        CheckpointError: missing/truncated file or a layout mismatch (names the file and keys).
    """
    st = ckpt if isinstance(ckpt, SafetensorsCheckpoint) else SafetensorsCheckpoint(ckpt)
    net = ReconNet()
    strict_load(net, st.section("face_3drecon."), file=st.path, prefix="face_3drecon.",
                expected=SADTALKER_EXPECTED)
    return net.eval().requires_grad_(False)


__all__ = ["COEFF_LAYOUT", "NUM_COEFFS", "ReconNet", "ResNet50Backbone", "load_recon_net",
           "sadtalker_coeffs", "split_coeffs"]
