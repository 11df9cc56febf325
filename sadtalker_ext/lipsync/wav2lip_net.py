"""Wav2Lip generator (torch), compatible with the released ``wav2lip.pth`` / ``wav2lip_gan.pth``.

Source followed: Prajwal et al., "A Lip Sync Expert Is All You Need for Speech to Lip Generation In
the Wild" (ACM MM 2020), and the layer layout of the official Rudrabha/Wav2Lip ``models/wav2lip.py``
and ``models/conv.py`` (commit 5c90fa9b). This is a re-implementation; parameter names are chosen so
that ``state_dict()`` keys equal the official ones once the ``module.`` prefix is removed.

Data flow (all tensors NCHW, float):

* ``mel``  ``[B, 1, 80, 16]``: one Wav2Lip mel chunk per video frame (80 mel bands x 16 mel
  frames = 0.2 s at 80 mel frames/s), in the official normalised range [-4, 4].
* ``face`` ``[B, 6, 96, 96]``: **BGR** in [0, 1]; channels 0-2 are the target face with its lower
  half (rows 48..95) set to 0, channels 3-5 an unmasked reference face of the same person.
* audio encoder: ``mel -> [B, 512, 1, 1]`` (post-ReLU, >= 0).
* face encoder: 7 stages, spatial 96, 48, 24, 12, 6, 3, 1; their outputs are the skip features.
* decoder: 7 stages starting from the audio embedding, each followed by concatenation with the
  skip feature of the same resolution (deepest first).
* output: conv + 1x1 conv + sigmoid -> ``[B, 3, 96, 96]`` BGR in (0, 1).

Importing this module needs torch; nothing in the weights-free engine imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "FACE_SIZE",
    "MEL_BANDS",
    "MEL_STEPS",
    "ConvBNReLU",
    "ConvTransposeBNReLU",
    "Wav2Lip",
    "Wav2LipOutput",
    "load_wav2lip",
]

FACE_SIZE = 96  #: side of the square face crop the released checkpoints were trained on (pixels)
MEL_BANDS = 80  #: mel bands per chunk
MEL_STEPS = 16  #: mel frames per chunk (0.2 s at hop 200 / 16 kHz)


class ConvBNReLU(nn.Module):
    """Conv2d -> BatchNorm2d (-> + input when ``residual``) -> ReLU.

    Key layout ``conv_block.0`` (conv, with bias) and ``conv_block.1`` (BN), as in the official
    ``models/conv.py`` ``Conv2d``. ``residual`` requires equal in/out shapes.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: Union[int, Tuple[int, int]],
                 padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


