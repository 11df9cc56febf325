"""SadTalker's audio -> 3DMM-coefficient networks, re-implemented in torch.

Modules (all need torch; nothing here is imported by the lite engine):

* :mod:`.audio_encoder` - the shared 13-block mel encoder ``[N,1,80,16] -> [N,512]``.
* :mod:`.expnet` - :class:`ExpNet` (``SimpleWrapperV2``) and :func:`predict_expression`
  (``Audio2Exp.test``, 10-frame chunks) -> ``[B,T,64]`` expression coefficients.
* :mod:`.posevae` - :class:`PoseVAE` (audio encoder + CVAE decoder with 46 pose styles, 64-d
  latent, 32-frame windows) and :func:`predict_pose` (``Audio2Pose.test``) with injectable noise
  (``noise_fn`` / ``generator`` / ``seed``; :func:`recorded_noise`).
* :mod:`.audio2coeff` - :class:`Audio2Coeff` glue -> ``[T,70]`` (exp + Savitzky-Golay smoothed
  pose), :func:`smooth_pose`, :func:`apply_reference_pose`.
* :mod:`.mapping` - :class:`MappingNet` (70 / 73 coefficients) and the 27-frame windows.
* :mod:`.blink` - random eye-blink schedule (numpy).
* :mod:`.loaders` - :func:`load_audio2exp`, :func:`load_audio2pose`, :func:`load_audio2coeff`,
  :func:`load_mapping` from the official files.
"""
from .audio2coeff import Audio2Coeff, apply_reference_pose, smooth_pose
from .blink import random_blink_ratio
from .expnet import ExpNet, predict_expression
from .loaders import load_audio2coeff, load_audio2exp, load_audio2pose, load_mapping
from .mapping import MappingNet, semantic_windows, source_window
from .posevae import PoseVAE, predict_pose, recorded_noise

__all__ = ["Audio2Coeff", "ExpNet", "MappingNet", "PoseVAE", "apply_reference_pose",
           "load_audio2coeff", "load_audio2exp", "load_audio2pose", "load_mapping",
           "predict_expression", "predict_pose", "random_blink_ratio", "recorded_noise",
           "semantic_windows", "smooth_pose", "source_window"]
