"""img2img backends of the refinement stage, behind one interface.

A backend is a callable ``backend(request: Img2ImgRequest) -> uint8 [n, H, W, 3]`` with a
``name`` and a ``native_size()`` (the model's native resolution in pixels, e.g. 512 for SD 1.x).
Every backend is also a valid ``img2img_backend`` of the standalone host (``host.base.LocalHost``).

What the refinement stage sends (the contract a host adapter implements; :class:`~.params.Img2ImgRequest`):

* ``images``: uint8 RGB ``[n, H, W, 3]`` - face crops already cut around the mask with
  ``params.padding`` px of context and resized to the native size (``H = W = native_size()`` for
  the face/mouth masks; the frame's aspect with the long side native for the "full" mask), so the
  host should run plain masked img2img on them **without** its own "only masked" cropping
  (``inpaint_full_res`` is False);
* ``mask``: uint8 ``[n, H, W]``, 255 = repaint, one mask per image; None for the "full" mask.
  A backend whose ``per_image_masks`` is False (:class:`HostBackend`: A1111 takes one mask per
  ``process_images`` call) gets the union of the batch's masks repeated, so the host can batch
  the images; the stage pastes back with each frame's own feathered mask anyway;
* ``seeds``: one seed per image (all equal by default: the same seed and initial noise for every
  frame; ``params.seed`` is the first); ``width``, ``height``: the image size; ``frame_indices``:
  video frame of each image; ``inpainting_fill``: 1 (A1111's "original");
* ``params``: the :class:`~.params.RefineParams` scheduled for the batch's first frame (prompts,
  strength, CFG, steps, sampler, mask blur, padding).

Backends here: :class:`HostBackend` (the host's own loaded model through ``Host.img2img``; the
WebUI adapter maps it to ``StableDiffusionProcessingImg2Img`` + ``process_images``, which respect
the host's interrupt and progress) and :class:`DiffusersBackend` (standalone: a user-given
single-file checkpoint through diffusers' ``from_single_file``, or a diffusers model folder, on CPU
or CUDA). :func:`make_backend` picks one; without a model it raises DependencyError with a
one-line message (never a crash). torch / diffusers are imported only by DiffusersBackend.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import numpy as np

from ..errors import CheckpointError, DependencyError, InputError, OptionError, TalkingHeadError
from ..frontend import SETTING_REFINE_NATIVE_SIZE
from ..models.cache import MODELS, resolve_device, resolve_dtype
from .params import Img2ImgRequest

log = logging.getLogger(__name__)

__all__ = ["RefineBackend", "HostBackend", "DiffusersBackend", "CallableBackend", "SAMPLERS",
           "make_backend", "refine_status", "host_can_img2img", "check_output"]

NO_MODEL_MESSAGE = ("img2img refinement needs a Stable Diffusion model: pass --sd-checkpoint PATH "
                    "(a .safetensors/.ckpt file or a diffusers model folder), or run inside the WebUI "
                    "with a model loaded; or leave out --refine")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class RefineBackend(Protocol):
    """What the refinement stage calls."""

    name: str

    def native_size(self) -> int:
        """The SD model's native resolution in pixels (the size of the face crops sent)."""

    def __call__(self, request: Img2ImgRequest) -> np.ndarray:
        """img2img on ``request.images``; returns uint8 RGB of the same shape."""


def check_output(images: Any, request: Img2ImgRequest, who: str) -> np.ndarray:
    """Validate a backend's result against its request; returns uint8 ``[n, H, W, 3]``."""
    out = np.asarray(images)
    if out.shape != request.images.shape:
        raise InputError(f"{who} img2img returned images of shape {list(out.shape)}, expected "
                         f"{list(request.images.shape)}; check the host's img2img settings")
    if out.dtype != np.uint8:
        out = np.clip(np.round(out.astype(np.float32)), 0, 255).astype(np.uint8)
    return out


def host_can_img2img(host: Any) -> bool:
    """Whether ``host`` can run img2img: its ``can_img2img`` (attribute or method) when it has one
    (the standalone ``LocalHost``: whether it was given an img2img backend); otherwise whether it
    has an ``img2img`` (a WebUI host has a model loaded)."""
    if host is None:
        return False
    probe = getattr(host, "can_img2img", None)
    if probe is not None:
        return bool(probe() if callable(probe) else probe)
    return callable(getattr(host, "img2img", None))


