"""Double of ``modules/processing.py``: the img2img processing object and ``process_images``.

The dataclass fields (names, order, defaults) are v1.10.1's. ``process_images`` does not run a
diffusion model: each output image is its init image (resized to ``width`` x ``height`` unless
"inpaint only masked" pastes the result back at the original size) with the repainted region -- the
mask's white pixels, or everything without a mask -- inverted, so tests can see where img2img acted.
Like the WebUI it applies/restores ``override_settings``, advances ``shared.state``, puts a grid
first when several images are made (``index_of_first_image`` = 1) and appends the greyscale masks
when ``opts.return_mask`` is on. Every call is recorded in ``double_calls``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from modules import shared

double_calls: list = []


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    prompt_for_display: str = None
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    overlay_images: list = None
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    ddim_discretize: str = None
    s_min_uncond: float = None
    s_churn: float = None
    s_tmax: float = None
    s_tmin: float = None
    s_noise: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    disable_extra_networks: bool = False
    firstpass_image: Any = None
    comments: dict = None

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    all_seeds: list = field(default=None, init=False)

    def __post_init__(self):
        self.comments = {}
        if self.styles is None:
            self.styles = []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = None
    latent_mask: Any = None
    force_task_id: str = None

    image_mask: Any = field(default=None, init=False)

    def __post_init__(self):
        super().__post_init__()
        # v1.10.1: mask_blur is a property whose setter sets both mask_blur_x and mask_blur_y
        if isinstance(self.mask_blur, int):
            self.mask_blur_x = self.mask_blur
            self.mask_blur_y = self.mask_blur
        self.image_mask = self.mask
        self.mask = None
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = shared.opts.initial_noise_multiplier


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None,
                 all_negative_prompts=None, all_seeds=None, all_subseeds=None, index_of_first_image=0,
                 infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.info = info
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.denoising_strength = getattr(p, 'denoising_strength', None)
        self.index_of_first_image = index_of_first_image
        self.all_seeds = all_seeds or p.all_seeds or [seed]
        self.infotexts = infotexts or [info] * len(images_list)


def get_fixed_seed(seed):
    if seed == '' or seed is None:
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except Exception:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return seed


def _repaint(p, image: Image.Image) -> Image.Image:
    mask = p.image_mask
    keep_size = mask is not None and p.inpaint_full_res
    base = image.convert("RGB")
    if not keep_size:
        base = base.resize((p.width, p.height))
    arr = np.asarray(base).copy()
    if mask is None:
        region = np.ones(arr.shape[:2], bool)
    else:
        region = np.asarray(mask.convert("L").resize(base.size)) > 127
        if p.inpainting_mask_invert:
            region = ~region
    if p.denoising_strength and p.denoising_strength > 0:
        arr[region] = 255 - arr[region]
    return Image.fromarray(arr)


def process_images(p: StableDiffusionProcessing) -> Processed:
    opts, state = shared.opts, shared.state
    stored_opts = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    try:
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
        double_calls.append(p)
        seed = get_fixed_seed(p.seed)
        total = p.batch_size * p.n_iter
        p.all_seeds = list(seed) if isinstance(seed, list) else [int(seed) + i for i in range(total)]
        if state.job_count == -1:
            state.job_count = p.n_iter
        images = list(p.init_images)
        if len(images) == 1 and p.batch_size > 1:
            images = images * p.batch_size
        output = []
        if not state.interrupted:
            state.sampling_steps = p.steps
            for img in images:
                output.append(_repaint(p, img))
                if p.image_mask is not None and opts.return_mask:
                    output.append(p.image_mask.convert("RGB"))
            state.sampling_step = p.steps
            state.nextjob()
        first = 0
        if len(output) >= 2 and opts.return_grid and not p.do_not_save_grid:
            output.insert(0, Image.new("RGB", (8, 8)))
            first = 1
        return Processed(p, output, seed=p.all_seeds[0], index_of_first_image=first)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