class ConvTransposeBNReLU(nn.Module):
    """ConvTranspose2d -> BatchNorm2d -> ReLU (official ``Conv2dTranspose``); weight ``[in, out, k, k]``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int,
                 output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _stage(first: nn.Module, width: int, n_residual: int) -> nn.Sequential:
    """``first`` followed by ``n_residual`` residual 3x3 ConvBNReLU blocks of ``width`` channels."""
    blocks = [first] + [ConvBNReLU(width, width, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


# (cin, cout, stride, residual blocks after the strided 3x3 conv) of face encoder stages 1..5
_FACE_DOWN = ((16, 32, 2, 2), (32, 64, 2, 3), (64, 128, 2, 2), (128, 256, 2, 2), (256, 512, 2, 1))
# audio encoder: (cin, cout, kernel, stride, padding, residual)
_AUDIO = (
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
)
# decoder stages 2..6: (cin, cout) of the stride-2 transposed conv; two residual blocks follow each
_DECODER_UP = ((1024, 512), (768, 384), (512, 256), (320, 128), (160, 64))


@dataclass
class Wav2LipOutput:
    """Result of :meth:`Wav2Lip.forward_with_embedding`.

    ``prediction`` ``[B, 3, 96, 96]`` BGR in (0, 1); ``audio_embedding`` ``[B, 512, 1, 1]`` (>= 0).
    """

    prediction: torch.Tensor
    audio_embedding: torch.Tensor


class Wav2Lip(nn.Module):
    """The Wav2Lip generator for 96x96 faces (36,298,035 parameters).

    ``forward(mel, face)`` takes ``mel`` ``[B,1,80,16]`` and ``face`` ``[B,6,96,96]`` (BGR, [0,1]),
    or the official 5-D sequence form ``mel [B,T,1,80,16]`` with ``face [B,6,T,96,96]``, and returns
    ``[B,3,96,96]`` (resp. ``[B,3,T,96,96]``) BGR in (0,1). The pieces
    (:meth:`encode_audio`, :meth:`encode_face`, :meth:`decode`) are public so that a caller can
    reuse face features across frames (e.g. a still portrait).
    """

    def __init__(self):
        super().__init__()
        face = [nn.Sequential(ConvBNReLU(6, 16, 7, 1, 3))]  # 96x96
        for cin, cout, stride, nres in _FACE_DOWN:  # 48, 24, 12, 6, 3
            face.append(_stage(ConvBNReLU(cin, cout, 3, stride, 1), cout, nres))
        face.append(nn.Sequential(ConvBNReLU(512, 512, 3, 1, 0), ConvBNReLU(512, 512, 1, 1, 0)))  # 1x1
        self.face_encoder_blocks = nn.ModuleList(face)

        self.audio_encoder = nn.Sequential(*[ConvBNReLU(ci, co, k, s, p, residual=r)
                                             for ci, co, k, s, p, r in _AUDIO])

        dec = [
            nn.Sequential(ConvBNReLU(512, 512, 1, 1, 0)),  # 1x1
            _stage(ConvTransposeBNReLU(1024, 512, 3, 1, 0), 512, 1),  # 3x3
        ]
        for cin, cout in _DECODER_UP:  # 6, 12, 24, 48, 96
            dec.append(_stage(ConvTransposeBNReLU(cin, cout, 3, 2, 1, output_padding=1), cout, 2))
        self.face_decoder_blocks = nn.ModuleList(dec)

        self.output_block = nn.Sequential(
            ConvBNReLU(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    # -- pieces -------------------------------------------------------------------------------
    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B,1,80,16]`` mel chunks -> ``[B,512,1,1]`` audio embedding."""
        _check_shape(mel, (1, MEL_BANDS, MEL_STEPS), "mel")
        return self.audio_encoder(mel)

    def encode_face(self, face: torch.Tensor) -> List[torch.Tensor]:
        """``[B,6,96,96]`` faces -> the 7 skip features (96x96x16 ... 1x1x512), shallowest first."""
        _check_shape(face, (6, FACE_SIZE, FACE_SIZE), "face")
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, audio_embedding: torch.Tensor, face_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Audio embedding ``[B,512,1,1]`` + skip features (as from :meth:`encode_face`) -> ``[B,3,96,96]``."""
        if len(face_features) != len(self.face_decoder_blocks):
            raise InputError(f"Wav2Lip decode needs {len(self.face_decoder_blocks)} face features, "
                             f"got {len(face_features)}; pass the list returned by encode_face.")
        x = audio_embedding
        for block, skip in zip(self.face_decoder_blocks, reversed(face_features)):
            x = torch.cat((block(x), skip), dim=1)
        return self.output_block(x)

    # -- full forward -------------------------------------------------------------------------
    def forward_with_embedding(self, mel: torch.Tensor, face: torch.Tensor) -> Wav2LipOutput:
        """4-D forward that also returns the audio embedding (for tests and diagnostics)."""
        if mel.shape[0] != face.shape[0]:
            raise InputError(f"Wav2Lip needs as many mel chunks as faces, got {mel.shape[0]} and "
                             f"{face.shape[0]}; give one mel chunk per video frame.")
        emb = self.encode_audio(mel)
        return Wav2LipOutput(prediction=self.decode(emb, self.encode_face(face)), audio_embedding=emb)

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        if face.dim() == 5:  # official sequence form: mel [B,T,1,80,16], face [B,6,T,96,96]
            if mel.dim() != 5 or mel.shape[:2] != (face.shape[0], face.shape[2]):
                raise InputError(f"Wav2Lip sequence input needs mel [B,T,1,80,16] with face "
                                 f"[B,6,T,96,96], got {tuple(mel.shape)} and {tuple(face.shape)}.")
            b, t = mel.shape[:2]
            # time-major flattening (frame t of every batch item together), as the official code
            mel4 = mel.transpose(0, 1).reshape(t * b, *mel.shape[2:])
            face4 = face.permute(2, 0, 1, 3, 4).reshape(t * b, face.shape[1], *face.shape[3:])
            out = self.forward_with_embedding(mel4, face4).prediction
            return out.reshape(t, b, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return self.forward_with_embedding(mel, face).prediction


def _check_shape(x: torch.Tensor, chw: Tuple[int, int, int], name: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != chw:
        want = "[B," + ",".join(str(v) for v in chw) + "]"
        raise InputError(f"Wav2Lip {name} must have shape {want}, got {list(x.shape)}; "
                         f"crop faces to {FACE_SIZE}x{FACE_SIZE} and use 80x16 mel chunks.")


# -- checkpoint loading -----------------------------------------------------------------------
_PREFIX = "module."
_OFFICIAL_FILES = ("wav2lip.pth", "wav2lip_gan.pth")


def load_wav2lip(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                 dtype: Optional[torch.dtype] = torch.float32) -> Wav2Lip:
    """Build :class:`Wav2Lip`, load ``wav2lip.pth`` / ``wav2lip_gan.pth`` strictly, move to ``device``.

    As the official ``inference.py``: the file is read with ``torch.load(weights_only=True)``
    (:func:`sadtalker_ext.models.loading.load_torch_checkpoint`), ``ckpt["state_dict"]`` is taken,
    the DataParallel ``module.`` prefix removed, and every key and shape must match, BN statistics
    included (:func:`~sadtalker_ext.models.loading.strict_load`). ``dtype`` (float32 by default;
    float16 / bfloat16 for GPU inference) is applied after loading.
    Returns the module in eval mode with ``requires_grad`` off.
    Raises :class:`~sadtalker_ext.errors.CheckpointError`: missing, truncated or unsafe file, no
    ``state_dict``, or a layout mismatch (the one-line message names the file and the missing / unexpected /
    shape-mismatched keys).
    """
    from ..models.loading import load_torch_checkpoint, strict_load

    path = Path(path)
    expected = (f"{path.name} from the Wav2Lip release" if path.name in _OFFICIAL_FILES
                else "wav2lip_gan.pth or wav2lip.pth from the Wav2Lip release")
    sd = load_torch_checkpoint(path, key="state_dict", strip_prefix=_PREFIX, expected=expected)
    model = strict_load(Wav2Lip(), sd, file=path, expected=expected, prefix=_PREFIX)
    model.requires_grad_(False)
    model.eval()
    return model.to(device=device, dtype=dtype)
