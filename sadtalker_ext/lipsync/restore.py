"""Face restoration of the lip-synced region (GFPGAN / CodeFormer / RestoreFormer), optional.

Interface: a :data:`Restorer` is any callable ``uint8 RGB [h, w, 3] -> uint8 RGB [h, w, 3]`` (same
shape). In the WebUI the host's own face restorers are wrapped into one by the host adapter; the
standalone restorers here load the user's model files through **spandrel** (an optional package:
``pip install spandrel``; CodeFormer also needs ``pip install spandrel_extra_arches``).

A :class:`FaceRestorer` follows the facexlib / WebUI recipe (the numbers, not the code, are taken from
facexlib's ``FaceRestoreHelper``): five points (eye centres, nose tip, mouth corners) from the
MediaPipe landmarks are mapped by a similarity transform onto the FFHQ 512x512 template, the
aligned face is restored (input RGB scaled to [-1, 1], output read back from [-1, 1]), warped back
with the inverse transform and blended through the warped square, eroded and feathered by about
1/20 of the face size. Pixels outside that blend mask are returned bit-exactly. An image without a
detectable face is returned unchanged.

Network calls (as the WebUI does them): GFPGAN ``net(x, return_rgb=False)[0]``, CodeFormer
``net(x, weight=fidelity)[0]`` (``fidelity`` 0 = strongest restoration .. 1 = closest to the input),
RestoreFormer ``net(x)[0]``.

Files are read with ``torch.load(weights_only=True)`` (or safetensors) by this project's loader;
spandrel only detects the architecture and builds the module. Torch is imported only when a model
is loaded.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import cv2
import numpy as np

from ..errors import CheckpointError, DependencyError, InputError, OptionError
from .compositing import composite

log = logging.getLogger(__name__)

__all__ = ["FFHQ_TEMPLATE_512", "RESTORERS", "RESTORER_FILES", "FaceRestorer", "Restorer",
           "find_restorer_file", "five_points", "load_restorer"]

Restorer = Callable[[np.ndarray], np.ndarray]
"""uint8 RGB ``[h, w, 3]`` -> uint8 RGB ``[h, w, 3]``."""

from ..options import RESTORERS  # noqa: E402  (``--restore`` choices: none, gfpgan, codeformer, restoreformer)

#: File names looked up for each restorer (first found wins), in the model lookup order.
RESTORER_FILES: Dict[str, Tuple[str, ...]] = {
    "gfpgan": ("GFPGANv1.4.pth", "GFPGANv1.3.pth", "GFPGANv1.4.safetensors"),
    "codeformer": ("codeformer.pth", "codeformer-v0.1.0.pth", "codeformer.safetensors"),
    "restoreformer": ("RestoreFormer.pth", "RestoreFormer.ckpt", "RestoreFormer.safetensors"),
}

#: spandrel architecture id of each restorer.
_ARCH_IDS = {"gfpgan": "GFPGAN", "codeformer": "CodeFormer", "restoreformer": "RestoreFormer"}

#: FFHQ alignment template at 512x512 (facexlib): image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner; pixels.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)

_IRIS_A = slice(468, 473)  # MediaPipe refined iris points (centre first), one eye
_IRIS_B = slice(473, 478)  # the other eye
_EYE_A = (33, 133)  # eye corners, used when the iris points are absent (468-point meshes)
_EYE_B = (362, 263)
_NOSE_TIP = 1
_MOUTH_CORNERS = (61, 291)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points from MediaPipe landmarks ``[468|478, 2|3]`` (pixels).

    Returns float32 ``[5, 2]`` in the template's order (eyes and mouth corners sorted by x).
    Raises InputError for other shapes.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise InputError(f"landmarks must be MediaPipe face-mesh points [478, 2|3], got {list(lm.shape)}.")
    xy = lm[:, :2]
    if xy.shape[0] >= 478:
        eyes = [xy[_IRIS_A].mean(0), xy[_IRIS_B].mean(0)]
    else:
        eyes = [xy[list(_EYE_A)].mean(0), xy[list(_EYE_B)].mean(0)]
    eyes.sort(key=lambda p: p[0])
    mouth = sorted((xy[_MOUTH_CORNERS[0]], xy[_MOUTH_CORNERS[1]]), key=lambda p: p[0])
    return np.array([eyes[0], eyes[1], xy[_NOSE_TIP], mouth[0], mouth[1]], dtype=np.float32)


class FaceRestorer:
    """A :data:`Restorer` that aligns, restores and pastes back one face (see the module docstring).

    Args:
        restore_aligned: uint8 RGB ``[512, 512, 3]`` aligned face -> restored uint8 RGB of the same shape.
        size: the aligned face side (512 for GFPGAN / CodeFormer / RestoreFormer).
        detect: landmark finder ``image -> [478, 2] | None`` used when ``__call__`` gets no
            landmarks (default: the largest MediaPipe face).
        name: for messages.
    """

    accepts_landmarks = True

    def __init__(self, restore_aligned: Callable[[np.ndarray], np.ndarray], *, size: int = 512,
                 detect: Optional[Callable[[np.ndarray], Optional[np.ndarray]]] = None, name: str = "restorer"):
        self.restore_aligned = restore_aligned
        self.size = int(size)
        self.template = FFHQ_TEMPLATE_512 * (self.size / 512.0)
        self._detect = detect
        self.name = name

    def _landmarks(self, image: np.ndarray) -> Optional[np.ndarray]:
        if self._detect is not None:
            return self._detect(image)
        from ..face.landmarks import detect_faces
        faces = detect_faces(image)
        return faces[0].points[:, :2] if faces else None

    def __call__(self, image: np.ndarray, landmarks: Optional[np.ndarray] = None) -> np.ndarray:
        """Restore the face of ``image`` (uint8 RGB ``[h, w, 3]``); ``landmarks`` ``[478, 2]`` pixels
        of that image (detected when None). Returns a new uint8 RGB array of the same shape."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"the face restorer needs a uint8 RGB image, got {img.dtype} {list(img.shape)}.")
        lm = self._landmarks(img) if landmarks is None else landmarks
        if lm is None or not np.all(np.isfinite(np.asarray(lm, dtype=np.float64)[:, :2])):
            return img.copy()
        src = five_points(lm)
        matrix, _ = cv2.estimateAffinePartial2D(src, self.template, method=cv2.LMEDS)
        if matrix is None:
            return img.copy()
        s = self.size
        aligned = cv2.warpAffine(img, matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(132, 133, 135))
        restored = np.asarray(self.restore_aligned(aligned))
        if restored.shape != aligned.shape or restored.dtype != np.uint8:
            raise InputError(f"{self.name} returned {restored.dtype} {list(restored.shape)}, expected uint8 "
                             f"{list(aligned.shape)}.")
        h, w = img.shape[:2]
        inverse = cv2.invertAffineTransform(matrix)
        back = cv2.warpAffine(restored, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        square = cv2.warpAffine(np.ones((s, s), np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = self._blend_mask(square)
        return composite(img, back, mask)

    @staticmethod
    def _blend_mask(square: np.ndarray) -> np.ndarray:
        """Warped square -> eroded and feathered blend mask (edge ~ sqrt(area) / 20 pixels)."""
        hard = (square >= 0.999).astype(np.uint8)
        area = float(hard.sum())
        if area == 0:
            return np.zeros_like(square)
        edge = max(1, int(math.sqrt(area)) // 20)
        hard = cv2.erode(hard, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                         borderValue=0)
        k = 2 * edge + 1
        soft = cv2.GaussianBlur(hard.astype(np.float32), (k, k), sigmaX=edge / 2.0, sigmaY=edge / 2.0,
                                borderType=cv2.BORDER_CONSTANT)
        return np.clip(soft, 0.0, 1.0)


# -- loading ----------------------------------------------------------------------------------------
def find_restorer_file(name: str, checkpoints=None, host_dir=None) -> Optional[Path]:
    """The model file of restorer ``name`` (see :data:`RESTORER_FILES`) in the lookup order, or None."""
    from ..models.locate import find_file
    for fname in RESTORER_FILES.get(name, ()):
        found = find_file(fname, checkpoints=checkpoints, host_dir=host_dir)
        if found is not None:
            return found
    return None


def _check_name(name: str) -> str:
    if name not in _ARCH_IDS:
        raise OptionError(f"--restore {name!r} is not valid; use one of {', '.join(RESTORERS)}")
    return name


def _import_spandrel(name: str):
    try:
        import spandrel
    except ImportError as exc:
        raise DependencyError(f"--restore {name} needs the spandrel package; install it (pip install spandrel) "
                              f"or use --restore none") from exc
    if name == "codeformer":
        try:
            import spandrel_extra_arches
        except ImportError as exc:
            raise DependencyError("--restore codeformer needs spandrel_extra_arches (CodeFormer is non-commercial); "
                                  "install it (pip install spandrel_extra_arches) or use --restore gfpgan") from exc
        spandrel_extra_arches.install()
    return spandrel


def _read_state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
            return dict(load_file(str(path)))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Checkpoint {path} could not be read ({exc}); delete it and download it again.") from None
    from ..models.loading import load_torch_checkpoint
    return load_torch_checkpoint(path)


def load_restorer(name: str, *, fidelity: float = 0.5, path: Union[str, Path, None] = None,
                  checkpoints=None, host_dir=None, device: str = "cpu") -> FaceRestorer:
    """A standalone :class:`FaceRestorer` for ``name`` in ``gfpgan | codeformer | restoreformer``.

    ``path``: the model file (default: :func:`find_restorer_file`). ``fidelity`` in [0, 1] is used by
    CodeFormer only. Raises OptionError (unknown name / bad fidelity), CheckpointError (file missing,
    unreadable, or of another architecture), DependencyError (torch or spandrel missing).
    """
    _check_name(name)
    fidelity = float(fidelity)
    if not 0.0 <= fidelity <= 1.0:
        raise OptionError(f"--restore-fidelity must be in 0..1, got {fidelity!r}")
    if path is None:
        path = find_restorer_file(name, checkpoints, host_dir)
        if path is None:
            names = " or ".join(RESTORER_FILES[name])
            from ..models.locate import download_hint
            raise CheckpointError(f"--restore {name} needs {names} in the checkpoints folder; "
                                  f"{download_hint('restoration')}, or use --restore none")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"restoration model {path} not found; check the path or use --restore none")
    try:
        import torch
    except ImportError as exc:
        raise DependencyError(f"--restore {name} needs PyTorch; install it (pip install torch) or use --restore none") from exc
    spandrel = _import_spandrel(name)
    sd = spandrel.canonicalize_state_dict(_read_state_dict(path))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as exc:  # noqa: BLE001 - spandrel raises its own and torch errors for foreign files
        raise CheckpointError(f"{path.name} is not a model spandrel can load ({type(exc).__name__}); "
                              f"use the official {RESTORER_FILES[name][0]}") from None
    arch = getattr(descriptor.architecture, "id", type(descriptor.model).__name__)
    if arch != _ARCH_IDS[name]:
        raise CheckpointError(f"{path.name} is a {arch} model, not {_ARCH_IDS[name]}; use --restore "
                              f"{arch.lower()} or give {RESTORER_FILES[name][0]}")
    net = descriptor.model.eval().requires_grad_(False).to(device)
    return FaceRestorer(_torch_runner(net, name, fidelity, torch), name=name)


def _torch_runner(net, kind: str, fidelity: float, torch) -> Callable[[np.ndarray], np.ndarray]:
    param = next(net.parameters())

    def run(face: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None]
        x = x.to(device=param.device, dtype=param.dtype).div(127.5).sub(1.0)
        with torch.inference_mode():
            if kind == "gfpgan":
                y = net(x, return_rgb=False)[0]
            elif kind == "codeformer":
                y = net(x, weight=fidelity)[0]
            else:
                y = net(x)[0]
        y = y.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
        return y[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()

    return run
