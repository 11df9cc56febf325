"""Double of ``modules/shared.py``: ``cmd_opts``, ``opts``, ``state``, ``sd_model`` and the option helpers.

``opts`` holds the built-in settings the extension's code paths touch, with the WebUI's defaults.
``double_reset()`` restores a fresh ``opts``/``state`` between tests.
"""
import os

from modules import options, paths_internal, shared_cmd_options, shared_state

cmd_opts = shared_cmd_options.cmd_opts
parallel_processing_allowed = True
demo = None
device = "cpu"

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML


def _builtin_options():
    out_dir = paths_internal.default_output_dir
    return {
        "samples_save": OptionInfo(True, "Always save all generated images"),
        "samples_format": OptionInfo("png", "File format for images"),
        "grid_save": OptionInfo(True, "Always save all generated image grids"),
        "return_grid": OptionInfo(True, "Show grid in gallery"),
        "return_mask": OptionInfo(False, "For inpainting, include the greyscale mask in results for web"),
        "return_mask_composite": OptionInfo(False, "For inpainting, include masked composite in results for web"),
        "save_mask": OptionInfo(False, "For inpainting, save a copy of the greyscale mask"),
        "save_mask_composite": OptionInfo(False, "For inpainting, save a masked composite"),
        "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files"),
        "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),
        "outdir_img2img_samples": OptionInfo(os.path.join(out_dir, "img2img-images"), "Output directory for img2img images"),
        "face_restoration": OptionInfo(False, "Restore faces"),
        "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model"),
        "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img"),
        "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
        "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
        "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface"),
        "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface"),
        "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
    }


opts = options.Options(_builtin_options(), set())
state = shared_state.State()
sd_model = object()  # "the loaded model"; processing only checks it is passed along
face_restorers = []


def double_reset():
    """Fresh settings, job state and face restorers (test-only)."""
    global opts, state, face_restorers
    opts = options.Options(_builtin_options(), set())
    state = shared_state.State()
    face_restorers = []
