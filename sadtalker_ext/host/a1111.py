"""The AUTOMATIC1111 WebUI (v1.10.x) and Forge adapter: the only module that imports ``modules.*``.

:class:`A1111Host` implements :class:`~sadtalker_ext.host.base.Host` on the WebUI's own machinery:

* models folder: ``--talking-head-models-dir`` (``preload.py``), else the "Models folder" setting,
  else ``<models_path>/SadTalker``; output folder: the "Output folder" setting (default
  ``outputs/talking-head``; relative paths are inside the WebUI's data folder, ``--data-dir``);
* settings: ``shared.opts`` ("Talking Head" section, keys ``talking_head_*``, see :data:`SETTINGS`);
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
tab (``on_ui_tabs``; a tab showing the error and its fix when the UI cannot be built), the settings
(``on_ui_settings``), the HTTP API (``on_app_started``) and the "Send to Talking Head" buttons
beside the txt2img/img2img results (``on_after_component`` + ``modules.infotext_utils``).
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import GenerationInterrupted, InputError
from ..frontend import (SETTING_DEFAULT_ENGINE, SETTING_KEEP_LOADED, SETTING_MODELS_DIR, SETTING_ORIGINS,
                        SETTING_OUTPUT_DIR, SETTING_PRECISION, SETTING_SHOW_PATHS, TAB_ID, TAB_TITLE, error_tab,
                        optional_module)
from ..models.cache import MODELS, free_cuda_cache
from ..options import ENGINES, PRECISIONS, GenerateOptions
from ..refine.params import Img2ImgRequest

log = logging.getLogger(__name__)

SECTION = (TAB_ID, TAB_TITLE)
DEFAULT_OUTPUT_DIR = os.path.join("outputs", "talking-head")
#: Choices of the default-engine / precision settings: the options' own (sadtalker_ext.options).
ENGINE_CHOICES = list(ENGINES)
PRECISION_CHOICES = list(PRECISIONS)

#: The extension's settings: key -> (default, label, note).
SETTINGS: Dict[str, Tuple[Any, str, str]] = {
    SETTING_MODELS_DIR: (
        "", "Models folder (SadTalker / Wav2Lip files)",
        "empty: models/SadTalker; the --talking-head-models-dir flag overrides this"),
    SETTING_OUTPUT_DIR: (
        DEFAULT_OUTPUT_DIR, "Output folder for videos and their JSON sidecars",
        "relative paths are inside the WebUI's data folder"),
    SETTING_DEFAULT_ENGINE: (
        GenerateOptions().engine, "Default engine", "auto: SadTalker when its model files and PyTorch are present, else lite"),
    SETTING_PRECISION: (
        GenerateOptions().precision, "Precision of the neural renderer",
        "fp16/bf16: faster on CUDA GPUs, slightly different frames; bf16 also on CPUs that have it natively"),
    SETTING_KEEP_LOADED: (
        True, "Keep models loaded between runs", "off: free the memory after every video"),
    SETTING_SHOW_PATHS: (
        False, "Show server folders in the tab (Checkpoint folder, lip-sync debug folder)",
        "off: shown only while the WebUI answers this machine alone (no --listen, --share, --ngrok, "
        "or --server-name other than localhost)"),
    SETTING_ORIGINS: (
        "", "Other sites allowed to call the Talking Head HTTP API",
        "comma-separated origins like https://site.example; empty: the WebUI's own pages only; restart to apply"),
}

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


# ------------------------------------------------------------------------------------------------
# settings, API auth
# ------------------------------------------------------------------------------------------------

def _on_keep_loaded_changed() -> None:
    if not get_host().setting(SETTING_KEEP_LOADED, True):
        release_models()


def on_ui_settings() -> None:
    """Register the "Talking Head" settings section (see :data:`SETTINGS`)."""
    from modules import shared

    try:
        import gradio as gr
        radio = gr.Radio
    except ImportError:  # pragma: no cover - the WebUI always has gradio
        radio = None
    items = {}
    for key, (default, label, note) in SETTINGS.items():
        component, args, onchange = None, None, None
        if key == SETTING_DEFAULT_ENGINE:
            component, args = radio, {"choices": ENGINE_CHOICES}
        elif key == SETTING_PRECISION:
            component, args = radio, {"choices": PRECISION_CHOICES}
        elif key == SETTING_KEEP_LOADED:
            onchange = _on_keep_loaded_changed
        info = shared.OptionInfo(default, label, component, args, onchange=onchange)
        items[key] = info.info(note) if note else info
    section = SECTION
    try:  # v1.6+: a category of our own, so the settings page does not list us under "Uncategorized"
        from modules.options import categories
        categories.register_category(SECTION[0], SECTION[1])
        section = (*SECTION, SECTION[0])
    except (ImportError, AttributeError):
        pass
    for key, info in shared.options_section(section, items).items():
        shared.opts.add_option(key, info)


def api_credentials() -> Optional[Dict[str, str]]:
    """Users allowed on our API routes: ``--api-auth`` ("user:pass,user2:pass2"); when only the UI
    is protected (``--gradio-auth`` / ``--gradio-auth-path``) those users, so the API is never more
    open than the UI. None when neither is set."""
    from modules import shared

    from ..api.auth import parse_credentials

    opts = shared.cmd_opts
    spec = getattr(opts, "api_auth", None)
    if not spec:
        parts = [getattr(opts, "gradio_auth", None) or ""]
        auth_path = getattr(opts, "gradio_auth_path", None)
        if auth_path and os.path.isfile(auth_path):
            with open(auth_path, encoding="utf8") as f:
                parts += [line.strip() for line in f if line.strip()]
        spec = ",".join(p for p in parts if p)
    return parse_credentials(spec) if spec else None


def api_origins(host=None) -> Tuple[list, Optional[str]]:
    """(origins, regex) that may call our API besides the WebUI's own pages: the ``talking_head_api_origins``
    setting plus the WebUI's own ``--cors-allow-origins`` (comma-separated), and its
    ``--cors-allow-origins-regex`` (None when unset): sites the WebUI's owner allowed are allowed by us too."""
    from modules import shared

    host = host if host is not None else get_host()
    parts = [host.setting(SETTING_ORIGINS, None) or "", getattr(shared.cmd_opts, "cors_allow_origins", None) or ""]
    origins = [o.strip() for p in parts for o in str(p).replace(";", ",").split(",") if o.strip()]
    regex = getattr(shared.cmd_opts, "cors_allow_origins_regex", None) or None
    return origins, regex


