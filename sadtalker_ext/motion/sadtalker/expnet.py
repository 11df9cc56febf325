"""SadTalker's ExpNet: audio -> 64 expression coefficients of the 3DMM (torch).

Source followed: OpenTalker/SadTalker ``src/audio2exp_models/networks.py`` (``SimpleWrapperV2``) and
``src/audio2exp_models/audio2exp.py`` (``Audio2Exp.test``), paper "SadTalker: Learning Realistic 3D
Motion Coefficients for Stylized Audio-Driven Single Image Talking Face Animation" (CVPR 2023).

Each video frame is independent: its mel window goes through the audio encoder to a 512-vector,
which is concatenated with the reference expression of that frame (64, the source image's exp
coefficients, or a reference video's for eye blinks) and the blink ratio (1, in [0, 1]) and mapped
by one Linear 577 -> 64 (``mapping1``). No residual is added to the reference.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .audio_encoder import build_audio_encoder

EXP_DIM = 64
AUDIO_EMB_DIM = 512
CHUNK_FRAMES = 10  # Audio2Exp.test feeds the network 10 video frames at a time


class ExpNet(nn.Module):
    """``SimpleWrapperV2``: keys ``audio_encoder.{0..12}.conv_block.*``, ``mapping1.{weight,bias}``."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = build_audio_encoder()
        self.mapping1 = nn.Linear(AUDIO_EMB_DIM + EXP_DIM + 1, EXP_DIM)

    def encode_audio(self, mels: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 80, 16]`` mel windows -> ``[N, 512]`` audio embeddings."""
        return self.audio_encoder(mels).reshape(mels.shape[0], -1)

    def forward(self, mels: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Predict expression coefficients.

        Args:
            mels: ``[B*T, 1, 80, 16]`` float32 mel windows, batch-major (item 0's T frames first).
            ref_exp: ``[B, T, 64]`` reference expression per frame.
            ratio: ``[B, T, 1]`` (or ``[B, T]``) eye-blink ratio per frame, 0 = open.

        Returns:
            ``[B, T, 64]`` float32 expression coefficients.
        """
        n = mels.shape[0]
        emb = self.encode_audio(mels)
        feats = torch.cat([emb, ref_exp.reshape(n, -1), ratio.reshape(n, -1)], dim=1)
        return self.mapping1(feats).reshape(ref_exp.shape[0], ref_exp.shape[1], -1)


def predict_expression(net: ExpNet, indiv_mels: torch.Tensor, ref_exp: torch.Tensor,
                       ratio: Optional[torch.Tensor] = None,
                       chunk: int = CHUNK_FRAMES) -> torch.Tensor:
    """``Audio2Exp.test``: expression coefficients for every video frame.

    Args:
        net: a loaded :class:`ExpNet` (eval mode).
        indiv_mels: ``[B, T, 1, 80, 16]`` (or ``[B, T, 80, 16]``) per-frame mel windows.
        ref_exp: ``[B, T, 64]`` per-frame reference expression, or ``[B, 1, 64]`` / ``[B, 64]``
            repeated over T; extra columns beyond 64 (e.g. a ``[B, T, 70]`` reference coefficient
            array) are ignored, as in the official code.
        ratio: ``[B, T, 1]`` or ``[B, T]`` blink ratio in [0, 1]; ``None`` = zeros (no blinks,
            SadTalker's "still" mode).
        chunk: frames per forward pass (10 in the official code; results do not depend on it
            beyond float rounding).

    Returns:
        ``[B, T, 64]`` float32.
    """
    if indiv_mels.dim() == 4:
        indiv_mels = indiv_mels.unsqueeze(2)
    b, t = indiv_mels.shape[:2]
    if ref_exp.dim() == 2:
        ref_exp = ref_exp.unsqueeze(1)
    ref_exp = ref_exp[..., :EXP_DIM]
    if ref_exp.shape[1] == 1 and t != 1:
        ref_exp = ref_exp.expand(b, t, EXP_DIM)
    if ratio is None:
        ratio = torch.zeros(b, t, 1, dtype=indiv_mels.dtype, device=indiv_mels.device)
    elif ratio.dim() == 2:
        ratio = ratio.unsqueeze(-1)
    if ref_exp.shape[:2] != (b, t) or ratio.shape[:2] != (b, t):
        raise ValueError(f"ref_exp {tuple(ref_exp.shape)} and ratio {tuple(ratio.shape)} must "
                         f"cover the {t} frames of indiv_mels {tuple(indiv_mels.shape)}")
    out = []
    for i in range(0, t, chunk):
        mel = indiv_mels[:, i:i + chunk]
        out.append(net(mel.reshape(-1, *mel.shape[2:]), ref_exp[:, i:i + chunk],
                       ratio[:, i:i + chunk]))
    return torch.cat(out, dim=1)