class HostBackend:
    """img2img through ``host.img2img`` (the WebUI's loaded model, or a LocalHost's backend).

    native: the native resolution; default: ``host.sd_native_size()`` / attribute when the host
    has it, else the host setting "talking_head_refine_native_size", else 512.
    """

    per_image_masks = False

    def __init__(self, host: Any, native: Optional[int] = None):
        self.host = host
        self._native = native
        self.name = f"host:{getattr(host, 'name', 'host')}"

    def native_size(self) -> int:
        if self._native:
            return int(self._native)
        probe = getattr(self.host, "sd_native_size", None)
        if probe is not None:
            v = probe() if callable(probe) else probe
            if v:
                return int(v)
        setting = getattr(self.host, "setting", None)
        v = setting(SETTING_REFINE_NATIVE_SIZE, None) if callable(setting) else None
        return int(v) if v else 512

    def __call__(self, request: Img2ImgRequest) -> np.ndarray:
        return check_output(self.host.img2img(request), request, "the host's")


class CallableBackend:
    """Wrap a plain function ``fn(request) -> images`` (tests, custom models) as a backend."""

    def __init__(self, fn: Callable[[Img2ImgRequest], np.ndarray], native: int = 512, name: str = "callable"):
        self.fn = fn
        self._native = int(native)
        self.name = name

    def native_size(self) -> int:
        return self._native

    def __call__(self, request: Img2ImgRequest) -> np.ndarray:
        return check_output(self.fn(request), request, self.name)


#: A1111 sampler names -> (diffusers scheduler class, extra config). "Karras" variants use Karras sigmas.
SAMPLERS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
}


def _diffusers_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers", "transformers"))