def on_app_started(demo, app) -> None:
    """Mount ``/talking-head/v1/*`` on the WebUI's FastAPI app, behind :func:`api_credentials`, open to the
    WebUI's own pages and :func:`api_origins`."""
    from .. import api

    host = get_host()
    origins, regex = api_origins(host)
    api.mount(app, host, auth=api_credentials(), allowed_origins=origins, allowed_origin_regex=regex)


# ------------------------------------------------------------------------------------------------
# the tab, its error fallback, and "Send to Talking Head"
# ------------------------------------------------------------------------------------------------

class _SendTo:
    """State of one UI build: the results galleries, generation infos and our buttons."""

    def __init__(self):
        self.galleries: Dict[str, Any] = {}
        self.infotexts: Dict[str, Any] = {}
        self.buttons: List[Tuple[str, Any]] = []

    def clear(self):
        self.__init__()


_SEND_TO = _SendTo()
_SOURCE_TABS = ("txt2img", "img2img")


def _generation_info(generation_info: str) -> dict:
    try:
        info = json.loads(generation_info or "")
    except (ValueError, TypeError):
        return {}
    return info if isinstance(info, dict) else {}


def _first_infotext(generation_info: str) -> str:
    """The infotext of the first image of a generation_info JSON (what the WebUI shows first)."""
    info = _generation_info(generation_info)
    try:
        texts = info.get("infotexts") or []
        first = int(info.get("index_of_first_image", 0) or 0)
        return texts[first] if first < len(texts) else (texts[0] if texts else "")
    except (ValueError, TypeError, AttributeError, IndexError):
        return ""


def prompt_for_send(generation_info: str, gallery_index: Any = -1) -> str:
    """The prompt of the gallery image "Send to Talking Head" sends, from the results' generation_info
    JSON (``all_prompts`` per image; a grid in front counts in ``index_of_first_image``).

    gallery_index: the selected thumbnail (-1 or the grid: the first image). The prompt text is
    returned as it was generated (no infotext parsing); "" when the JSON holds none.
    """
    info = _generation_info(generation_info)
    try:
        index = int(float(gallery_index))
    except (TypeError, ValueError):
        index = -1
    try:
        first = int(info.get("index_of_first_image", 0) or 0)
    except (TypeError, ValueError):
        first = 0
    prompts = info.get("all_prompts")
    if isinstance(prompts, list) and prompts:
        i = index - first if index >= first else 0
        prompt = prompts[i] if i < len(prompts) else prompts[0]
        if isinstance(prompt, str):
            return prompt
    if isinstance(info.get("prompt"), str):
        return info["prompt"]
    text = _first_infotext(generation_info)
    return text.split("\nNegative prompt:")[0].rsplit("\nSteps: ", 1)[0].strip() if text else ""


