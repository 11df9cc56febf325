"""The WebUI adapter (sadtalker_ext/host/a1111.py, scripts/talking_head.py, install.py host mode)
against tests/host_double, a double of AUTOMATIC1111 v1.10.1's ``modules`` surface.

The double is checked against the transcribed v1.10.1 names (host_double/manifest.py) always, and
against a real WebUI when SD_WEBUI_DIR points at an installed checkout (skipped otherwise).
"""
from __future__ import annotations

import importlib
import json
import os
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio.decode import AudioClip
from sadtalker_ext.engines.base import FrameChunk
from sadtalker_ext.errors import GenerationInterrupted, InputError
from sadtalker_ext.host.base import Img2ImgRequest
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.refine.params import RefineParams

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "host_double"
HOST_OWNED = {"torch", "torchvision", "gradio", "numpy", "pydantic", "fastapi"}


def _drop_double_modules():
    for name in list(sys.modules):
        if name == "modules" or name.startswith("modules.") or name in ("launch", "manifest"):
            del sys.modules[name]


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """A fresh double of the WebUI importable as ``modules``; yields (shared, a1111 module)."""
    data = tmp_path / "webui-data"
    data.mkdir()
    monkeypatch.setenv("HOST_DOUBLE_DATA_DIR", str(data))
    _drop_double_modules()
    sys.path.insert(0, str(DOUBLE))
    from modules import infotext_utils, script_callbacks, shared

    import sadtalker_ext.host.a1111 as a1111
    from sadtalker_ext.models import locate

    monkeypatch.setattr(locate, "DOWNLOAD_HINT", locate.DOWNLOAD_HINT)  # register() changes it
    script_callbacks.clear_callbacks()
    infotext_utils.reset()
    a1111._HOST = None
    a1111.release_models()
    try:
        yield shared, a1111
    finally:
        a1111._HOST = None
        a1111.release_models()
        sys.path.remove(str(DOUBLE))
        _drop_double_modules()


class FakeEngine:
    """Renders ``chunk_size`` grey frames per chunk; records chunks and what it saw of the host."""

    name = "fake"

    def __init__(self, interrupt_at: int | None = None, size: int = 64):
        self.chunks = 0
        self.interrupt_at = interrupt_at
        self.size = size
        self.lock_held = []
        self.jobs = []

    def prepare(self, image, options):
        return image

    def output_size(self, source):
        return (self.size, self.size)

    def motion(self, source, ctx):
        return None

    def frames(self, source, motion, ctx):
        from modules import call_queue, shared

        n, step = ctx.num_frames, ctx.options.chunk_size
        for start in range(0, n, step):
            self.lock_held.append(call_queue.queue_lock.locked())
            self.jobs.append(shared.state.job)
            if self.interrupt_at is not None and self.chunks == self.interrupt_at:
                shared.state.interrupt()  # the user presses Interrupt while this chunk renders
            self.chunks += 1
            k = min(step, n - start)
            frames = np.full((k, self.size, self.size, 3), 40 + 4 * self.chunks, np.uint8)
            yield FrameChunk(start=start, frames=frames)


def _silence(seconds=1.0, rate=16000):
    return AudioClip(np.zeros(int(seconds * rate), np.float32), rate, "silence")


# ------------------------------------------------------------------------------------------------
# the double itself
# ------------------------------------------------------------------------------------------------

def test_double_matches_v1_10_1_names(webui):
    import manifest

    problems = []
    for module_name, spec in manifest.SIGNATURES.items():
        problems += manifest.check(importlib.import_module(module_name), spec)
    assert problems == []
    # the checker does catch a drifted double
    from modules import processing
    assert manifest.check(processing, {"process_images": ["p", "extra"]}) != []
    assert manifest.check(processing, {"nope": None}) == ["modules.processing.nope is missing"]


@pytest.mark.skipif(not os.environ.get("SD_WEBUI_DIR"),
                    reason="set SD_WEBUI_DIR to an installed AUTOMATIC1111 WebUI to compare the double with it")
