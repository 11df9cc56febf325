"""SadTalker's PoseVAE (audio -> head-pose motion), inference path (torch).

Source followed: OpenTalker/SadTalker ``src/audio2pose_models/audio2pose.py`` (``Audio2Pose.test``),
``cvae.py`` (``CVAE.test`` -> ``DECODER``), ``res_unet.py`` / ``networks.py`` (``ResUnet``,
``ResidualConv``, ``Upsample``) and ``src/config/auido2pose.yaml`` (SEQ_LEN 32, LATENT_SIZE 64,
AUDIO_EMB_IN_SIZE 512, AUDIO_EMB_OUT_SIZE 6, DECODER_LAYER_SIZES [128, 192], NUM_CLASSES 46).

Pose is 6 numbers per frame: rotation angles (3, radians: pitch, yaw, roll as in Deep3DFaceRecon's
``angle``) and translation (3), i.e. columns 64:70 of SadTalker's 70-column ``coeff_3dmm``. The
network predicts *motion* relative to the first frame, 32 frames at a time: for each window the
decoder takes the reference pose (6), a latent ``z`` (64) drawn from N(0, I) plus a learned bias of
the chosen pose style (``class_id`` in 0..45), and the 32 audio embeddings projected to 6 each.

Only the decoder runs at inference. The checkpoint's training-only entries (``netG.encoder.*``,
``netD_motion.*``) are listed in :data:`TRAINING_ONLY_PREFIXES` and not loaded.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from .audio_encoder import SequenceAudioEncoder

SEQ_LEN = 32
LATENT_SIZE = 64
NUM_POSE_STYLES = 46
POSE_DIM = 6
AUDIO_EMB_IN = 512
AUDIO_EMB_OUT = 6
DECODER_LAYER_SIZES = (128, 192)
#: Entries of the ``audio2pose.`` checkpoint section that inference never uses.
TRAINING_ONLY_PREFIXES = ("netG.encoder.", "netD_motion.")

#: ``noise_fn(batch, latent) -> Tensor [batch, latent]``, called once per 32-frame window, in order.
NoiseFn = Callable[[int, int], torch.Tensor]


class ResidualConv(nn.Module):
    """Pre-activation residual block: BN-ReLU-Conv3x3(stride)-BN-ReLU-Conv3x3 + Conv3x3(stride)-BN."""

    def __init__(self, cin: int, cout: int, stride: Union[int, Tuple[int, int]], padding: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=padding),
            nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, kernel_size=3, padding=1))
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class TransposedUp(nn.Module):
    """``Upsample`` of the official code: one ConvTranspose2d (key ``upsample``)."""

    def __init__(self, cin: int, cout: int, kernel: Tuple[int, int], stride: Tuple[int, int]):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUNet(nn.Module):
    """Residual U-Net over a ``[B, 1, 32, 6]`` (time x pose) map -> ``[B, 1, 32, 6]`` in (0, 1).

    Time is halved three times (32 -> 4) by stride-(2,1) residual blocks and restored by (2,1)
    transposed convolutions with skip concatenation; channels 32/64/128/256.
    """

    def __init__(self, channel: int = 1, filters: Tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(channel, f0, kernel_size=3, padding=1), nn.BatchNorm2d(f0), nn.ReLU(),
            nn.Conv2d(f0, f0, kernel_size=3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(channel, f0, kernel_size=3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1), padding=1)
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1), padding=1)
        self.bridge = ResidualConv(f2, f3, stride=(2, 1), padding=1)
        self.upsample_1 = TransposedUp(f3, f3, kernel=(2, 1), stride=(2, 1))
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, stride=1, padding=1)
        self.upsample_2 = TransposedUp(f2, f2, kernel=(2, 1), stride=(2, 1))
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, stride=1, padding=1)
        self.upsample_3 = TransposedUp(f1, f1, kernel=(2, 1), stride=(2, 1))
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, stride=1, padding=1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        y = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        y = self.up_residual_conv2(torch.cat([self.upsample_2(y), x2], dim=1))
        y = self.up_residual_conv3(torch.cat([self.upsample_3(y), x1], dim=1))
        return self.output_layer(y)


class PoseDecoder(nn.Module):
    """CVAE decoder: (ref pose, z + style bias, audio) -> pose motion ``[B, 32, 6]``.

    Keys: ``classbias`` [46, 64], ``linear_audio`` (512 -> 6), ``MLP.L0`` (262 -> 128), ``MLP.L1``
    (128 -> 192), ``resunet.*``, ``pose_linear`` (6 -> 6).
    """

    def __init__(self, seq_len: int = SEQ_LEN, latent_size: int = LATENT_SIZE,
                 num_classes: int = NUM_POSE_STYLES,
                 layer_sizes: Tuple[int, ...] = DECODER_LAYER_SIZES):
        super().__init__()
        self.seq_len = seq_len
        self.latent_size = latent_size
        self.num_classes = num_classes
        self.resunet = ResUNet()
        self.MLP = nn.Sequential()
        sizes = [latent_size + seq_len * AUDIO_EMB_OUT + POSE_DIM] + list(layer_sizes)
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            if i + 2 < len(sizes):
                self.MLP.add_module(f"A{i}", nn.ReLU())
            else:
                self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(POSE_DIM, POSE_DIM)
        self.linear_audio = nn.Linear(AUDIO_EMB_IN, AUDIO_EMB_OUT)
        self.classbias = nn.Parameter(torch.zeros(num_classes, latent_size))

    def forward(self, ref_pose: torch.Tensor, z: torch.Tensor, class_id: torch.Tensor,
                audio_emb: torch.Tensor) -> torch.Tensor:
        """``ref_pose`` [B,6], ``z`` [B,64], ``class_id`` [B] int64, ``audio_emb`` [B,32,512]
        -> pose motion [B,32,6] (relative to the reference pose)."""
        b = z.shape[0]
        audio = self.linear_audio(audio_emb).reshape(b, -1)
        latent = z + self.classbias[class_id]
        h = self.MLP(torch.cat([ref_pose, latent, audio], dim=-1)).reshape(b, self.seq_len, -1)
        return self.pose_linear(self.resunet(h.unsqueeze(1)).squeeze(1))


class _CVAE(nn.Module):
    """Holds the decoder under the key ``decoder`` (the official ``CVAE`` minus its encoder)."""

    def __init__(self):
        super().__init__()
        self.decoder = PoseDecoder()


class PoseVAE(nn.Module):
    """Inference part of the official ``Audio2Pose``: ``audio_encoder`` + ``netG.decoder``.

    State-dict keys are those of the checkpoint section ``audio2pose.`` minus
    :data:`TRAINING_ONLY_PREFIXES`.
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = SequenceAudioEncoder()
        self.netG = _CVAE()

    @property
    def decoder(self) -> PoseDecoder:
        return self.netG.decoder


