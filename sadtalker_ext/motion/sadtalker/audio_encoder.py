"""The Wav2Lip-style audio encoder shared by SadTalker's ExpNet and PoseVAE (torch).

One mel window ``[N, 1, 80, 16]`` (see :func:`sadtalker_ext.audio.mel.sadtalker_mel_windows`) ->
one 512-d embedding ``[N, 512, 1, 1]``. Thirteen conv blocks (3x3 conv + BatchNorm, optional
identity residual, ReLU); the spatial size goes 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.

Layout (key names ``{i}.conv_block.0.weight/bias`` for the conv, ``{i}.conv_block.1.*`` for the
BatchNorm) follows OpenTalker/SadTalker ``src/audio2exp_models/networks.py`` (``SimpleWrapperV2``)
and ``src/audio2pose_models/audio_encoder.py`` (``AudioEncoder``), which is Wav2Lip's audio encoder.
"""
from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch import nn

_Size = Union[int, Tuple[int, int]]

#: (in channels, out channels, kernel, stride, padding, residual) of the 13 blocks.
AUDIO_ENCODER_LAYOUT: List[Tuple[int, int, int, _Size, int, bool]] = [
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d (as ``conv_block``), plus the input when ``residual``, then ReLU.

    The residual form needs ``cin == cout`` and stride 1 (shape preserved).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: _Size, padding: int,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


def build_audio_encoder() -> nn.Sequential:
    """The 13-block encoder as an ``nn.Sequential``: ``[N,1,80,16]`` -> ``[N,512,1,1]`` float32."""
    return nn.Sequential(*[ConvBlock(*spec) for spec in AUDIO_ENCODER_LAYOUT])


class SequenceAudioEncoder(nn.Module):
    """PoseVAE's wrapper: mel windows ``[B, T, 1, 80, 16]`` -> embeddings ``[B, T, 512]``.

    Keys: ``audio_encoder.{i}.conv_block.*`` (the official ``AudioEncoder``). Frames are encoded
    independently. (The official wrapper stacks frames time-major and then reshapes batch-major,
    which mixes batch items when B > 1; for B = 1, the only case SadTalker runs, both agree. This
    implementation keeps each batch item's frames together.)
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = build_audio_encoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        b, t = mels.shape[0], mels.shape[1]
        flat = mels.reshape(b * t, *mels.shape[2:])
        return self.audio_encoder(flat).reshape(b, t, -1)