def test_real_webui_matches_v1_10_1_names():
    script = ("import importlib, json, sys; sys.path.insert(0, sys.argv[1]); import manifest; "
              "out = [];\n"
              "for m, spec in manifest.SIGNATURES.items(): out += manifest.check(importlib.import_module(m), spec)\n"
              "print(json.dumps(out))")
    webui_dir = os.environ["SD_WEBUI_DIR"]
    proc = subprocess.run([sys.executable, "-c", script, str(DOUBLE)], cwd=webui_dir, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": webui_dir})
    if proc.returncode != 0:
        pytest.skip(f"the WebUI at {webui_dir} does not import here: {proc.stderr.strip().splitlines()[-1:]}")
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------------------------------
# settings, folders, flags
# ------------------------------------------------------------------------------------------------

def test_settings_section_and_folders(webui):
    shared, a1111 = webui
    from modules import paths

    from modules.options import categories

    a1111.on_ui_settings()
    labels = shared.opts.data_labels
    for key, (default, label, _) in a1111.SETTINGS.items():
        assert labels[key].section == ("talking_head", "Talking Head")
        # the settings page's heading (Options.dumpjson): our category, not "Uncategorized"
        assert categories.mapping[labels[key].category_id].label == "Talking Head"
        assert labels[key].default == default and labels[key].label == label
        assert shared.opts.data[key] == default
    assert labels["talking_head_default_engine"].component_args == {"choices": ["auto", "lite", "sadtalker"]}
    # one default with the CLI and the API (it was fp16 here, fp32 there)
    assert labels["talking_head_precision"].default == "fp32"

    host = a1111.get_host()
    assert host.setting("talking_head_default_engine") == "auto"
    assert host.setting("no_such_setting", 7) == 7
    assert host.output_dir() == Path(paths.data_path) / "outputs" / "talking-head"
    assert host.output_dir().is_dir()
    assert host.models_dir() == Path(paths.models_path) / "SadTalker"

    shared.opts.talking_head_output_dir = "vids"
    shared.opts.talking_head_models_dir = "/srv/models/th"
    assert host.output_dir() == Path(paths.data_path) / "vids"
    assert host.models_dir() == Path("/srv/models/th")
    shared.cmd_opts.talking_head_models_dir = "/flag/dir"  # --talking-head-models-dir wins
    assert host.models_dir() == Path("/flag/dir")


def test_preload_adds_models_dir_flag(webui):
    from modules import cmd_args

    preload = runpy.run_path(str(REPO / "preload.py"))
    preload["preload"](cmd_args.parser)
    args = cmd_args.parser.parse_args(["--talking-head-models-dir", "/m"])
    assert args.talking_head_models_dir == "/m"


def test_api_credentials_from_flags(webui):
    shared, a1111 = webui
    assert a1111.api_credentials() is None
    shared.cmd_opts.gradio_auth = "ui:pw"
    assert a1111.api_credentials() == {"ui": "pw"}  # never more open than the UI
    shared.cmd_opts.api_auth = "alice:s3:cret, bob:x"
    assert a1111.api_credentials() == {"alice": "s3:cret", "bob": "x"}


# ------------------------------------------------------------------------------------------------
# jobs: lock, progress, interrupt, outputs, engine cache
# ------------------------------------------------------------------------------------------------

def test_job_holds_queue_lock_and_reports_progress(webui, monkeypatch):
    shared, a1111 = webui
    from modules import call_queue, progress
    from sadtalker_ext.jobs import run_job

    engine = FakeEngine()
    host = a1111.get_host()
    monkeypatch.setattr(type(host), "engine_for", lambda self, options: engine)
    seen = []
    original = host.progress

    def spy(done, total, text="", preview=None):
        original(done, total, text, preview)
        st = shared.state
        seen.append((done, total, st.sampling_step, st.sampling_steps, st.textinfo, st.current_image,
                     st.double_progress(), progress.current_task, call_queue.queue_lock.locked()))
    monkeypatch.setattr(host, "progress", spy)

    job = run_job(host, np.full((64, 64, 3), 128, np.uint8), _silence(1.0),
                  GenerateOptions(engine="lite", chunk_size=5))
    assert engine.chunks == 5 and all(engine.lock_held) and set(engine.jobs) == {"talking-head"}
    # which step runs before the first frame, then frames
    assert [(s[0], s[4]) for s in seen[:2]] == [(0, "Talking Head: fake: finding the face"),
                                                (0, "Talking Head: fake: analysing the speech")]
    seen = seen[2:]
    assert [s[0] for s in seen] == [5, 10, 15, 20, 25]
    for done, total, step, steps, text, image, frac, task, locked in seen:
        # 25 frames as 26 steps: /sdapi/v1/progress adds 0.01 and its ETA must not turn negative
        assert (step, steps) == (done, 26) and f"{done}/25" in text and locked
        assert image is not None and image.size == (64, 64)
        assert frac == pytest.approx(done / 26)
        assert task is not None and task.startswith("task(talking-head-")
    assert shared.state.double_events == [("begin", "talking-head"), ("end", "talking-head")]
    assert not call_queue.queue_lock.locked()
    assert progress.current_task is None and seen[0][7] in progress.finished_tasks
    assert job.path.parent == host.output_dir() and job.path.is_file() and job.sidecar.is_file()
    assert json.loads(job.sidecar.read_text())["frames"] == 25


def test_job_waits_for_a_running_txt2img(webui, monkeypatch):
    shared, a1111 = webui
    from modules import call_queue
    from sadtalker_ext.jobs import run_job

    host = a1111.get_host()
    engine = FakeEngine()
    monkeypatch.setattr(type(host), "engine_for", lambda self, options: engine)
    call_queue.queue_lock.acquire()  # txt2img is running
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run_job(host, np.zeros((64, 64, 3), np.uint8), _silence(0.4),
                                                      GenerateOptions(chunk_size=5)), done.set()))
    worker.start()
    try:
        assert not done.wait(0.5) and engine.chunks == 0  # blocked behind the WebUI's job
    finally:
        call_queue.queue_lock.release()
    worker.join(30)
    assert done.is_set() and engine.chunks == 2


def test_interrupt_stops_within_one_chunk_and_leaves_nothing(webui, monkeypatch):
    shared, a1111 = webui
    from modules import call_queue
    from sadtalker_ext.jobs import run_job

    host = a1111.get_host()
    engine = FakeEngine(interrupt_at=1)
    monkeypatch.setattr(type(host), "engine_for", lambda self, options: engine)
    with pytest.raises(GenerationInterrupted):
        run_job(host, np.zeros((64, 64, 3), np.uint8), _silence(2.0), GenerateOptions(chunk_size=5))
    assert engine.chunks == 2  # interrupted during chunk 1: stopped right after it (of 10)
    assert list(host.output_dir().iterdir()) == []  # no video, no sidecar, no partial file
    assert not call_queue.queue_lock.locked()
    assert shared.state.double_events[-1] == ("end", "talking-head")


