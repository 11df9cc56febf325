"""Builders that load SadTalker's audio-side networks from the official files (torch).

* ``SadTalker_V0.0.2_256.safetensors`` (or ``_512``; same layout): sections ``audio2exp.``
  (-> :class:`ExpNet`) and ``audio2pose.`` (-> :class:`PoseVAE`).
* ``mapping_00229-model.pth.tar`` (70 coefficients, crop/resize preprocessing) and
  ``mapping_00109-model.pth.tar`` (73, "full" preprocessing): ``ckpt['mapping']``
  (-> :class:`MappingNet`).

Every builder loads strictly through :mod:`sadtalker_ext.models.loading` (key and shape check
before ``load_state_dict``) and returns the module in ``eval()`` mode with gradients off, on the CPU (move it with
``.to(device)``). Errors: :class:`~sadtalker_ext.errors.CheckpointError` naming the file and what
to download.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from ...models.loading import (SADTALKER_EXPECTED, SafetensorsCheckpoint, load_torch_checkpoint,
                               strict_load)
from .audio2coeff import Audio2Coeff
from .expnet import ExpNet
from .mapping import MappingNet
from .posevae import TRAINING_ONLY_PREFIXES, PoseVAE

CheckpointLike = Union[str, "os.PathLike[str]", SafetensorsCheckpoint]

MAPPING_EXPECTED = ("mapping_00229-model.pth.tar (crop/resize/extcrop preprocessing) or "
                    "mapping_00109-model.pth.tar (full preprocessing) from the SadTalker v0.0.2 "
                    "release")
MAPPING_COEFF_NC = (70, 73)


def _open(ckpt: CheckpointLike) -> SafetensorsCheckpoint:
    return ckpt if isinstance(ckpt, SafetensorsCheckpoint) else SafetensorsCheckpoint(ckpt)


def load_audio2exp(ckpt: CheckpointLike) -> ExpNet:
    """ExpNet from the ``audio2exp.`` section (93 entries). Raises ``CheckpointError``."""
    st = _open(ckpt)
    net = ExpNet()
    strict_load(net, st.section("audio2exp."), file=st.path, prefix="audio2exp.",
                expected=SADTALKER_EXPECTED)
    return net.eval().requires_grad_(False)


def load_audio2pose(ckpt: CheckpointLike) -> PoseVAE:
    """PoseVAE (audio encoder + CVAE decoder) from the ``audio2pose.`` section.

    The section's 419 entries are the audio encoder (91), the CVAE encoder and decoder (308) and
    the motion discriminator (20); the training-only ``netG.encoder.*`` and ``netD_motion.*``
    entries are skipped and every other entry must match exactly. Raises ``CheckpointError``.
    """
    st = _open(ckpt)
    sd = {k: v for k, v in st.section("audio2pose.").items()
          if not k.startswith(TRAINING_ONLY_PREFIXES)}
    net = PoseVAE()
    strict_load(net, sd, file=st.path, prefix="audio2pose.", expected=SADTALKER_EXPECTED)
    return net.eval().requires_grad_(False)


def load_audio2coeff(ckpt: CheckpointLike) -> Audio2Coeff:
    """ExpNet + PoseVAE from one SadTalker safetensors file (read once)."""
    st = _open(ckpt)
    return Audio2Coeff(load_audio2exp(st), load_audio2pose(st))


def load_mapping(path: Union[str, "os.PathLike[str]"],
                 coeff_nc: Optional[int] = None) -> MappingNet:
    """MappingNet from a ``mapping_*.pth.tar`` file (``ckpt['mapping']``, no prefix, 18 entries).

    ``coeff_nc`` (70 or 73) defaults to the input width stored in the file (``first.0.weight``);
    when given it must match. Raises ``CheckpointError``.
    """
    sd = load_torch_checkpoint(path, key="mapping", expected=MAPPING_EXPECTED)
    if coeff_nc is None:
        first = sd.get("first.0.weight")
        stored = int(first.shape[1]) if first is not None and first.dim() == 3 else None
        coeff_nc = stored if stored in MAPPING_COEFF_NC else 70
    net = MappingNet(coeff_nc=coeff_nc)
    strict_load(net, sd, file=path, expected=MAPPING_EXPECTED)
    return net.eval().requires_grad_(False)