class DiffusersBackend:
    """Standalone img2img with diffusers (``StableDiffusionImg2ImgPipeline``, and
    ``StableDiffusionInpaintPipeline`` sharing its components for masked requests).

    checkpoint: a single-file SD 1.x/2.x checkpoint (.safetensors / .ckpt, loaded with
        ``from_single_file``) or a diffusers model folder (``model_index.json``, ``from_pretrained``).
        Everything is loaded with ``local_files_only`` (no network) unless ``allow_download`` (or the
        environment variable ``TALKING_HEAD_SD_ALLOW_DOWNLOAD=1``): a single file needs the
        diffusers config of its model family, which ``config`` (a local diffusers folder) or the
        Hugging Face cache provides.
    pipeline: an already built img2img pipeline (tests; ``checkpoint`` is then ignored).
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N". precision: "fp32" or "fp16"
        (fp16 only on CUDA).

    Raises DependencyError (diffusers/transformers/torch missing), CheckpointError (file missing,
    unreadable, not an SD model, config unavailable offline). Requests: see the module doc; a
    checkpoint with a 9-channel (inpainting) UNet always runs the inpaint pipeline. When
    ``steps * denoising_strength < 1`` the steps are raised to ``ceil(1 / strength)`` (one
    denoising step at least, as the WebUI does); strength 0 returns the images unchanged.
    """

    name = "diffusers"

    def __init__(self, checkpoint: str | os.PathLike | None = None, *, pipeline: Any = None,
                 config: str | os.PathLike | None = None, device: str = "auto", precision: str = "fp32",
                 allow_download: Optional[bool] = None):
        if not _diffusers_available():
            raise DependencyError("img2img refinement with --sd-checkpoint needs torch, diffusers and "
                                  "transformers: pip install diffusers transformers")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.config = config
        self.device_name = device
        self.precision = precision
        if allow_download is None:
            allow_download = os.environ.get("TALKING_HEAD_SD_ALLOW_DOWNLOAD", "") == "1"
        self.allow_download = bool(allow_download)
        self._img2img = pipeline
        self._inpaint = None
        self._lock = threading.RLock()  # one request at a time (a pipeline's scheduler holds state)
        if pipeline is None:
            if self.checkpoint is None:
                raise DependencyError(NO_MODEL_MESSAGE)
            p = self.checkpoint
            if not p.exists():
                raise CheckpointError(f"SD checkpoint not found: {p}; pass the path of a .safetensors/.ckpt "
                                      f"file or a diffusers model folder to --sd-checkpoint")
            if p.is_dir() and not (p / "model_index.json").is_file():
                raise CheckpointError(f"{p} is a folder without model_index.json; pass a single-file "
                                      f"checkpoint or a diffusers model folder to --sd-checkpoint")
            if p.is_file() and p.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise CheckpointError(f"{p.name} is not a model checkpoint; use a "
                                      f"{'/'.join(CHECKPOINT_SUFFIXES)} file or a diffusers model folder")
        else:
            self._prepare(pipeline)

    # -- loading ------------------------------------------------------------------------------------
    def _device(self):
        return resolve_device(self.device_name)

    def _prepare(self, pipe) -> None:
        import torch
        dev = self._device()
        dtype = resolve_dtype(self.precision, dev, supported=("fp32", "fp16"))
        pipe = pipe.to(dev) if dtype == torch.float32 else pipe.to(dev, dtype)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self._img2img = pipe
        self._inpaint = None

    @staticmethod
    def _quiet() -> None:
        """Keep diffusers/transformers to errors only: no progress bars or advice in the CLI output."""
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        try:
            from diffusers.utils import logging as dlog
            from transformers.utils import logging as tlog
            for lib in (dlog, tlog):
                lib.set_verbosity_error()
                lib.disable_progress_bar()
        except (ImportError, AttributeError):
            pass

    def load(self) -> "DiffusersBackend":
        """Load the model now (it is otherwise loaded by the first request). Returns self."""
        with self._lock:
            if self._img2img is None:
                self._load()
        return self

    def _load(self) -> None:
        self._quiet()
        from diffusers import StableDiffusionImg2ImgPipeline
        p = self.checkpoint
        kwargs = dict(safety_checker=None, requires_safety_checker=False)
        try:
            if p.is_dir():
                pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(p), local_files_only=True, **kwargs)
            else:
                extra = {"config": str(self.config)} if self.config else {}
                pipe = StableDiffusionImg2ImgPipeline.from_single_file(
                    str(p), local_files_only=not self.allow_download, **extra, **kwargs)
        except TalkingHeadError:
            raise
        except Exception as exc:  # any loader failure (hub lookup, safetensors, config) -> one line
            first = " ".join(str(exc).split())[:200]
            hint = ("" if p.is_dir() else "; a single file needs its model family's diffusers config: pass a "
                    "diffusers model folder instead, or allow one download with TALKING_HEAD_SD_ALLOW_DOWNLOAD=1")
            raise CheckpointError(f"cannot load the SD model {p.name}: {first}{hint}") from None
        self._prepare(pipe)

    def native_size(self) -> int:
        self.load()
        pipe = self._img2img
        scale = getattr(pipe, "vae_scale_factor", 8)
        sample = getattr(pipe.unet.config, "sample_size", 64)
        return int(sample) * int(scale)

    def _pipe(self, masked: bool):
        self.load()
        inpaint_unet = int(getattr(self._img2img.unet.config, "in_channels", 4)) == 9
        if not masked and not inpaint_unet:
            return self._img2img
        if self._inpaint is None:
            from diffusers import StableDiffusionInpaintPipeline
            comps = {k: v for k, v in self._img2img.components.items()}
            comps["requires_safety_checker"] = False
            self._inpaint = StableDiffusionInpaintPipeline(**comps)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    def _scheduler(self, pipe, sampler: str):
        if sampler not in SAMPLERS:
            raise OptionError(f"sampler {sampler!r} is not available with the diffusers backend; use one of "
                              f"{', '.join(SAMPLERS)}")
        import diffusers
        cls_name, extra = SAMPLERS[sampler]
        cls = getattr(diffusers, cls_name)
        if type(pipe.scheduler).__name__ == cls_name and all(pipe.scheduler.config.get(k) == v for k, v in extra.items()):
            return pipe.scheduler
        return cls.from_config(pipe.scheduler.config, **extra)

    # -- running -------------------------------------------------------------------------------------
    def __call__(self, request: Img2ImgRequest) -> np.ndarray:
        with self._lock:
            return self._run(request)

    def _run(self, request: Img2ImgRequest) -> np.ndarray:
        import torch
        from PIL import Image

        imgs = np.asarray(request.images)
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
            raise InputError(f"img2img images must be uint8 [n, H, W, 3], got {imgs.dtype} {list(imgs.shape)}")
        n, h, w = imgs.shape[:3]
        params = request.params
        strength = float(params.denoising_strength)
        if strength <= 0.0:
            return imgs.copy()
        steps = int(params.steps)
        if steps * strength < 1.0:
            steps = int(math.ceil(1.0 / strength))
        masked = request.mask is not None
        pipe = self._pipe(masked)
        pipe.scheduler = self._scheduler(pipe, params.sampler)
        seeds = list(request.seeds or [params.seed] * n)
        if len(seeds) != n:
            raise InputError(f"img2img got {len(seeds)} seeds for {n} images")
        gens = [torch.Generator("cpu").manual_seed(int(s) % (2 ** 63)) for s in seeds]
        kwargs: Dict[str, Any] = dict(
            prompt=[params.prompt] * n, negative_prompt=[params.negative_prompt] * n,
            image=[Image.fromarray(im) for im in imgs], strength=strength, num_inference_steps=steps,
            guidance_scale=float(params.cfg_scale), generator=gens, output_type="np")
        if pipe is not self._img2img:
            mask = request.mask if masked else np.full((n, h, w), 255, np.uint8)
            mask = np.asarray(mask)
            if mask.shape != (n, h, w):
                raise InputError(f"img2img mask must be uint8 [n, H, W] = {[n, h, w]}, got {list(mask.shape)}")
            kwargs.update(mask_image=[Image.fromarray(m.astype(np.uint8), "L") for m in mask], height=h, width=w)
        with torch.inference_mode():
            out = pipe(**kwargs).images
        out = np.clip(np.round(np.asarray(out, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return check_output(out, request, "diffusers")


def make_backend(*, host: Any = None, sd_checkpoint: str | os.PathLike | None = None, device: str = "auto",
                 precision: str = "fp32", sd_config: str | os.PathLike | None = None) -> RefineBackend:
    """The backend a run should use: ``sd_checkpoint`` (diffusers) when given, else the host's model
    when the host can run img2img, else DependencyError (:data:`NO_MODEL_MESSAGE`).

    The most recent diffusers backend is kept (one model in memory, in the process's model cache
    :data:`sadtalker_ext.models.cache.MODELS`: the host's release drops it), so that repeated runs and
    previews from the UI with the same checkpoint, device and precision do not reload it."""
    if sd_checkpoint:
        prec = "fp16" if precision == "fp16" else "fp32"
        p = Path(sd_checkpoint)
        key = ("diffusers", str(p.resolve()), p.stat().st_mtime if p.exists() else None, str(sd_config or ""),
               device, prec)
        return MODELS.get_latest(key, lambda: DiffusersBackend(sd_checkpoint, config=sd_config, device=device,
                                                               precision=prec))
    if host is not None and host_can_img2img(host):
        return HostBackend(host)
    raise DependencyError(NO_MODEL_MESSAGE)


def refine_status(host: Any = None, sd_checkpoint: str | os.PathLike | None = None) -> Tuple[bool, str]:
    """(available, message) for a UI: whether refinement can run, and the one line to show when
    it cannot. Never raises and loads nothing."""
    if sd_checkpoint:
        if not _diffusers_available():
            return False, "img2img refinement is disabled: install diffusers and transformers (pip install diffusers transformers)"
        p = Path(sd_checkpoint)
        if not p.exists():
            return False, f"img2img refinement is disabled: SD checkpoint not found: {p}"
        return True, f"img2img refinement uses {p.name} (diffusers)"
    if host is not None and host_can_img2img(host):
        name = getattr(host, "name", "")
        owner = "WebUI" if name in ("a1111", "forge") else "host"
        return True, f"img2img refinement uses the {owner}'s loaded model"
    return False, "img2img refinement is disabled: " + NO_MODEL_MESSAGE