def test_engine_cache_release_and_cuda_cleanup(webui, monkeypatch):
    shared, a1111 = webui
    a1111.on_ui_settings()
    host = a1111.get_host()
    opts = GenerateOptions(engine="lite")
    first = host.engine_for(opts)
    assert host.engine_for(opts) is first and first.name == "lite"
    a1111.release_models()
    assert host.engine_for(opts) is not first

    calls = {"release": 0, "cuda": 0}
    monkeypatch.setattr(a1111, "release_models", lambda: calls.__setitem__("release", calls["release"] + 1))
    monkeypatch.setattr(a1111, "free_cuda_cache", lambda: calls.__setitem__("cuda", calls["cuda"] + 1))
    with pytest.raises(RuntimeError):
        with host.job("talking-head", 10):
            raise RuntimeError("CUDA out of memory")
    assert calls == {"release": 0, "cuda": 1}  # after an error: empty the CUDA cache
    shared.opts.talking_head_keep_models_loaded = False
    assert host.engine_for(opts) is not host.engine_for(opts)  # no cache
    with host.job("talking-head", 10):
        pass
    assert calls["release"] == 1  # models released after every job


# ------------------------------------------------------------------------------------------------
# img2img and face restoration
# ------------------------------------------------------------------------------------------------

def _frames(n=3, h=60, w=68, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_img2img_passes_the_webui_arguments(webui):
    shared, a1111 = webui
    from modules import processing

    images = _frames()
    mask = np.zeros((3, 60, 68), np.uint8)
    mask[:, 20:40, 10:50] = 255
    req = Img2ImgRequest(images=images, mask=mask,
                         params=RefineParams(prompt="portrait of an astronaut", negative_prompt="blurry",
                                             denoising_strength=0.35, cfg_scale=5.5, steps=12, sampler="DPM++ 2M",
                                             seed=1234, mask_blur=6, padding=40))
    out = a1111.get_host().img2img(req)
    assert len(processing.double_calls) == 1  # same mask: one batch
    p = processing.double_calls[0]
    assert isinstance(p, processing.StableDiffusionProcessingImg2Img)
    assert p.sd_model is shared.sd_model
    assert [im.size for im in p.init_images] == [(68, 60)] * 3
    assert np.array_equal(np.asarray(p.init_images[1]), images[1])
    assert p.image_mask.mode == "L" and np.array_equal(np.asarray(p.image_mask), mask[0])
    assert (p.denoising_strength, p.cfg_scale, p.steps, p.sampler_name) == (0.35, 5.5, 12, "DPM++ 2M")
    assert p.scheduler == "Automatic"  # None makes the host log "Sampler Scheduler autocorrection" per call
    assert p.seed == [1234] * 3 and p.batch_size == 3 and p.n_iter == 1  # one seed for every frame
    assert (p.width, p.height) == (72, 64)  # rounded up to multiples of 8
    assert (p.mask_blur_x, p.mask_blur_y) == (6, 6)
    assert p.inpaint_full_res is True and p.inpaint_full_res_padding == 40 and p.inpainting_fill == 1
    assert p.do_not_save_samples and p.do_not_save_grid
    assert (p.prompt, p.negative_prompt) == ("portrait of an astronaut", "blurry")
    # the double inverts what img2img repaints: inside the mask only, output at the input size
    assert out.shape == images.shape and out.dtype == np.uint8
    inside = mask.astype(bool)
    assert np.array_equal(out[inside], 255 - images[inside])
    assert np.array_equal(out[~inside], images[~inside])


def test_img2img_batches_masks_results_and_interrupt(webui):
    shared, a1111 = webui
    from modules import processing

    host = a1111.get_host()
    images = _frames(5)
    masks = np.zeros((5, 60, 68), np.uint8)
    for i in range(5):
        masks[i, 10 + i:30 + i, 10:30] = 255
    shared.opts.return_mask = True  # the WebUI then interleaves the masks with the results
    out = host.img2img(Img2ImgRequest(images=images, mask=masks, params=RefineParams(seed=-1), max_batch=2))
    assert len(processing.double_calls) == 5  # a different mask per frame: one call each
    seeds = {p.seed[0] for p in processing.double_calls}
    assert len(seeds) == 1  # seed -1: one random seed shared by all frames
    for i in range(5):
        inside = masks[i].astype(bool)
        assert np.array_equal(out[i][inside], 255 - images[i][inside])
        assert np.array_equal(out[i][~inside], images[i][~inside])

    processing.double_calls.clear()
    out = host.img2img(Img2ImgRequest(images=images, max_batch=2, inpaint_full_res=False))
    assert [p.batch_size for p in processing.double_calls] == [2, 2, 1]
    assert out.shape == images.shape  # resized back from 72x64
    with pytest.raises(InputError):
        host.img2img(Img2ImgRequest(images=images.astype(np.float32)))
    shared.state.interrupt()
    with pytest.raises(GenerationInterrupted):
        host.img2img(Img2ImgRequest(images=images))


def test_native_size_of_the_loaded_model(webui, monkeypatch):
    import types

    shared, a1111 = webui
    host = a1111.get_host()
    assert host.sd_native_size() == 512
    monkeypatch.setattr(shared, "sd_model", types.SimpleNamespace(is_sdxl=True, is_sd2=False))
    assert host.sd_native_size() == 1024
    monkeypatch.setattr(shared, "sd_model", types.SimpleNamespace(is_sdxl=False, is_sd2=True))
    assert host.sd_native_size() == 768


def test_restore_faces_uses_the_configured_restorer(webui):
    shared, a1111 = webui
    from modules import face_restoration

    class PlusOne(face_restoration.FaceRestoration):
        def name(self):
            return "CodeFormer"

        def restore(self, np_image):
            return np_image + 1

    img = _frames(1)[0] // 2
    assert np.array_equal(a1111.get_host().restore_faces(img), img)  # none configured: unchanged
    shared.face_restorers.append(PlusOne())
    assert np.array_equal(a1111.get_host().restore_faces(img), img + 1)


# ------------------------------------------------------------------------------------------------
# scripts/talking_head.py: the tab, its error fallback, send-to
# ------------------------------------------------------------------------------------------------

def _load_script():
    runpy.run_path(str(REPO / "scripts" / "talking_head.py"), run_name="talking_head_script")


def _tab_html(blocks) -> str:
    return " ".join(str(getattr(b, "value", "")) for b in blocks.blocks.values())


def test_script_registers_every_callback(webui):
    from modules import script_callbacks

    _load_script()
    cm = script_callbacks.callback_map
    assert [len(cm[k]) for k in ("callbacks_ui_tabs", "callbacks_ui_settings", "callbacks_app_started",
                                 "callbacks_after_component")] == [1, 1, 1, 1]
    script_callbacks.ui_settings_callback()
    from modules import shared
    assert "talking_head_output_dir" in shared.opts.data_labels
    assert script_callbacks.double_errors == []


def test_missing_model_messages_point_to_the_models_panel(webui, tmp_path):
    """Inside the WebUI a missing-model error (HTTP 503 / the tab) names the tab's download button, not
    a command line the WebUI user does not have."""
    from sadtalker_ext.errors import CheckpointError
    from sadtalker_ext.lipsync.stage import Wav2LipStage
    from sadtalker_ext.models import locate

    _load_script()
    for make in (lambda: Wav2LipStage(None),
                 lambda: locate.require_file("wav2lip_gan.pth", checkpoints=tmp_path, environ={}, repo_dir=None)):
        with pytest.raises(CheckpointError) as info:
            make()
        assert "'Download wav2lip files' in the Models panel of the Talking Head tab" in info.value.message
        assert "python -m" not in info.value.message and "models download" not in info.value.message


def test_tab_shows_the_error_when_the_ui_cannot_be_imported(webui, monkeypatch):
    pytest.importorskip("gradio")
    import sadtalker_ext
    from modules import script_callbacks

    monkeypatch.delattr(sadtalker_ext, "ui", raising=False)
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui", None)  # "import sadtalker_ext.ui" fails
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.tab", None)  # also when an earlier test imported it
    _load_script()
    tabs = script_callbacks.ui_tabs_callback()
    assert script_callbacks.double_errors == []
    assert [t[1:] for t in tabs] == [("Talking Head", "talking_head")]
    text = _tab_html(tabs[0][0])
    assert "ModuleNotFoundError" in text and "sadtalker_ext.ui" in text and "Fix:" in text and "reinstall" in text


def test_tab_shows_a_missing_package_and_its_fix(webui, monkeypatch):
    pytest.importorskip("gradio")
    import types

    import sadtalker_ext.ui
    from modules import script_callbacks

    fake = types.ModuleType("sadtalker_ext.ui.tab")

    def build_tab(host):
        raise ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe")
    fake.build_tab = build_tab
    monkeypatch.setattr(sadtalker_ext.ui, "tab", fake, raising=False)  # the adapter imports the tab's module
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.tab", fake)
    _load_script()
    tabs = script_callbacks.ui_tabs_callback()
    text = _tab_html(tabs[0][0])
    # the release install.py picks for this venv's protobuf (both WebUIs pin 3.20.0: 0.10.9)
    from importlib.metadata import version
    release = "0.10.9" if int(version("protobuf").split(".")[0]) < 4 else "0.10.21"
    assert "mediapipe" in text and f"pip install --no-deps mediapipe=={release} absl-py" in text
    from sadtalker_ext import frontend
    assert frontend.mediapipe_pip_args("3.20.0").startswith("--no-deps mediapipe==0.10.9 ")
    assert frontend.mediapipe_pip_args("4.25.9").startswith("--no-deps mediapipe==0.10.21 ")


def test_tab_appears_even_when_the_adapter_cannot_be_imported(webui, monkeypatch):
    pytest.importorskip("gradio")
    import sadtalker_ext.host
    from modules import script_callbacks

    monkeypatch.delattr(sadtalker_ext.host, "a1111", raising=False)
    monkeypatch.setitem(sys.modules, "sadtalker_ext.host.a1111", None)
    _load_script()
    tabs = script_callbacks.ui_tabs_callback()
    assert [t[1:] for t in tabs] == [("Talking Head", "talking_head")]
    assert "could not start" in _tab_html(tabs[0][0])


def test_send_to_talking_head_buttons(webui, monkeypatch):
    gr = pytest.importorskip("gradio")
    import types

    import sadtalker_ext.ui
    from modules import infotext_utils, script_callbacks

    built = {}
    fake = types.ModuleType("sadtalker_ext.ui.tab")

    def build_tab(host):
        with gr.Blocks() as blocks:
            built["image"] = gr.Image(label="Source image")
            built["prompt"] = gr.Textbox(label="Refinement prompt")
        return blocks, "Talking Head", "talking_head"
    fake.build_tab = build_tab
    fake.send_to_targets = lambda: {"image": built["image"], "prompt": built["prompt"]}
    monkeypatch.setattr(sadtalker_ext.ui, "tab", fake, raising=False)  # the adapter imports the tab's module
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.tab", fake)
    _load_script()

    # what create_ui does for the txt2img and img2img results panels, with after_component hooks
    made = {}
    # what create_ui does: each results panel in its tab's own Blocks, then on_ui_tabs outside any
    # Blocks, then every tab rendered into the page, then the paste buttons connected
    interfaces = []
    for tab in ("txt2img", "img2img"):
        with gr.Blocks() as interface:
            for elem_id, make in ((f"{tab}_gallery", lambda: gr.Gallery()),
                                  (f"{tab}_send_to_extras", lambda: gr.Button("x")),
                                  (f"generation_info_{tab}", lambda: gr.Textbox(visible=False))):
                made[elem_id] = comp = make()
                comp.elem_id = elem_id
                script_callbacks.after_component_callback(comp, elem_id=elem_id)
        interfaces.append(interface)
    tabs = script_callbacks.ui_tabs_callback()
    with gr.Blocks() as demo:
        for interface in interfaces + [tabs[0][0]]:
            interface.render()
        infotext_utils.connect_paste_params_buttons()
    assert script_callbacks.double_errors == []
    assert tabs[0][1:] == ("Talking Head", "talking_head")
    conns = infotext_utils.double_connections
    assert len(conns) == 2
    info = {"prompt": "a grid's prompt", "all_prompts": ["an astronaut, (helmet:1.2)", "a cat\nin space"],
            "infotexts": ["grid", "an astronaut, (helmet:1.2)\nNegative prompt: blurry\nSteps: 20, Seed: 1",
                          "a cat\nin space\nSteps: 20, Seed: 2"], "index_of_first_image": 1}
    for tab, conn in zip(("txt2img", "img2img"), conns):
        assert conn["button"].elem_id == f"{tab}_send_to_talking_head"
        assert conn["image"] == (made[f"{tab}_gallery"], built["image"])
        # no text paste field: the host's paste handler would put its whole list of updates into a single
        # field ("[{'value': ..., '__type__': 'generic_update'}]" on A1111, "[{'__type__': 'update'}]" on Forge)
        assert conn["text"] is None
        assert conn["js"] == "switch_to_talking_head"
        # our own handler fills the prompt box with the prompt of the selected image, as a plain string
        fns = _handlers(demo, conn["button"], built["prompt"])
        assert len(fns) == 1
        fn, inputs, js = fns[0]
        assert inputs == [made[f"generation_info_{tab}"]] * 2 and f"'{tab}_gallery'" in js
        assert fn(json.dumps(info), "-1") == "an astronaut, (helmet:1.2)"  # nothing selected: the first image
        assert fn(json.dumps(info), "0") == "an astronaut, (helmet:1.2)"   # the grid
        assert fn(json.dumps(info), "2") == "a cat\nin space"
        assert fn("", "-1") == "" and fn("not json", "x") == ""
    js = (REPO / "javascript" / "talking_head.js").read_text()
    assert "function switch_to_talking_head(" in js and "function recalculate_prompts_talking_head(" in js
    params = infotext_utils.parse_generation_parameters(
        sadtalker_ext.host.a1111_tab._first_infotext(json.dumps({
            "infotexts": ["grid", "an astronaut\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1"],
            "index_of_first_image": 1})))
    assert params["Prompt"] == "an astronaut" and params["Negative prompt"] == "blurry"


def _handlers(demo, button, output):
    """(fn, input components, js) of every event of ``button`` that writes ``output`` (gradio 3 and 4)."""
    out = []
    for dep, block_fn in zip(demo.dependencies, demo.fns):
        targets = [t[0] if isinstance(t, (tuple, list)) else t for t in dep["targets"]]
        if button._id in targets and output._id in dep["outputs"]:
            inputs = [demo.blocks[i] for i in dep["inputs"]]
            out.append((block_fn.fn, inputs, dep.get("js") or ""))
    return out


def test_send_to_buttons_hidden_without_targets(webui, monkeypatch):
    gr = pytest.importorskip("gradio")
    import types

    import sadtalker_ext.ui
    from modules import infotext_utils, script_callbacks

    fake = types.ModuleType("sadtalker_ext.ui.tab")
    fake.build_tab = lambda host: (gr.Blocks(), "Talking Head", "talking_head")
    monkeypatch.setattr(sadtalker_ext.ui, "tab", fake, raising=False)  # the adapter imports the tab's module
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.tab", fake)
    _load_script()
    with gr.Blocks() as demo:
        button = gr.Button("x")
        script_callbacks.after_component_callback(button, elem_id="txt2img_send_to_extras")
        script_callbacks.ui_tabs_callback()
    ours = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "txt2img_send_to_talking_head"]
    assert len(ours) == 1 and ours[0].visible is False  # no target in the tab: the button is hidden
    assert infotext_utils.registered_param_bindings == []  # nothing bound: connect cannot KeyError
    infotext_utils.connect_paste_params_buttons()


