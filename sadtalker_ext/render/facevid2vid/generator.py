"""SadTalker's face renderer: dense-motion network and the occlusion-aware SPADE generator.

Source followed: OpenTalker/SadTalker ``src/facerender/modules/dense_motion.py``
(``DenseMotionNetwork``) and ``src/facerender/modules/generator.py`` (``SPADEDecoder``,
``OcclusionAwareSPADEGenerator``), face-vid2vid (Wang et al., CVPR 2021). Parameter names follow
the official modules so that the ``generator.*`` section of ``SadTalker_V0.0.2_256.safetensors``
loads strictly.

Every ``grid_sample`` uses torch's defaults (trilinear, zero padding, ``align_corners=False``) and
every up-sampling is nearest, as in the official code.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (DownBlock2d, Hourglass3d, ResBlock3d, SameBlock2d, SPADEResBlock,
                     coordinate_grid_3d, keypoint_gaussians)
from .config import DenseMotionConfig, GeneratorConfig


class DenseMotionNetwork(nn.Module):
    """Dense 3D motion (a sampling grid) and an occlusion map from sparse keypoint motion.

    For each keypoint k the sparse motion maps a driving-space point p to ``p - kp_d[k] + kp_s[k]``
    (plus an identity "background" motion). The compressed source volume is warped by each of the
    16 motions, stacked with the keypoint Gaussian differences ``G(kp_d) - G(kp_s)`` and passed
    through a 3D hourglass, whose output gives a softmax mask over the 16 motions (their weighted
    sum is the deformation) and, through a 7x7 conv, a sigmoid occlusion map.
    """

    def __init__(self, num_kp: int, feature_channel: int, config: DenseMotionConfig,
                 estimate_occlusion_map: bool = True):
        super().__init__()
        c = config
        self.hourglass = Hourglass3d(c.block_expansion, (num_kp + 1) * (c.compress + 1),
                                     c.num_blocks, c.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, c.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(c.compress, affine=True)
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters * c.reshape_depth, 1,
                                       kernel_size=7, padding=3)
        else:
            self.occlusion = None
        self.num_kp = num_kp
        self.kp_variance = c.kp_variance

    def compress_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """``relu(bn(conv1x1(feature)))``: ``[B, 32, D, H, W]`` -> ``[B, compress, D, H, W]``."""
        return F.relu(self.norm(self.compress(feature)))

    def sparse_motions(self, grid: torch.Tensor, kp_driving: torch.Tensor,
                       kp_source: torch.Tensor) -> torch.Tensor:
        """``[B, K+1, D, H, W, 3]``: identity, then ``grid - kp_d[k] + kp_s[k]`` per keypoint."""
        b, k = kp_driving.shape[:2]
        shifted = (grid.unsqueeze(0).unsqueeze(0) - kp_driving.view(b, k, 1, 1, 1, 3)) \
            + kp_source.view(b, k, 1, 1, 1, 3)
        ident = grid.unsqueeze(0).unsqueeze(0).expand(b, 1, *grid.shape)
        return torch.cat([ident, shifted], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            feature: source appearance volume ``[B, feature_channel, D, H, W]``.
            kp_driving, kp_source: ``[B, K, 3]`` keypoints.

        Returns:
            ``{'mask': [B, K+1, D, H, W] softmax, 'deformation': [B, D, H, W, 3] grid,
            'occlusion_map': [B, 1, H, W] in (0, 1)}``.
        """
        b, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feat = self.compress_feature(feature)
        grid = coordinate_grid_3d(d, h, w, dtype=feature.dtype, device=feature.device)
        motions = self.sparse_motions(grid, kp_driving, kp_source)
        c = feat.shape[1]
        rep = feat.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        deformed = F.grid_sample(rep, motions.reshape(b * k1, d, h, w, 3), mode="bilinear",
                                 padding_mode="zeros", align_corners=False).view(b, k1, c, d, h, w)
        heat = keypoint_gaussians(kp_driving, grid, self.kp_variance) \
            - keypoint_gaussians(kp_source, grid, self.kp_variance)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        inp = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(inp)
        mask = F.softmax(self.mask(prediction), dim=1)
        out = {"mask": mask}
        m = torch.where(mask < 1e-3, torch.zeros_like(mask), mask)
        out["deformation"] = (motions * m.unsqueeze(-1)).sum(dim=1)
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class SPADEDecoder(nn.Module):
    """SPADE decoder: ``[B, 256, 64, 64]`` warped features -> ``[B, 3, 256, 256]`` RGB in (0, 1).

    ``fc`` (3x3, 256 -> 512), six 512-channel SPADE residual blocks, nearest x2, ``up_0``
    (512 -> 256), nearest x2, ``up_1`` (256 -> 64), LeakyReLU(0.2), ``conv_img`` (3x3 -> 3),
    sigmoid. The segmentation map of every SPADE is the decoder input itself.
    """

    def __init__(self, ic: int = 256, oc: int = 64):
        super().__init__()
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * ic, 2 * ic, ic))
        self.up_0 = SPADEResBlock(2 * ic, ic, ic)
        self.up_1 = SPADEResBlock(ic, oc, ic)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

    def middle_blocks(self):
        return [getattr(self, f"G_middle_{i}") for i in range(6)]

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for block in self.middle_blocks():
            x = block(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class OcclusionAwareSPADEGenerator(nn.Module):
    """SadTalker's renderer network (straightforward per-call forward, as the official code).

    ``forward(source_image [B, 3, H, W] in [0, 1], kp_driving [B, K, 3], kp_source [B, K, 3])``
    returns ``{'prediction': [B, 3, H, W] in (0, 1), 'mask', 'occlusion_map', 'deformation',
    'decoder_input'}``. The source image is encoded to a ``[B, 32, 16, H/4, W/4]`` volume, warped
    by the dense motion, re-projected to 2D (``third``, ``fourth``), multiplied by the occlusion
    map and decoded by :class:`SPADEDecoder`. For video, prefer
    :class:`~sadtalker_ext.render.facevid2vid.fast.FaceRenderer`, which computes the source part
    once.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        c = config
        self.config = c
        self.dense_motion_network = DenseMotionNetwork(c.num_kp, c.feature_channel, c.dense_motion,
                                                       c.estimate_occlusion_map)
        self.first = SameBlock2d(c.image_channel, c.block_expansion, kernel_size=3, padding=1)
        blocks = []
        cout = c.block_expansion
        for i in range(c.num_down_blocks):
            cin = min(c.max_features, c.block_expansion * 2 ** i)
            cout = min(c.max_features, c.block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)
        self.second = nn.Conv2d(cout, c.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(c.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(c.reshape_channel))
        out_features = c.block_expansion * 2 ** c.num_down_blocks
        self.third = SameBlock2d(c.max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder()

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """Appearance volume ``[B, reshape_channel, reshape_depth, H/4, W/4]`` of the source."""
        return _appearance_volume(self, source_image)

    def source_encoder(self) -> "SourceEncoder":
        """The networks that read only the source image, sharing this generator's modules."""
        return SourceEncoder(self)

    @staticmethod
    def deform(volume: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """``grid_sample(volume, deformation)``, resizing the grid trilinearly if sizes differ."""
        d, h, w = volume.shape[2:]
        if tuple(deformation.shape[1:4]) != (d, h, w):
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=(d, h, w),
                                        mode="trilinear").permute(0, 2, 3, 4, 1)
        return F.grid_sample(volume, deformation, mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> Dict[str, torch.Tensor]:
        feature_3d = self.encode_source(source_image)
        dm = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        out = self.deform(feature_3d, dm["deformation"])
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.reshape(b, c * d, h, w)))
        occlusion: Optional[torch.Tensor] = dm.get("occlusion_map")
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
            out = out * occlusion
        result = dict(dm)
        result["decoder_input"] = out
        result["prediction"] = self.decoder(out)
        return result



