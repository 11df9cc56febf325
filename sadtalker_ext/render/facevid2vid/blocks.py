"""Building blocks of the face-vid2vid networks (torch only).

Each block keeps the parameter names of the official module it mirrors, so that the official
state dicts load strictly. Source followed: OpenTalker/SadTalker ``src/facerender/modules/util.py``
(blocks, coordinate grids, anti-aliased down-sampling, SPADE) and torch's ``spectral_norm`` eval
behaviour. The official ``SynchronizedBatchNorm{2,3}d`` are plain batch norms at inference, so
``nn.BatchNorm{2,3}d`` (same keys) is used.

Conventions: images and 2D features are ``[B, C, H, W]``, 3D features ``[B, C, D, H, W]``, all
float32 unless the caller casts the module.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------
# coordinate grids
# ----------------------------------------------------------------------------------------------

def coordinate_grid_3d(depth: int, height: int, width: int, *, dtype=torch.float32,
                       device=None) -> torch.Tensor:
    """Regular grid over ``[-1, 1]^3``: ``[D, H, W, 3]`` with the last axis in (x, y, z) order.

    x runs along W, y along H and z along D, each ``2 * i / (n - 1) - 1`` (the corners are exactly
    -1 and 1). Mirrors ``make_coordinate_grid`` of the official util.py.
    """
    def axis(n: int) -> torch.Tensor:
        a = torch.arange(n, device=device).to(dtype)
        return 2 * (a / (n - 1)) - 1

    x = axis(width).view(1, 1, width, 1).expand(depth, height, width, 1)
    y = axis(height).view(1, height, 1, 1).expand(depth, height, width, 1)
    z = axis(depth).view(depth, 1, 1, 1).expand(depth, height, width, 1)
    return torch.cat([x, y, z], dim=3)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """Unnormalised Gaussians around keypoints: ``exp(-0.5 * |grid - kp|^2 / variance)``.

    Args:
        kp: ``[B, K, 3]`` keypoints (x, y, z) in [-1, 1] units.
        grid: ``[D, H, W, 3]`` from :func:`coordinate_grid_3d`.
        variance: Gaussian variance (0.01 in the released model).

    Returns:
        ``[B, K, D, H, W]``. Mirrors ``kp2gaussian`` of the official util.py.
    """
    diff = grid.unsqueeze(0).unsqueeze(0) - kp.view(kp.shape[0], kp.shape[1], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


# ----------------------------------------------------------------------------------------------
# 2D / 3D blocks
# ----------------------------------------------------------------------------------------------

class SameBlock2d(nn.Module):
    """conv -> batch norm -> ReLU (or LeakyReLU(0.01) with ``lrelu``), same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3,
                 padding: int = 1, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """conv 3x3 -> batch norm -> ReLU -> 2x2 average pooling (halves H and W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class DownBlock3d(nn.Module):
    """conv 3x3x3 -> batch norm -> ReLU -> (1, 2, 2) average pooling (halves H and W, keeps D)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest (1, 2, 2) up-sampling -> conv 3x3x3 -> batch norm -> ReLU (doubles H and W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 (stride) -> 1x1, batch norms), with a strided 1x1 skip."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, 1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, 1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class AntiAliasDownsample(nn.Module):
    """Gaussian-blurred down-sampling by an integer factor (``AntiAliasInterpolation2d``).

    ``scale`` 0.25 gives sigma ``(1/scale - 1) / 2 = 1.5`` and a 13x13 kernel; the input is padded
    with zeros by ``kernel // 2`` on each side, filtered depth-wise and every ``1/scale``-th pixel is
    kept. The kernel is the buffer ``weight`` ``[C, 1, k, k]`` (stored in the checkpoints).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1.0 / scale - 1.0) / 2.0
        size = 2 * int(round(sigma * 4)) + 1
        self.pad = size // 2
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
        kernel = g.view(-1, 1) * g.view(1, -1)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1))
        self.channels = channels
        self.step = int(1.0 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.step, padding=self.pad, groups=self.channels)


# ----------------------------------------------------------------------------------------------
# hourglasses
# ----------------------------------------------------------------------------------------------

class KPHourglass(nn.Module):
    """2D encoder -> 1x1 conv -> reshape to 3D -> 3D nearest-up decoder (KPDetector's predictor).

    ``[B, C_in, H, W]`` -> ``[B, out_filters, reshape_depth, H, W]``.
    """

    def __init__(self, block_expansion: int, in_features: int, reshape_features: int,
                 reshape_depth: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
        cin = min(max_features, block_expansion * 2 ** num_blocks)
        self.conv = nn.Conv2d(cin, reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        cout = cin
        for i in range(num_blocks):
            cin = min(max_features, block_expansion * 2 ** (num_blocks - i))
            cout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
        self.reshape_depth = reshape_depth
        self.out_filters = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)
        return self.up_blocks(out)


class Encoder3d(nn.Module):
    """Hourglass encoder: ``num_blocks`` :class:`DownBlock3d`; returns every scale, input first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else min(max_features, block_expansion * 2 ** i),
                        min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder3d(nn.Module):
    """Hourglass decoder: up blocks with skip concatenation, then conv 3x3x3 -> BN -> ReLU.

    Output channels ``block_expansion + in_features``.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            cin = mult * min(max_features, block_expansion * 2 ** (i + 1))
            cout = min(max_features, block_expansion * 2 ** i)
            blocks.append(UpBlock3d(cin, cout))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net of the dense-motion network: ``[B, C_in, D, H, W]`` -> ``[B, out_filters, D, H, W]``."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3,
                 max_features: int = 256):
        super().__init__()
        self.encoder = Encoder3d(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder3d(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# ----------------------------------------------------------------------------------------------
# SPADE decoder blocks
# ----------------------------------------------------------------------------------------------

class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is ``weight_orig / sigma`` with ``sigma = u . (W v)`` (eval mode).

    Stores ``bias`` (optional), ``weight_orig`` ``[out, in, k, k]`` and the buffers ``weight_u``
    ``[out]`` and ``weight_v`` ``[in*k*k]`` exactly as ``torch.nn.utils.spectral_norm`` does. At
    inference torch uses the stored ``u`` and ``v`` without power iteration; so does this module
    (it never updates them). :meth:`normalized_weight` returns the effective weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 dilation: int = 1, bias: bool = True):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        fan_in = in_channels * kernel_size * kernel_size
        self.weight_orig = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in))
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0))
        self.register_buffer("weight_v", F.normalize(torch.randn(fan_in), dim=0))
        self.padding = padding
        self.dilation = dilation

    def sigma(self) -> torch.Tensor:
        """Scalar ``u . (W v)`` with W reshaped to ``[out, -1]`` (torch's eval-mode estimate)."""
        w = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        return torch.dot(self.weight_u, torch.mv(w, self.weight_v))

    def normalized_weight(self) -> torch.Tensor:
        return self.weight_orig / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding,
                        dilation=self.dilation)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``IN(x) * (1 + gamma(seg)) + beta(seg)``.

    ``IN`` is an affine-free instance norm (eps 1e-5); ``seg`` is resized to ``x``'s size with
    nearest interpolation, then ``mlp_shared`` (conv 3x3 -> ReLU, 128 channels) and the two 3x3
    heads ``mlp_gamma`` / ``mlp_beta`` produce per-pixel modulation.
    """

    hidden = 128

    def __init__(self, norm_nc: int, label_nc: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, self.hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(self.hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(self.hidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE residual block with spectral-norm convs (``norm_G = 'spadespectralinstance'``).

    ``out = shortcut(x) + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x, seg))), seg)))`` with LeakyReLU
    slope 0.2; the shortcut is ``conv_s(norm_s(x, seg))`` (1x1, no bias, no activation) when the
    channel count changes, else identity.
    """

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, 3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


__all__ = ["coordinate_grid_3d", "keypoint_gaussians", "SameBlock2d", "DownBlock2d", "DownBlock3d",
           "UpBlock3d", "ResBlock3d", "ResBottleneck", "AntiAliasDownsample", "KPHourglass",
           "Encoder3d", "Decoder3d", "Hourglass3d", "SpectralNormConv2d", "SPADE", "SPADEResBlock"]