def recorded_noise(z: Union[torch.Tensor, Iterable[torch.Tensor]]) -> NoiseFn:
    """A ``noise_fn`` that returns the given latents in order (``z`` ``[n, B, 64]`` or a list).

    Raises ``ValueError`` when more windows are drawn than latents were given.
    """
    items = list(z)
    it = iter(items)

    def _next(batch: int, latent: int) -> torch.Tensor:
        try:
            value = next(it)
        except StopIteration:
            raise ValueError(f"recorded_noise: only {len(items)} latents were given") from None
        return torch.as_tensor(value, dtype=torch.float32).reshape(batch, latent)

    return _next


def _gaussian_noise(generator: Optional[torch.Generator], device: torch.device) -> NoiseFn:
    def _draw(batch: int, latent: int) -> torch.Tensor:
        if generator is None:
            return torch.randn(batch, latent).to(device)
        return torch.randn(batch, latent, generator=generator,
                           device=generator.device).to(device)
    return _draw


def predict_pose(net: PoseVAE, indiv_mels: torch.Tensor, ref_pose: torch.Tensor,
                 class_id: Union[int, torch.Tensor] = 0, *, noise_fn: Optional[NoiseFn] = None,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                 num_frames: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``Audio2Pose.test``: head-pose motion for every video frame.

    Frame 0 is the reference (motion 0). Frames ``1..T-1`` are predicted in windows of 32 using
    the mel windows of those frames: ``(T-1)//32`` full windows, then, if frames remain, one more
    window over the *last* 32 frames of which only the last ``(T-1) % 32`` outputs are kept. Each
    window draws one latent ``z`` [B, 64] (in that order). Extension: when ``T - 1 < 32`` (audio
    shorter than 1.32 s at 25 fps, where the official code fails) the window is padded by repeating
    the last mel window and the extra outputs are dropped.

    Args:
        net: a loaded :class:`PoseVAE` (eval mode).
        indiv_mels: ``[B, T, 1, 80, 16]`` (or ``[B, T, 80, 16]``) per-frame mel windows.
        ref_pose: ``[B, 6]`` reference pose (the source image's angles + translation,
            ``coeff_3dmm[64:70]``).
        class_id: pose style in ``0..45`` (int, or int64 tensor ``[B]``).
        noise_fn: latent source (see :data:`NoiseFn`, :func:`recorded_noise`); default N(0, I)
            from ``generator``, else from a generator seeded with ``seed``, else from torch's
            global RNG.
        num_frames: T (default ``indiv_mels.shape[1]``).

    Returns:
        ``(pose_motion [B, T, 6], pose [B, T, 6] = ref_pose + motion)``, float32.

    Raises:
        ValueError: ``class_id`` outside 0..45 or inconsistent shapes.
    """
    if indiv_mels.dim() == 4:
        indiv_mels = indiv_mels.unsqueeze(2)
    b = indiv_mels.shape[0]
    t = int(num_frames) if num_frames is not None else indiv_mels.shape[1]
    if t < 1 or t > indiv_mels.shape[1]:
        raise ValueError(f"num_frames {t} must be in 1..{indiv_mels.shape[1]}")
    ref_pose = ref_pose.reshape(b, POSE_DIM).to(indiv_mels.dtype)
    dec = net.decoder
    cls = torch.as_tensor(class_id, dtype=torch.long, device=indiv_mels.device).reshape(-1)
    if cls.numel() == 1 and b > 1:
        cls = cls.expand(b)
    if cls.numel() != b or int(cls.min()) < 0 or int(cls.max()) >= dec.num_classes:
        raise ValueError(f"pose style must be an integer in 0..{dec.num_classes - 1}, "
                         f"got {class_id!r}")
    if noise_fn is None:
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        noise_fn = _gaussian_noise(generator, indiv_mels.device)

    seq = dec.seq_len
    mels = indiv_mels[:, 1:t]
    n = t - 1
    pieces = [torch.zeros(b, 1, POSE_DIM, dtype=indiv_mels.dtype, device=indiv_mels.device)]

    def run(window: torch.Tensor) -> torch.Tensor:
        z = noise_fn(b, dec.latent_size).to(device=indiv_mels.device, dtype=indiv_mels.dtype)
        return dec(ref_pose, z, cls, net.audio_encoder(window))

    for i in range(n // seq):
        pieces.append(run(mels[:, i * seq:(i + 1) * seq]))
    rest = n % seq
    if rest:
        window = mels[:, -seq:]
        if window.shape[1] < seq:  # short audio: pad with the last window, keep the first outputs
            pad = window[:, -1:].expand(b, seq - window.shape[1], *window.shape[2:])
            pieces.append(run(torch.cat([window, pad], dim=1))[:, :rest])
        else:
            pieces.append(run(window)[:, -rest:])
    motion = torch.cat(pieces, dim=1)
    return motion, ref_pose.unsqueeze(1) + motion