def _appearance_volume(m, source_image: torch.Tensor) -> torch.Tensor:
    """``first`` -> ``down_blocks`` -> ``second`` -> reshape to 3D -> ``resblocks_3d`` of ``m`` (a
    generator or a :class:`SourceEncoder`)."""
    out = m.first(source_image)
    for block in m.down_blocks:
        out = block(out)
    out = m.second(out)
    b, _, h, w = out.shape
    out = out.view(b, m.config.reshape_channel, m.config.reshape_depth, h, w)
    return m.resblocks_3d(out)


class SourceEncoder(nn.Module):
    """The source-only part of :class:`OcclusionAwareSPADEGenerator` (its modules, shared, not copied).

    ``forward(source_image [B, 3, H, W] in [0, 1])`` returns ``(feature, compressed)``: the appearance
    volume ``[B, 32, 16, H/4, W/4]`` and the dense-motion network's compressed volume
    ``[B, compress, 16, H/4, W/4]``. A renderer that keeps this instead of the whole generator lets the
    decoder's and hourglass's original weights be freed once it has prepared its own copies.
    """

    def __init__(self, generator: OcclusionAwareSPADEGenerator):
        super().__init__()
        self.config = generator.config
        self.first = generator.first
        self.down_blocks = generator.down_blocks
        self.second = generator.second
        self.resblocks_3d = generator.resblocks_3d
        self.compress = generator.dense_motion_network.compress
        self.norm = generator.dense_motion_network.norm

    def forward(self, source_image: torch.Tensor):
        feature = _appearance_volume(self, source_image)
        return feature, F.relu(self.norm(self.compress(feature)))


__all__ = ["DenseMotionNetwork", "SPADEDecoder", "OcclusionAwareSPADEGenerator", "SourceEncoder"]