# ------------------------------------------------------------------------------------------------
# install.py inside the WebUI
# ------------------------------------------------------------------------------------------------

def _pip_requests(log: Path):
    if not log.exists():
        return []
    return [json.loads(line)["command"] for line in log.read_text().splitlines()]


def _requirement_names(commands):
    import re
    names = []
    for cmd in commands:
        assert re.search(r'-c "[^"]+"', cmd), cmd  # every pip call is pinned to the venv as found
        for req in re.findall(r'"([^"]+)"', re.sub(r'-c "[^"]+"', "", cmd)):
            names.append(re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower())
    return names


def test_install_in_webui_installs_only_missing_packages(tmp_path):
    log = tmp_path / "pip.jsonl"
    missing = "av,scipy,silero_vad,torch,torchvision,gradio,numpy,pydantic,fastapi"
    env = {**os.environ, "PYTHONPATH": str(DOUBLE), "HOST_DOUBLE_MISSING": missing, "HOST_DOUBLE_ONLY_MISSING": "1",
           "HOST_DOUBLE_PIP_LOG": str(log), "HOST_DOUBLE_DATA_DIR": str(tmp_path)}
    # the WebUI runs `python install.py` in a subprocess with its folder on PYTHONPATH
    proc = subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    commands = _pip_requests(log)
    assert sorted(_requirement_names(commands)) == ["av", "scipy", "silero-vad"]
    assert any("--no-deps" in c and "silero-vad" in c for c in commands)
    assert not HOST_OWNED & set(_requirement_names(commands))

    log.unlink()
    env["HOST_DOUBLE_MISSING"] = ""
    proc = subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _pip_requests(log) == []  # everything present: nothing installed


