"""The AUTOMATIC1111 WebUI (v1.10.x) and Forge adapter: the only module that imports ``modules.*``.

:class:`A1111Host` implements :class:`~sadtalker_ext.host.base.Host` on the WebUI's own machinery:

* models folder: ``--talking-head-models-dir`` (``preload.py``), else the "Models folder" setting,
  else ``<models_path>/SadTalker``; output folder: the "Output folder" setting (default
  ``outputs/talking-head``; relative paths are inside the WebUI's data folder, ``--data-dir``);
* settings: ``shared.opts`` ("Talking Head" section, keys ``talking_head_*``, see :data:`SETTINGS` in
  :mod:`.a1111_settings`);
* a generation is a WebUI job: :meth:`A1111Host.job` holds ``modules.call_queue.queue_lock`` (so it
  never runs on the GPU beside txt2img/img2img), brackets the run with ``shared.state.begin/end``
  and registers a task with ``modules.progress``; :meth:`A1111Host.progress` writes frames
  done/total into ``shared.state`` (``job_count`` 1, ``job_no`` 0, ``sampling_step`` /
  ``sampling_steps``), ``textinfo`` and ``current_image`` (a PIL preview), which is what
  ``/sdapi/v1/progress`` and the WebUI's progress bar read; :meth:`A1111Host.interrupted` is
  ``shared.state.interrupted`` (the WebUI's Interrupt button);
* img2img with the loaded Stable Diffusion model through ``StableDiffusionProcessingImg2Img`` +
  ``process_images``; face restoration through ``modules.face_restoration.restore_faces``;
* engines and every other model (SadTalker, Wav2Lip, restorers, the diffusers img2img pipeline) are
  kept across runs in the process's model cache (:data:`sadtalker_ext.models.cache.MODELS`,
  :func:`cached_engine`) unless the "Keep models loaded" setting is off: then :func:`release_models`
  drops them all after every job; after a failed run the CUDA cache is emptied.

:func:`register` wires the extension into the WebUI (called by ``scripts/talking_head.py``): the
tab (``on_ui_tabs``; a tab showing the error and its fix when the UI cannot be built) and the "Send to
Talking Head" buttons beside the txt2img/img2img results (``on_after_component`` +
``modules.infotext_utils``) from :mod:`.a1111_tab`; the settings (``on_ui_settings``) and the HTTP API
(``on_app_started``) from :mod:`.a1111_settings`. The adapter is these three modules, split by what they
serve; the names tests and scripts use are importable from this one.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import math
import os
import random
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from ..errors import GenerationInterrupted, InputError
from ..frontend import (SETTING_KEEP_LOADED, SETTING_MODELS_DIR, SETTING_OUTPUT_DIR, SETTING_SHOW_PATHS, TAB_ID,
                        TAB_TITLE, error_tab, optional_module)
from ..models.cache import MODELS, free_cuda_cache
from ..refine.params import Img2ImgRequest
from .a1111_settings import (DEFAULT_OUTPUT_DIR, ENGINE_CHOICES, PRECISION_CHOICES, SETTINGS, api_credentials,
                             api_origins, on_app_started, on_ui_settings)
from .a1111_tab import _SEND_TO, on_after_component, on_ui_tabs, prompt_for_send

log = logging.getLogger(__name__)

#: --server-name values that keep the WebUI on this machine.
_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1"}

#: How a WebUI user gets missing model files (error messages; the CLI's command is of no use there).
WEBUI_DOWNLOAD_HINT = "click 'Download {engine} files' in the Models panel of the Talking Head tab"

# ------------------------------------------------------------------------------------------------
# engine cache
# ------------------------------------------------------------------------------------------------

def cached_engine(name: str, checkpoints: Optional[str], host_dir: Optional[Path], *, keep: bool = True):
    """The engine for ``name`` ("auto" resolved), reused across runs while ``keep`` is true.

    Keyed by (resolved engine, checkpoints folder, host models folder) in the process's model cache
    (:data:`sadtalker_ext.models.cache.MODELS`). Raises OptionError for an unknown engine,
    DependencyError when the SadTalker engine has no PyTorch.
    """
    from ..engines import get_engine, resolve_engine_name

    resolved = resolve_engine_name(name, checkpoints, host_dir)
    if not keep:
        return get_engine(resolved, checkpoints=checkpoints, host_dir=host_dir)
    key = ("engine", resolved, str(checkpoints or ""), str(host_dir or ""))
    return MODELS.get(key, lambda: get_engine(resolved, checkpoints=checkpoints, host_dir=host_dir))


def release_models() -> None:
    """Forget every loaded model (engines, SadTalker's modules, Wav2Lip, restorers, the diffusers
    pipeline, open checkpoint files: one :meth:`~sadtalker_ext.models.cache.ModelCache.release`), then
    collect garbage and free the CUDA cache. The next run loads its models again."""
    MODELS.release()


# ------------------------------------------------------------------------------------------------
# the host
# ------------------------------------------------------------------------------------------------

def _scheduler_argument(processing, scheduler: Optional[str]) -> Dict[str, str]:
    """``{"scheduler": name}`` for hosts whose processing takes a scheduler (A1111 >= 1.9, Forge):
    the request's, else "Automatic" (the sampler's own schedule; None makes the host log a "Sampler
    Scheduler autocorrection" warning on every call). Empty for older hosts without the field."""
    fields = getattr(processing.StableDiffusionProcessing, "__dataclass_fields__", None)
    if fields is not None and "scheduler" not in fields:
        return {}
    return {"scheduler": scheduler or "Automatic"}


