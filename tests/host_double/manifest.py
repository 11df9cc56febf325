"""Names and call signatures of AUTOMATIC1111 WebUI v1.10.1 that the extension relies on.

Transcribed from the v1.10.1 sources (modules/script_callbacks.py, shared.py, shared_state.py,
options.py, processing.py, face_restoration.py, infotext_utils.py, ui_loadsave.py, call_queue.py, progress.py,
paths.py, launch_utils.py). Each entry maps ``"module"`` to ``{"Name" or "Class.method": params}``
where ``params`` is the list of parameter names in order (``"*name"`` = keyword-only; ``None`` =
an attribute whose existence is checked). ``check(module, spec)`` compares a module object with
its entry; the double is checked always, a real WebUI when importable.
"""
from __future__ import annotations

import inspect

_P = "prompt"
_IMG2IMG_INIT = [
    "sd_model", "outpath_samples", "outpath_grids", _P, "prompt_for_display", "negative_prompt",
    "styles", "seed", "subseed", "subseed_strength", "seed_resize_from_h", "seed_resize_from_w",
    "seed_enable_extras", "sampler_name", "scheduler", "batch_size", "n_iter", "steps", "cfg_scale",
    "width", "height", "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid",
    "extra_generation_params", "overlay_images", "eta", "do_not_reload_embeddings",
    "denoising_strength", "ddim_discretize", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise",
    "override_settings", "override_settings_restore_afterwards", "sampler_index",
    "refiner_checkpoint", "refiner_switch_at", "disable_extra_networks", "firstpass_image",
    "comments",
    # StableDiffusionProcessingImg2Img's own fields
    "init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x", "mask_blur_y",
    "mask_blur", "mask_round", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
    "inpainting_mask_invert", "initial_noise_multiplier", "latent_mask", "force_task_id",
]

SIGNATURES = {
    "modules.script_callbacks": {
        "on_app_started": ["callback", "*name"],
        "on_ui_tabs": ["callback", "*name"],
        "on_ui_settings": ["callback", "*name"],
        "on_after_component": ["callback", "*name"],
        "on_before_component": ["callback", "*name"],
        "on_before_ui": ["callback", "*name"],
        "on_script_unloaded": ["callback", "*name"],
        "app_started_callback": ["demo", "app"],
        "ui_tabs_callback": [],
        "ui_settings_callback": [],
        "after_component_callback": ["component", "**kwargs"],
        "callback_map": None,
    },
    "modules.shared": {
        "opts": None, "state": None, "cmd_opts": None, "sd_model": None, "face_restorers": None,
        "OptionInfo": None, "options_section": None, "OptionHTML": None,
    },
    "modules.shared_state": {
        "State.begin": ["self", "job"],
        "State.end": ["self"],
        "State.interrupt": ["self"],
        "State.skip": ["self"],
        "State.nextjob": ["self"],
        "State.set_current_image": ["self"],
        "State.assign_current_image": ["self", "image"],
        "State.dict": ["self"],
        "State.interrupted": None, "State.skipped": None, "State.stopping_generation": None,
        "State.job": None, "State.job_no": None, "State.job_count": None, "State.job_timestamp": None,
        "State.sampling_step": None, "State.sampling_steps": None, "State.current_image": None,
        "State.id_live_preview": None, "State.textinfo": None, "State.time_start": None,
    },
    "modules.options": {
        "OptionInfo.__init__": ["self", "default", "label", "component", "component_args", "onchange",
                                "section", "refresh", "comment_before", "comment_after", "infotext",
                                "restrict_api", "category_id"],
        "OptionInfo.info": ["self", "info"],
        "OptionInfo.needs_reload_ui": ["self"],
        "OptionInfo.needs_restart": ["self"],
        "options_section": ["section_identifier", "options_dict"],
        "Options.add_option": ["self", "key", "info"],
        "Options.set": ["self", "key", "value", "is_api", "run_callbacks"],
        "Options.onchange": ["self", "key", "func", "call"],
    },
    "modules.processing": {
        "StableDiffusionProcessingImg2Img": _IMG2IMG_INIT,
        "process_images": ["p"],
        "Processed.__init__": ["self", "p", "images_list", "seed", "info", "subseed", "all_prompts",
                               "all_negative_prompts", "all_seeds", "all_subseeds",
                               "index_of_first_image", "infotexts", "comments"],
        "get_fixed_seed": ["seed"],
    },
    "modules.face_restoration": {"restore_faces": ["np_image"]},
    "modules.infotext_utils": {
        "ParamBinding.__init__": ["self", "paste_button", "tabname", "source_text_component",
                                  "source_image_component", "source_tabname",
                                  "override_settings_component", "paste_field_names"],
        "add_paste_fields": ["tabname", "init_img", "fields", "override_settings_component"],
        "register_paste_params_button": ["binding"],
        "connect_paste_params_buttons": [],
        "paste_fields": None, "registered_param_bindings": None,
    },
    "modules.ui_loadsave": {
        "UiLoadsave.__init__": ["self", "filename"], "UiLoadsave.add_component": ["self", "path", "x"],
        "UiLoadsave.add_block": ["self", "x", "path"],
    },
    "modules.call_queue": {"queue_lock": None, "wrap_gradio_gpu_call": ["func", "extra_outputs"]},
    "modules.progress": {
        "start_task": ["id_task"], "finish_task": ["id_task"], "add_task_to_queue": ["id_job"],
        "current_task": None,
    },
    "modules.paths": {"models_path": None, "data_path": None, "script_path": None},
    "modules.launch_utils": {"is_installed": ["package"], "run_pip": ["command", "desc", "live"]},
}


def _params(obj) -> list:
    out = []
    for p in inspect.signature(obj).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            out.append("*" + p.name)
        elif p.kind is p.VAR_KEYWORD:
            out.append("**" + p.name)
        elif p.kind is p.VAR_POSITIONAL:
            out.append("*args:" + p.name)
        else:
            out.append(p.name)
    return out


def check(module, spec: dict) -> list:
    """Differences between ``module`` and its SIGNATURES entry, as readable strings (empty: match)."""
    problems = []
    for name, params in spec.items():
        obj = module
        try:
            for part in name.split("."):
                obj = getattr(obj, part) if not inspect.isclass(obj) else inspect.getattr_static(obj, part)
        except AttributeError:
            problems.append(f"{module.__name__}.{name} is missing")
            continue
        if params is None:
            continue
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        got = _params(obj)
        if inspect.isclass(obj):
            got = [g for g in got if g != "self"]
        if got != params:
            problems.append(f"{module.__name__}.{name}{tuple(got)} != {tuple(params)}")
    return problems