def test_install_imported_in_process_uses_launch(webui, monkeypatch):
    import launch

    monkeypatch.setenv("HOST_DOUBLE_MISSING", "soundfile,torch,numpy")
    monkeypatch.setenv("HOST_DOUBLE_ONLY_MISSING", "1")
    launch.double_pip_calls.clear()
    runpy.run_path(str(REPO / "install.py"), run_name="install")
    names = _requirement_names(c for c, _ in launch.double_pip_calls)
    assert names == ["soundfile"]


def test_the_real_tab_builds_inside_the_webui(webui):
    gr = pytest.importorskip("gradio")
    from modules import infotext_utils, script_callbacks

    _load_script()
    with gr.Blocks():
        for tab in ("txt2img", "img2img"):
            for elem_id, make in ((f"{tab}_gallery", gr.Gallery), (f"{tab}_send_to_extras", gr.Button),
                                  (f"generation_info_{tab}", lambda: gr.Textbox(visible=False))):
                comp = make()
                comp.elem_id = elem_id
                script_callbacks.after_component_callback(comp, elem_id=elem_id)
        tabs = script_callbacks.ui_tabs_callback()
        infotext_utils.connect_paste_params_buttons()
    assert script_callbacks.double_errors == []
    blocks, title, elem_id = tabs[0]
    assert (title, elem_id) == ("Talking Head", "talking_head")
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert "th_load_error" not in ids and "talking_head_error" not in _tab_html(blocks)
    assert [c["js"] for c in infotext_utils.double_connections] == ["switch_to_talking_head"] * 2