def _round8(v: int) -> int:
    """Up to a multiple of 8 (Stable Diffusion's latent stride)."""
    return max(8, (int(v) + 7) // 8 * 8)


class A1111Host:
    """:class:`~sadtalker_ext.host.base.Host` inside AUTOMATIC1111 WebUI v1.10.x or Forge."""

    #: the lip-sync stage uses the WebUI's face restorers (GFPGAN / CodeFormer as set in its settings)
    provides_face_restoration = True

    def __init__(self):
        self.name = "forge" if importlib.util.find_spec("modules_forge") is not None else "a1111"
        #: id of the WebUI task of the running job (for ``/internal/progress``), else None.
        self.current_task_id: Optional[str] = None
        #: True from the run's first refinement img2img call to its end (see :meth:`progress`).
        self._refining = False
        #: (first job, jobs) the refinement's calls map to (see :meth:`_refine_jobs`).
        self._refine_scale = (0, 1)

    # -- folders and settings ------------------------------------------------------------------
    @staticmethod
    def _resolve(path: str) -> Path:
        from modules import paths

        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else Path(paths.data_path) / p

    def models_dir(self) -> Path:
        """``--talking-head-models-dir``, else the "Models folder" setting, else ``<models_path>/SadTalker``."""
        from modules import paths, shared

        flag = getattr(shared.cmd_opts, "talking_head_models_dir", None)  # --talking-head-models-dir
        if flag:
            return Path(os.path.expanduser(flag))
        configured = self.setting(SETTING_MODELS_DIR, "")
        if configured:
            return self._resolve(configured)
        return Path(paths.models_path) / "SadTalker"

    def output_dir(self) -> Path:
        """The "Output folder" setting (created); relative paths are inside the data folder."""
        folder = self._resolve(self.setting(SETTING_OUTPUT_DIR, "") or DEFAULT_OUTPUT_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def setting(self, key: str, default: Any = None) -> Any:
        """``shared.opts.<key>``, or ``default`` when the setting is unknown or None."""
        from modules import shared

        opts = getattr(shared, "opts", None)
        if opts is None:
            return default
        try:
            value = getattr(opts, key)
        except AttributeError:
            return default
        return default if value is None else value

    # -- progress, interrupt, job ----------------------------------------------------------------
    def progress(self, done: int, total: int, text: str = "", preview: Optional[np.ndarray] = None) -> None:
        """Frames ``done`` of ``total`` into ``shared.state`` (+ ``textinfo`` and a PIL preview)."""
        from modules import shared

        state = shared.state
        total = max(int(total), 0)
        done = max(int(done), 0)
        if not self._refining:
            # frames as sampling steps of one job; the steps have 2 % headroom because the WebUI's
            # /sdapi/v1/progress adds 0.01 and derives its ETA from the sum before clamping it to 1
            state.job_count = 1
            state.job_no = 0
            state.sampling_steps = total + max(1, -(-total // 49)) if total else 0
            state.sampling_step = min(done, total) if total else 0
        # while the refinement runs, job_no / job_count count its img2img calls (see img2img) and the
        # host's sampler moves sampling_step: frames only show in the text
        state.textinfo = f"{TAB_TITLE}: {text}" if text else f"{TAB_TITLE}: frame {done}/{total}"
        if preview is not None:
            self._set_preview(state, preview)

    @staticmethod
    def _set_preview(state, frame: np.ndarray) -> None:
        from PIL import Image

        from ..io.image import to_rgb8

        image = Image.fromarray(to_rgb8(frame))
        if max(image.size) > 512:  # the progress APIs re-encode it on every poll
            image.thumbnail((512, 512))
        assign = getattr(state, "assign_current_image", None)
        if assign is not None:
            assign(image)
        else:  # WebUI versions before assign_current_image
            state.current_image = image
            state.id_live_preview = getattr(state, "id_live_preview", 0) + 1

    def interrupted(self) -> bool:
        """True once the WebUI's (or our tab's) Interrupt was pressed during this job."""
        from modules import shared

        return bool(getattr(shared.state, "interrupted", False))

    def interrupt(self) -> None:
        """Ask the running job to stop (``shared.state.interrupt()``); it stops within one chunk."""
        from modules import shared

        shared.state.interrupt()

    @contextlib.contextmanager
    def job(self, name: str, total: int) -> Iterator[None]:
        """One generation as a WebUI job.

        Holds ``call_queue.queue_lock`` for the whole run (do not call this from a function wrapped
        with ``wrap_gradio_gpu_call``: that lock is not re-entrant), calls ``shared.state.begin`` /
        ``end``, registers a ``modules.progress`` task, frees the CUDA cache after an error, and
        releases the models afterwards when "Keep models loaded" is off.
        """
        from modules import call_queue, shared

        progress = optional_module("modules.progress")
        task_id = f"task(talking-head-{uuid.uuid4().hex[:12]})"
        if progress is not None:
            progress.add_task_to_queue(task_id)
        with call_queue.queue_lock:
            state = shared.state
            try:
                state.begin(job=name)
            except TypeError:  # WebUI versions whose begin() takes no job name
                state.begin()
                state.job = name
            state.job_count = 1
            state.job_no = 0
            state.sampling_step = 0
            state.sampling_steps = max(int(total), 0)
            state.textinfo = f"{TAB_TITLE}: starting"
            self._refining = False
            if progress is not None:
                progress.start_task(task_id)
            self.current_task_id = task_id
            failed = False
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                try:
                    state.end()
                finally:
                    self.current_task_id = None
                    self._refining = False
                    if progress is not None:
                        progress.finish_task(task_id)
                    if not self.setting(SETTING_KEEP_LOADED, True):
                        release_models()
                    elif failed:
                        gc.collect()
                        free_cuda_cache()

    def shows_server_paths(self) -> bool:
        """Whether the tab may show server folders: the "Show server folders" setting, or a WebUI that
        answers this machine alone (no ``--listen``, ``--share``, ``--ngrok``; ``--server-name`` unset or
        a loopback name; no ``GRADIO_SERVER_NAME`` elsewhere)."""
        if self.setting(SETTING_SHOW_PATHS, False):
            return True
        from modules import shared

        cmd = shared.cmd_opts
        if getattr(cmd, "listen", False) or getattr(cmd, "share", False) or getattr(cmd, "ngrok", None):
            return False
        name = getattr(cmd, "server_name", None) or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
        return name in _LOCAL_NAMES

    def engine_for(self, options):
        """The engine for a run (see :func:`cached_engine`); used by :func:`sadtalker_ext.jobs.run_job`."""
        keep = bool(self.setting(SETTING_KEEP_LOADED, True))
        return cached_engine(options.engine, options.checkpoints, self.models_dir(), keep=keep)

    # -- img2img and face restoration ---------------------------------------------------------------
    def img2img(self, request: Img2ImgRequest) -> np.ndarray:
        """img2img/inpainting of ``request.images`` with the WebUI's loaded model.

        Every image of a call gets the same seed (``request.params.seed``, or one random seed for the
        call when -1) so that consecutive video frames are repainted alike. Images that share a
        mask (or have none) are batched, ``request.max_batch`` (default 4) at a time. The request's
        ``width``/``height`` set the processing size (default: the image size rounded up to a multiple
        of 8); ``scheduler``, ``inpaint_full_res`` (default True: only the masked area, with
        ``params.padding``), ``inpainting_fill`` (default 1: original), ``resize_mode`` (0) and
        ``restore_faces`` (False) are passed on.

        Call this inside :meth:`job` (it does not take the queue lock itself). Returns uint8 RGB
        [n, H, W, 3] at the input size. Raises InputError for malformed arrays and
        GenerationInterrupted when the WebUI interrupted the run.
        """
        from PIL import Image

        from modules import processing, shared

        images = np.asarray(request.images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
            raise InputError(f"img2img needs uint8 RGB images [n, H, W, 3], got {images.dtype} {images.shape}")
        n, h, w = images.shape[:3]
        masks = None
        if request.mask is not None:
            masks = np.asarray(request.mask)
            if masks.ndim == 2:
                masks = np.broadcast_to(masks, (n, h, w))
            if masks.shape != (n, h, w):
                raise InputError(f"img2img mask must be [n, H, W] = {(n, h, w)}, got {masks.shape}")
            masks = masks.astype(np.uint8)
        params = request.params
        width = int(request.width or _round8(w))
        height = int(request.height or _round8(h))
        seed = int(params.seed) if params.seed is not None and int(params.seed) >= 0 \
            else random.randrange(4294967294)
        max_batch = max(1, int(request.max_batch))
        scheduler = _scheduler_argument(processing, request.scheduler)
        out = np.empty_like(images)
        outdir = (getattr(shared.opts, "outdir_samples", "") or getattr(shared.opts, "outdir_img2img_samples", "")
                  or str(self.output_dir()))
        pieces = [group[start:start + max_batch] for group in self._mask_groups(masks, n)
                  for start in range(0, len(group), max_batch)]
        for piece, idx in enumerate(pieces):
            self._start_img2img_piece(shared.state, request, piece, len(pieces))
            mask_img = None if masks is None else Image.fromarray(masks[idx[0]], mode="L")
            p = processing.StableDiffusionProcessingImg2Img(
                sd_model=shared.sd_model, outpath_samples=outdir, outpath_grids=outdir,
                prompt=params.prompt, negative_prompt=params.negative_prompt,
                seed=[seed] * len(idx), sampler_name=params.sampler, **scheduler,
                batch_size=len(idx), n_iter=1, steps=int(params.steps), cfg_scale=float(params.cfg_scale),
                width=width, height=height, restore_faces=bool(request.restore_faces),
                tiling=False, do_not_save_samples=True, do_not_save_grid=True,
                denoising_strength=float(params.denoising_strength),
                init_images=[Image.fromarray(images[i]) for i in idx],
                resize_mode=int(request.resize_mode), mask=mask_img,
                mask_blur=int(params.mask_blur), inpainting_fill=int(request.inpainting_fill),
                inpaint_full_res=bool(request.inpaint_full_res),
                inpaint_full_res_padding=int(params.padding),
            )
            try:
                processed = processing.process_images(p)
            finally:
                close = getattr(p, "close", None)
                if close is not None:
                    close()
            results = self._pick_images(processed, len(idx))
            for i, image in zip(idx, results):
                image = image.convert("RGB")
                if image.size != (w, h):
                    image = image.resize((w, h), Image.LANCZOS)
                out[i] = np.asarray(image)
        if request.calls_total is not None:
            self._set_preview(shared.state, out[0])  # the host's live image: the crop just refined
        return out

    @staticmethod
    def _refine_jobs(state, calls: int) -> tuple:
        """(base, jobs): the refinement's ``calls`` img2img calls become jobs base .. base + calls - 1 of
        ``jobs``, so that the bar goes on from what it showed (base / jobs >= the frames' fraction so
        far, taken as at most 0.9) and ends at (base + calls) / jobs <= 0.98 (the WebUI's progress API
        adds 0.01 and its ETA turns negative past 1)."""
        shown = 0.0
        if state.job_count and state.job_count > 0:
            shown = state.job_no / state.job_count
            if state.sampling_steps:
                shown += state.sampling_step / state.sampling_steps / state.job_count
        shown = min(max(shown, 0.0), 0.9)
        jobs = calls + 1
        while True:
            base = math.ceil(shown * jobs - 1e-9)
            if base + calls <= 0.98 * jobs:
                return base, jobs
            jobs += 1

    def _start_img2img_piece(self, state, request: Img2ImgRequest, piece: int, pieces: int) -> None:
        """Keep ``shared.state`` coherent over the refinement's many ``process_images`` calls.

        The WebUI's progress APIs read ``(job_no + sampling_step / sampling_steps) / job_count`` and every
        ``process_images`` ends with ``state.nextjob()`` (job_no + 1). Call i (the request's ``call_index``,
        ``calls_total``) is job base + i of K (:meth:`_refine_jobs`, fixed at the run's first call) and
        runs ``pieces`` = m ``process_images`` (one per mask group and batch), so before piece k:
        job_count = K * m, job_no = (base + i) * m + k. Progress is then (base + i + (k + step / steps)
        / m) / K: job_no <= job_count, at each call's start exactly (base + i) / K whatever m is (never
        decreasing), at most 0.98 (the API's ETA stays >= 0). No-op outside a refinement (no
        ``calls_total``)."""
        if request.calls_total is None:
            return
        index = max(0, int(request.call_index))
        if not self._refining:
            self._refine_scale = self._refine_jobs(state, max(int(request.calls_total), index + 1))
        base, jobs = self._refine_scale
        call = min(base + index, jobs - 1)  # more calls than planned: the bar waits at its last step
        state.job_count = jobs * pieces
        state.job_no = call * pieces + piece
        state.sampling_step = 0
        self._refining = True
        if request.status:
            state.textinfo = f"{TAB_TITLE}: {request.status}"

    @staticmethod
    def _mask_groups(masks: Optional[np.ndarray], n: int) -> List[List[int]]:
        if masks is None:
            return [list(range(n))]
        groups: List[List[int]] = []
        for i in range(n):
            if groups and np.array_equal(masks[groups[-1][0]], masks[i]):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _pick_images(self, processed, n: int) -> list:
        """The n result images of a Processed (skipping a grid and interleaved masks/composites)."""
        body = list(processed.images)[int(getattr(processed, "index_of_first_image", 0) or 0):]
        if self.interrupted() or len(body) < n:
            raise GenerationInterrupted("generation was interrupted; no video was written")
        if len(body) % n == 0:
            return body[::len(body) // n]
        return body[:n]

    def sd_native_size(self) -> int:
        """Native resolution of the loaded Stable Diffusion model: 1024 (SDXL, SD3, Flux), 768 (SD2), 512."""
        from modules import shared

        model = getattr(shared, "sd_model", None)
        if any(getattr(model, flag, False) for flag in ("is_sdxl", "is_sd3", "is_flux")):
            return 1024
        if getattr(model, "is_sd2", False):
            return 768
        return 512

    def restore_faces(self, image: np.ndarray) -> np.ndarray:
        """The WebUI's configured face restorer (CodeFormer/GFPGAN) on one uint8 RGB image."""
        from modules import face_restoration

        from ..io.image import to_rgb8

        restored = face_restoration.restore_faces(to_rgb8(image))
        return np.ascontiguousarray(np.asarray(restored, dtype=np.uint8))


_HOST: Optional[A1111Host] = None


def get_host() -> A1111Host:
    """The process-wide :class:`A1111Host`."""
    global _HOST
    if _HOST is None:
        _HOST = A1111Host()
    return _HOST


def register() -> None:
    """Register every WebUI callback of the extension (called once per script load)."""
    from modules import script_callbacks

    from ..models import locate

    _SEND_TO.clear()
    locate.DOWNLOAD_HINT = WEBUI_DOWNLOAD_HINT
    script_callbacks.on_ui_settings(on_ui_settings)
    script_callbacks.on_after_component(on_after_component)
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_app_started(on_app_started)


__all__ = ["A1111Host", "get_host", "register", "release_models", "cached_engine", "free_cuda_cache",
           "error_tab", "api_credentials", "api_origins", "on_app_started", "on_ui_settings", "on_ui_tabs",
           "on_after_component", "prompt_for_send", "SETTINGS", "ENGINE_CHOICES", "PRECISION_CHOICES",
           "DEFAULT_OUTPUT_DIR", "TAB_ID", "TAB_TITLE"]
