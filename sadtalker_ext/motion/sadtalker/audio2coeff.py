"""SadTalker's audio -> 3DMM coefficient stage: ExpNet + PoseVAE + pose smoothing (torch + numpy).

Source followed: OpenTalker/SadTalker ``src/test_audio2coeff.py`` (``Audio2Coeff.generate`` and
``using_refpose``) and ``src/generate_batch.py`` (``get_data``).

Output per video frame: 70 coefficients = expression (64) followed by the pose (6: angles in
radians, then translation), the pose smoothed over time with a Savitzky-Golay filter (window 13,
order 2; shorter sequences use the largest odd window <= T).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from scipy.signal import savgol_filter

from .expnet import EXP_DIM, ExpNet, predict_expression
from .posevae import NUM_POSE_STYLES, POSE_DIM, NoiseFn, PoseVAE, predict_pose

COEFF_DIM = EXP_DIM + POSE_DIM  # 70
SMOOTH_WINDOW = 13
SMOOTH_ORDER = 2

ArrayLike = Union[np.ndarray, torch.Tensor]


def smooth_pose(pose: np.ndarray, axis: int = -2) -> np.ndarray:
    """Savitzky-Golay smoothing of a pose track along time (``axis``, default the second last).

    Window 13, order 2 (``scipy.signal.savgol_filter`` defaults otherwise, i.e. ``mode='interp'``);
    for T < 13 the window is the largest odd number <= T, and tracks shorter than 3 frames are
    returned unchanged. The dtype is kept (float32 in, float32 out).
    """
    pose = np.asarray(pose)
    t = pose.shape[axis]
    window = SMOOTH_WINDOW if t >= SMOOTH_WINDOW else int((t - 1) / 2) * 2 + 1
    if window <= SMOOTH_ORDER:
        return pose.copy()
    return savgol_filter(pose, window, SMOOTH_ORDER, axis=axis)


def apply_reference_pose(coeffs: np.ndarray, ref_pose_coeffs: np.ndarray) -> np.ndarray:
    """Add a reference video's head motion (``using_refpose``).

    Args:
        coeffs: ``[T, 70]`` generated coefficients.
        ref_pose_coeffs: ``[N, 70+]`` coefficients of a reference video (columns 64:70 used) or
            ``[N, 6]`` poses; tiled when shorter than T.
    Returns:
        a copy of ``coeffs`` with ``ref[:T] - ref[0]`` added to columns 64:70.
    """
    coeffs = np.array(coeffs, copy=True)
    ref = np.asarray(ref_pose_coeffs)
    ref = ref[:, EXP_DIM:COEFF_DIM] if ref.shape[1] >= COEFF_DIM else ref[:, :POSE_DIM]
    t = coeffs.shape[0]
    if ref.shape[0] < t:
        ref = np.concatenate([ref] * (t // ref.shape[0]) + [ref[:t % ref.shape[0]]], axis=0)
    coeffs[:, EXP_DIM:COEFF_DIM] = coeffs[:, EXP_DIM:COEFF_DIM] + (ref[:t] - ref[0:1])
    return coeffs


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x.detach().float() if isinstance(x, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(x, dtype=np.float32))


class Audio2Coeff:
    """ExpNet + PoseVAE glue (``Audio2Coeff.generate``). Build with
    :func:`~sadtalker_ext.motion.sadtalker.loaders.load_audio2coeff`."""

    def __init__(self, exp_net: ExpNet, pose_net: PoseVAE):
        self.exp_net = exp_net.eval()
        self.pose_net = pose_net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.exp_net.parameters()).device

    def generate(self, indiv_mels: ArrayLike, ref_coeff: ArrayLike,
                 ratio: Optional[ArrayLike] = None, pose_style: int = 0, *,
                 noise_fn: Optional[NoiseFn] = None, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None,
                 ref_pose_coeffs: Optional[np.ndarray] = None) -> np.ndarray:
        """Coefficients for every video frame.

        Args:
            indiv_mels: ``[T, 80, 16]``, ``[T, 1, 80, 16]`` or ``[1, T, 1, 80, 16]`` mel windows.
            ref_coeff: the source image's coefficients ``[70+]`` (exp 0:64, pose 64:70), or
                ``[T, 70+]`` per frame (a reference video's expressions for eye blinks; the pose
                reference is always row 0).
            ratio: ``[T]`` / ``[T, 1]`` blink ratio in [0, 1]; ``None`` = zeros (no blinks).
            pose_style: 0..45.
            noise_fn / generator / seed: latent noise of the PoseVAE (see
                :func:`~sadtalker_ext.motion.sadtalker.posevae.predict_pose`).
            ref_pose_coeffs: optional reference-video coefficients whose head motion is added
                (:func:`apply_reference_pose`).

        Returns:
            ``[T, 70]`` float32 numpy: exp (64) + smoothed pose (6).

        Raises:
            ValueError: bad ``pose_style`` or inconsistent shapes.
        """
        if not (isinstance(pose_style, (int, np.integer)) and 0 <= int(pose_style) < NUM_POSE_STYLES):
            raise ValueError(f"pose style must be an integer in 0..{NUM_POSE_STYLES - 1}, "
                             f"got {pose_style!r}")
        dev = self.device
        mels = _as_tensor(indiv_mels)
        if mels.dim() == 3:
            mels = mels.unsqueeze(1)
        if mels.dim() == 4:
            mels = mels.unsqueeze(0)
        mels = mels.to(dev)
        t = mels.shape[1]
        ref = _as_tensor(ref_coeff).to(dev)
        if ref.dim() == 1:
            ref = ref.unsqueeze(0)
        if ref.dim() == 2:
            ref = ref.unsqueeze(0)  # [1, 1 or T, C]
        if ref.shape[-1] < COEFF_DIM:
            raise ValueError(f"ref_coeff needs at least {COEFF_DIM} columns, got "
                             f"{tuple(ref.shape)}")
        r = None if ratio is None else _as_tensor(ratio).to(dev).reshape(1, t, 1)
        with torch.no_grad():
            exp = predict_expression(self.exp_net, mels, ref[..., :EXP_DIM], r)
            _, pose = predict_pose(self.pose_net, mels, ref[:, 0, EXP_DIM:COEFF_DIM],
                                   int(pose_style), noise_fn=noise_fn, generator=generator,
                                   seed=seed)
        pose_np = smooth_pose(pose.cpu().numpy(), axis=1)
        coeffs = torch.cat([exp.cpu(), torch.from_numpy(np.ascontiguousarray(pose_np,
                                                                            dtype=np.float32))],
                           dim=-1)[0].numpy()
        if ref_pose_coeffs is not None:
            coeffs = apply_reference_pose(coeffs, ref_pose_coeffs)
        return coeffs.astype(np.float32, copy=False)