def test_lipsync_restoration_uses_the_host_restorer(monkeypatch):
    """With --restore set, run_job hands the host's restore_faces to the lip-sync stage."""
    from sadtalker_ext import jobs
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.options import GenerateOptions

    class RestoringHost(LocalHost):
        provides_face_restoration = True

    host = RestoringHost()
    assert jobs._host_restorer(host, GenerateOptions(restore="gfpgan")) == host.restore_faces
    assert jobs._host_restorer(host, GenerateOptions(restore="none")) is None
    assert jobs._host_restorer(LocalHost(), GenerateOptions(restore="gfpgan")) is None
    seen = {}

    def fake_generate(*a, **k):
        seen.update(k)
        raise RuntimeError("stop here")
    monkeypatch.setattr(jobs, "generate", fake_generate)
    with pytest.raises(RuntimeError):
        jobs.run_job(host, None, None, GenerateOptions(restore="codeformer"), out=host.output_dir() / "x.mp4")
    assert seen["restorer"] == host.restore_faces


def _build_real_tab_in_webui(gr):
    from modules import infotext_utils, script_callbacks

    _load_script()
    with gr.Blocks():
        for tab in ("txt2img", "img2img"):
            for elem_id, make in ((f"{tab}_gallery", gr.Gallery), (f"{tab}_send_to_extras", gr.Button),
                                  (f"generation_info_{tab}", lambda: gr.Textbox(visible=False))):
                comp = make()
                comp.elem_id = elem_id
                script_callbacks.after_component_callback(comp, elem_id=elem_id)
        tabs = script_callbacks.ui_tabs_callback()
        infotext_utils.connect_paste_params_buttons()
    assert script_callbacks.double_errors == []
    return tabs[0][0]


def _component(block, elem_id):
    """The component ``elem_id`` under ``block`` (a tab built inside the WebUI's Blocks registers its
    components with the outer Blocks, so its own ``blocks`` dict is not complete)."""
    if getattr(block, "elem_id", None) == elem_id:
        return block
    for child in getattr(block, "children", None) or []:
        found = _component(child, elem_id)
        if found is not None:
            return found
    return None


def test_default_engine_setting_survives_the_webuis_ui_config(webui, tmp_path):
    """The WebUI stores every tab value in ui-config.json on its first start and restores it on every
    start; the Default engine / precision settings must still decide the tab's initial values."""
    gr = pytest.importorskip("gradio")
    shared, a1111 = webui
    from modules import script_callbacks, ui_loadsave

    config = tmp_path / "ui-config.json"
    script_callbacks.ui_settings_callback()
    # first start with the defaults: the host writes the tab's values
    blocks = _build_real_tab_in_webui(gr)
    first = ui_loadsave.UiLoadsave(str(config))
    first.add_block(blocks, "talking_head")
    first.dump()
    assert _component(blocks, "th_opt_engine").value == "auto"
    assert json.loads(config.read_text()).get("talking_head/Face resolution/value") == "512"  # others are stored
    # the user picks lite / fp32 in Settings and restarts
    shared.opts.talking_head_default_engine = "lite"
    shared.opts.talking_head_precision = "fp32"
    for restart in range(2):
        script_callbacks.clear_callbacks()
        blocks = _build_real_tab_in_webui(gr)
        loadsave = ui_loadsave.UiLoadsave(str(config))
        loadsave.add_block(blocks, "talking_head")
        loadsave.dump()
        assert _component(blocks, "th_opt_engine").value == "lite"
        assert _component(blocks, "th_opt_precision").value == "fp32"