#: Browser side of our prompt hand-over: the thumbnail selected in the sending tab's gallery.
_SELECTED_INDEX_JS = ("(info, index) => [info, (typeof selected_gallery_index_id === 'function') ? "
                      "selected_gallery_index_id('{tab}_gallery') : -1]")


def _new_button(tab: str):
    kwargs = dict(elem_id=f"{tab}_send_to_{TAB_ID}", tooltip="Send image and prompt to the Talking Head tab.")
    try:
        from modules.ui_components import ToolButton
        return ToolButton("\U0001f5e3\ufe0f", **kwargs)
    except Exception:  # WebUI without ToolButton: a plain small button
        import gradio as gr
        kwargs.pop("tooltip")
        return gr.Button("\U0001f5e3\ufe0f", elem_classes=["tool"], **kwargs)


def on_after_component(component, **kwargs) -> None:
    """Add a "Send to Talking Head" button after each results panel's "Send to extras" button and
    remember the gallery and generation info it sends from (wired in :func:`on_ui_tabs`)."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    if not elem_id:
        return
    for tab in _SOURCE_TABS:
        if elem_id == f"{tab}_gallery":
            _SEND_TO.galleries[tab] = component
        elif elem_id == f"{tab}_send_to_extras":
            _SEND_TO.buttons.append((tab, _new_button(tab)))
        elif elem_id == f"generation_info_{tab}":
            _SEND_TO.infotexts[tab] = component


def _hide_send_buttons() -> None:
    for _, button in _SEND_TO.buttons:
        button.visible = False


def _targets(ui) -> Optional[Dict[str, Any]]:
    """``ui.send_to_targets()``: ``{"image": component, "prompt": ..., "negative_prompt": ...,
    "fields": [(component, infotext label), ...]}`` (image required; fields default to the prompts)."""
    func = getattr(ui, "send_to_targets", None)
    targets = func() if callable(func) else None
    return targets if targets and targets.get("image") is not None else None


def _connect_send_to(ui, blocks=None) -> int:
    """Bind our buttons to the tab's image/prompt components; returns how many were bound.

    The image goes through the host's paste-params registry (``register_paste_params_button``, which
    also switches to our tab). The prompt does not: the host's paste handler returns a list of
    updates, and with a single registered field gradio puts that whole list into it (the prompt box
    showed ``[{'value': ..., '__type__': 'generic_update'}]`` on A1111, ``[{'__type__': 'update'}]``
    on Forge). Our own click handler (:func:`prompt_for_send`) fills the prompt box instead; it is
    added inside ``blocks`` (our tab's Blocks: the WebUI calls ``on_ui_tabs`` outside any Blocks and
    merges the tab's events into its page when it renders the tab).
    """
    from ..ui import compat

    targets = _targets(ui)
    if targets is None or not _SEND_TO.buttons:
        _hide_send_buttons()
        return 0
    infotext_utils = optional_module("modules.infotext_utils") or \
        importlib.import_module("modules.generation_parameters_copypaste")
    infotext_utils.add_paste_fields(TAB_ID, targets["image"], [])
    prompt = targets.get("prompt")
    bound = 0
    for tab, button in _SEND_TO.buttons:
        gallery = _SEND_TO.galleries.get(tab)
        if gallery is None:
            button.visible = False
            continue
        infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
            paste_button=button, tabname=TAB_ID, source_image_component=gallery))
        info = _SEND_TO.infotexts.get(tab)
        if prompt is not None and info is not None:
            with (blocks if blocks is not None else contextlib.nullcontext()):
                compat.listen(button.click, prompt_for_send, [info, info], [prompt],
                              js=_SELECTED_INDEX_JS.replace("{tab}", tab), queue=False, show_progress=False)
        bound += 1
    return bound


def _ui_module():
    """The module with ``build_tab`` / ``send_to_targets``: ``sadtalker_ext.ui.tab``."""
    return importlib.import_module("sadtalker_ext.ui.tab")


def on_ui_tabs():
    """The tab (``sadtalker_ext.ui.build_tab``); an error tab when it cannot be built. Never raises."""
    try:
        try:
            ui = _ui_module()
            result = ui.build_tab(get_host())
        except Exception as exc:
            log.exception("sd-talking-head: building the tab failed")
            _hide_send_buttons()
            return [error_tab(exc)]
        tabs = [result] if isinstance(result, tuple) else list(result)
        try:
            _connect_send_to(ui, tabs[0][0])
        except Exception:
            log.exception("sd-talking-head: 'Send to Talking Head' buttons are disabled")
            _hide_send_buttons()
        return tabs
    finally:
        _SEND_TO.clear()


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
           "error_tab", "api_credentials", "SETTINGS", "TAB_ID", "TAB_TITLE"]