def test_refinement_keeps_the_webui_progress_coherent(webui, astronaut, monkeypatch):
    """/sdapi/v1/progress reads shared.state; each process_images call ends with state.nextjob(). Over the
    refinement's many img2img calls job_no must stay <= job_count, progress in [0, 1] and never decrease,
    textinfo must name the stage, and the host's live image must follow the refined crops."""
    shared, a1111 = webui
    from modules import processing
    from sadtalker_ext.audio.decode import AudioClip
    from sadtalker_ext.engines.base import RunContext
    from sadtalker_ext.refine.backends import HostBackend
    from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule
    from sadtalker_ext.refine.stage import RefineStage
    from modules.shared_state import api_progress

    host = a1111.get_host()
    state = shared.state
    samples = []

    def sample(where):
        samples.append((where, state.job_no, state.job_count, state.double_progress(), state.textinfo,
                        state.id_live_preview, state.current_image, api_progress(state)[1]))

    original = processing.process_images

    def process_images(p):
        sample("img2img start")
        out = original(p)
        sample("img2img end")
        return out
    monkeypatch.setattr(processing, "process_images", process_images)
    reports = []

    def progress(done, total, text="", preview=None):
        host.progress(done, total, text, preview)
        reports.append(text)
        sample("progress")

    n = 12
    frames = np.stack([np.roll(astronaut[:256, 96:352], 2 * i, axis=1) for i in range(n)])
    ctx = RunContext(audio=AudioClip(np.zeros(640 * n, np.float32), 16000), options=GenerateOptions(),
                     num_frames=n, fps=25, progress=progress)
    for mode, batch, calls, kf in (("keyframes", 1, 3, [0, 5, 10]), ("every", 2, 7, [0, 5, 10]),
                                   ("keyframes", 1, 2, [8, 10])):  # frames shown before the first call
        samples.clear()
        schedule = KeyframeSchedule([Keyframe(frame=f) for f in kf], mode=mode, batch_size=batch).validate()
        schedule.defaults.mask, schedule.defaults.steps = "full", 2
        stage = RefineStage(schedule, HostBackend(host, native=64))
        with host.job("talking-head", n):
            done = 0
            for chunk in stage((FrameChunk(s, frames[s:s + 4]) for s in range(0, n, 4)), ctx):
                done += len(chunk)
                # what the pipeline reports after each written chunk
                progress(done, n, f"fake: frame {done}/{n}" + (f" - {ctx.status}" if ctx.status else ""),
                         chunk.frames[-1])
        assert stage.stats.sd_calls == calls and stage.calls_planned(kf, n) >= calls
        calls_seen = [s for s in samples if s[0] == "img2img start"]
        assert len(calls_seen) == calls
        first = samples.index(calls_seen[0])
        refine = samples[first:]
        for where, job_no, job_count, frac, text, _, _, eta in refine:
            assert 0 <= job_no <= job_count, (where, job_no, job_count)
            assert 0.0 <= frac <= 1.0 and eta >= 0, (where, frac, eta)
            assert text.startswith("Talking Head: ") and "refine (img2img): call" in text, text
        fracs = [s[3] for s in samples]  # the whole job, frames before the first call included
        assert all(b >= a for a, b in zip(fracs, fracs[1:])), fracs
        assert 0.5 < fracs[-1] <= 0.98 and all(s[7] >= 0 for s in samples)
        # a new live image after every call: the refined crop, shown before the next call starts
        live = [s[5] for s in calls_seen] + [state.id_live_preview]
        assert all(b > a for a, b in zip(live, live[1:])), live
        assert calls_seen[-1][6] is not None
        texts = [s[4] for s in calls_seen]
        assert [t.split("call ")[1].split(",")[0] for t in texts] == [f"{i}/{stage.calls_planned(kf, n)}"
                                                                      for i in range(1, calls + 1)]
        assert "ETA" in texts[-1] and f"frame {kf[0] + 1}/12" in texts[0]
        assert any("refine (img2img): call" in r for r in reports)  # the tab sees the stage too


def test_img2img_pieces_keep_job_no_within_job_count(webui, astronaut, monkeypatch):
    """One stage call may run several process_images (a mask group or a max_batch slice each), and each
    ends with state.nextjob(). With 4, 2 and 1 pieces in calls 1, 2, 3 of 3, the WebUI's progress
    arithmetic must stay in [0, 1], never decrease (also while the sampler steps), job_no <= job_count,
    and read exactly i / 3 at the start of call i."""
    shared, a1111 = webui
    from modules import processing
    from modules.shared_state import api_progress

    host = a1111.get_host()
    state = shared.state
    seen = []
    original = processing.process_images

    def process_images(p):
        state.sampling_steps = p.steps  # what the host's sampler does per step
        for step in range(p.steps + 1):
            state.sampling_step = step
            seen.append((state.job_no, state.job_count, state.double_progress(), api_progress(state)[1]))
        return original(p)
    monkeypatch.setattr(processing, "process_images", process_images)
    images = np.stack([astronaut[:64, 64 * i:64 * i + 64] for i in range(4)])
    masks = np.zeros((4, 64, 64), np.uint8)
    for i in range(4):
        masks[i, :, : 8 * (i + 1)] = 255  # four different masks: four groups
    calls = [(masks, 2), (None, 2), (None, 4)]  # 4, 2 and 1 process_images
    starts = []
    with host.job("talking-head", 4):
        for index, (mask, max_batch) in enumerate(calls):
            starts.append(len(seen))
            host.img2img(Img2ImgRequest(images=images, mask=mask, params=RefineParams(steps=3, seed=1),
                                        max_batch=max_batch, call_index=index, calls_total=3,
                                        status=f"refine (img2img): call {index + 1}/3"))
            assert state.textinfo == f"Talking Head: refine (img2img): call {index + 1}/3"
        seen.append((state.job_no, state.job_count, state.double_progress(), api_progress(state)[1]))
    assert len(seen) == 4 * (4 + 2 + 1) + 1
    for job_no, job_count, frac, eta in seen:
        assert 0 <= job_no <= job_count and 0.0 <= frac <= 1.0 and eta >= 0
    fracs = [s[2] for s in seen]
    assert all(b >= a for a, b in zip(fracs, fracs[1:])), fracs
    # 3 calls as jobs 0-2 of 4 (3/3 would read 1.01 in /sdapi/v1/progress: a negative ETA)
    assert [fracs[i] for i in starts] == pytest.approx([0.0, 1 / 4, 2 / 4])
    assert seen[-1][:2] == (3, 4) and fracs[-1] == pytest.approx(3 / 4)  # one piece in the last call


def test_server_folders_shown_only_when_the_webui_allows(webui):
    """The Checkpoint folder box shows a server path and the lip-sync debug box names a server folder:
    hidden from anyone who can open the page unless the WebUI answers this machine alone or the
    "Show server folders" setting is on. Frames per second (always 25) has no box."""
    gr = pytest.importorskip("gradio")
    shared, a1111 = webui
    from modules import script_callbacks

    script_callbacks.ui_settings_callback()

    def visible(**cmd):
        for key in ("listen", "share", "ngrok", "server_name"):
            setattr(shared.cmd_opts, key, cmd.get(key))
        script_callbacks.clear_callbacks()
        blocks = _build_real_tab_in_webui(gr)
        return {name: _component(blocks, f"th_opt_{name}").visible for name in ("checkpoints", "lipsync_debug", "fps", "crf")}

    assert visible() == {"checkpoints": True, "lipsync_debug": True, "fps": False, "crf": True}
    assert visible(server_name="127.0.0.1") == {"checkpoints": True, "lipsync_debug": True, "fps": False, "crf": True}
    for cmd in ({"listen": True}, {"share": True}, {"server_name": "0.0.0.0"}, {"ngrok": "token"}):
        assert visible(**cmd) == {"checkpoints": False, "lipsync_debug": False, "fps": False, "crf": True}, cmd
    shared.opts.talking_head_show_server_paths = True
    assert visible(listen=True) == {"checkpoints": True, "lipsync_debug": True, "fps": False, "crf": True}


@pytest.mark.parametrize("shown_steps,calls", [(0, 1), (0, 3), (13, 3), (25, 2), (20, 200)])
def test_refinement_goes_on_from_the_frames_already_shown(webui, shown_steps, calls):
    """A refinement that starts after frames were shown (steps of 26 = 25 frames) continues the bar:
    call 0 starts at or above what was shown, the last call ends at most at 0.98 (then 0.01 + that
    keeps the WebUI's ETA >= 0)."""
    shared, a1111 = webui
    state = shared.state
    state.job_count, state.job_no, state.sampling_steps, state.sampling_step = 1, 0, 26, shown_steps
    base, jobs = a1111.A1111Host._refine_jobs(state, calls)
    shown = min(shown_steps / 26, 0.9)
    assert base / jobs >= shown - 1e-9 and (base + calls) / jobs <= 0.98
    assert jobs <= (calls + 1) / (0.98 - shown) + 2  # no more jobs than that needs


def test_models_panel_does_not_ask_for_restorers_the_webui_has(webui, tmp_path):
    """Inside the WebUI the lip-sync stage uses the host's GFPGAN / CodeFormer: the Models panel must not
    list our copies as missing nor offer to download them; standalone it still does."""
    gr = pytest.importorskip("gradio")
    shared, a1111 = webui
    from modules import script_callbacks
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.ui import tab

    import html

    def row(text, name):
        return html.unescape(next(r for r in text.split("<tr") if f"<td>{name}</td>" in r))

    host = a1111.get_host()
    inside = tab.models_html(host, str(tmp_path / "empty"))
    for name in ("GFPGANv1.4.pth", "codeformer.pth"):
        assert "not needed: the WebUI's own face restoration is used" in row(inside, name)
        assert "missing" not in row(inside, name)
    assert "missing" in row(inside, "wav2lip_gan.pth")  # the others still are
    alone = tab.models_html(LocalHost(output_dir=tmp_path / "out"), str(tmp_path / "empty"))
    assert "missing (optional)" in row(alone, "GFPGANv1.4.pth")
    script_callbacks.ui_settings_callback()
    blocks = _build_real_tab_in_webui(gr)
    assert _component(blocks, "th_download_restoration") is None
    assert _component(blocks, "th_download_wav2lip") is not None
