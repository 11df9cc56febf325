"""The Talking Head tab: controls from GenerateOptions, Blocks built and events wired under gradio 3.41.2 (this
venv, as in AUTOMATIC1111) and gradio 4.40 (a cached second venv, as in Forge), and the handlers' logic
(errors, interrupt, heartbeat, history) with a stand-in for run_job."""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import GenerationInterrupted, OptionError
from sadtalker_ext.host.base import LocalHost
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.ui.controls import convert, initial_value, option_specs, to_options

REPO = Path(__file__).resolve().parents[1]
GRADIO4_VENV = Path(os.environ.get("SADTALKER_GRADIO4_VENV",
                                   Path.home() / ".cache" / "sd-talking-head" / "venv-gradio4"))
# Forge's gradio, with the versions around it that gradio 4.40 works with (pydantic 2.11 and
# huggingface_hub 1.0 broke it), plus what the tab needs at build time (numpy).
GRADIO4_REQS = ["gradio==4.40.0", "numpy<2", "pydantic>=2,<2.11", "fastapi<0.113", "huggingface_hub<0.26"]

# Component ids every build must have, and the events that must be wired.
REQUIRED_IDS = {"th_image", "th_prompt", "th_audio", "th_generate", "th_interrupt", "th_status", "th_preview",
                "th_video", "th_history", "th_models", "th_models_refresh", "th_opt_engine",
                "th_download_sadtalker", "th_download_wav2lip"}

def _build_summary(out_dir: str) -> dict:
    """Build the standalone page and the A1111 tab; report ids, wiring and send-to targets (JSON-able).
    Runs in this process (gradio 3) and, as a script, in the gradio 4 venv."""
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.ui import compat
    from sadtalker_ext.ui.standalone import create
    from sadtalker_ext.ui.tab import build_tab, send_to_targets
    page = create(LocalHost(output_dir=out_dir))
    ids = {b._id: b.elem_id for b in page.blocks.values() if getattr(b, "elem_id", None)}
    deps = [{"triggers": d["triggers"], "targets": [ids.get(t) for t in d["targets"]],
             "inputs": [ids.get(i) for i in d["inputs"]], "outputs": [ids.get(o) for o in d["outputs"]],
             "js": d.get("js")}
            for d in compat.dependencies(page)]
    blocks, title, tab_id = build_tab(LocalHost(output_dir=out_dir))
    targets = send_to_targets()
    # the audio input hands the uploaded file over untouched (gradio's own decoding needs ffmpeg): a
    # .flac that is not even valid audio comes back as a path to the same bytes
    import os
    fake = os.path.join(out_dir, "speech.flac")
    with open(fake, "wb") as f:
        f.write(b"fLaC not really")
    audio = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "th_audio"][0]
    if compat.major() >= 4:
        from gradio.data_classes import FileData
        got = audio.preprocess(FileData(path=fake))
    else:
        got = audio.preprocess({"name": fake, "data": None, "is_file": True})
    with open(got, "rb") as f:
        passthrough = got.endswith(".flac") and f.read() == b"fLaC not really"
    # the values the Generate handler yields are accepted by the output components of this gradio
    import numpy as np
    from sadtalker_ext.ui.tab import status_html
    ui = page.talking_head_ui
    video = os.path.join(out_dir, "result.mp4")
    with open(video, "wb") as f:
        f.write(b"\0" * 16)
    frame = np.zeros((32, 24, 3), np.uint8)
    history = [{"path": video, "caption": "result.mp4 - 4.0 s - lite", "thumb": frame}]
    c = ui.components
    gal = c["history"].postprocess(ui.gallery_value(history))  # gradio 4: GalleryData(root=[...])
    outputs_ok = [c["status"].postprocess(status_html("running", "x", 1, 2)) is not None,
                  c["preview"].postprocess(frame) is not None,
                  c["video"].postprocess(video) is not None,
                  len(getattr(gal, "root", gal) or []) == 1]
    return {"version": list(compat.version()), "ids": sorted(set(ids.values())), "deps": deps,
            "tab": [title, tab_id], "audio_passthrough": passthrough, "outputs_ok": outputs_ok,
            "targets": {k: getattr(v, "elem_id", None) for k, v in targets.items() if k in ("image", "prompt")}}


BUILD_SCRIPT = ("import json, sys\nsys.path.insert(0, sys.argv[1])\n"
                + textwrap.dedent(inspect.getsource(_build_summary))
                + "print('RESULT' + json.dumps(_build_summary(sys.argv[2])))\n")


def _summarise(result: dict) -> dict:
    """{(trigger, target id): (input ids, output ids)} of a build."""
    out = {}
    for d in result["deps"]:
        for trig, target in zip(d["triggers"], d["targets"]):
            out[(trig, target)] = (d["inputs"], d["outputs"])
    return out


def _check_build(result: dict, major: int) -> None:
    assert result["version"][0] == major
    ids = set(result["ids"])
    assert REQUIRED_IDS <= ids, sorted(REQUIRED_IDS - ids)
    for f in dataclasses.fields(GenerateOptions):  # every option has a control
        assert f"th_opt_{f.name}" in ids
    wired = _summarise(result)
    gen_in, gen_out = wired[("click", "th_generate")]
    assert gen_in[0] == "th_image" and "th_audio" in gen_in and "th_prompt" in gen_in
    assert {f"th_opt_{f.name}" for f in dataclasses.fields(GenerateOptions)} <= set(gen_in)
    assert gen_out[:4] == ["th_status", "th_preview", "th_video", "th_history"]
    # the source image's file name: remembered in the browser on upload, sent as the last Generate input
    assert gen_in[-1] == "th_image_name"
    gen_js = [d["js"] for d in result["deps"] if "th_generate" in d["targets"]]
    assert len(gen_js) == 1 and f"args[{len(gen_in) - 1}] = " in gen_js[0]
    uploads = [d for d in result["deps"] if d["targets"] == ["th_image"] and d["triggers"] == ["upload"]]
    assert len(uploads) == 1 and "orig_name" in uploads[0]["js"] and uploads[0]["outputs"] == []
    # Interrupt gets only this session's job token (a gr.State: no elem_id), never a global "stop all"
    assert wired[("click", "th_interrupt")] == ([None], ["th_status"])
    assert wired[("select", "th_history")][1] == ["th_video", "th_status"]
    # the models folder is the server's: the client's checkpoints box is not an input of the panel
    assert wired[("click", "th_models_refresh")] == ([], ["th_models"])
    assert wired[("click", "th_download_sadtalker")][1] == ["th_download_status", "th_models"]
    if major == 3:  # upload and microphone are two components in gradio 3
        assert "th_audio_mic" in gen_in
    else:
        assert "th_audio_mic" not in ids
    if (REPO / "sadtalker_ext" / "ui" / "refine_panel.py").exists():  # optional parts are included when present
        assert "th_refine_enabled" in gen_in and "th_refine_table" in gen_in
    if (REPO / "sadtalker_ext" / "audio" / "tts").exists():
        assert "th_tts_text" in gen_in
    assert result["tab"] == ["Talking Head", "talking_head"]
    assert result["audio_passthrough"]
    assert result["outputs_ok"] == [True, True, True, True]
    assert result["targets"] == {"image": "th_image", "prompt": "th_prompt"}


# ------------------------------------------------------------------------------------------- controls
def test_every_option_has_a_control_whose_initial_value_converts_back_to_the_default():
    specs = option_specs()
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(GenerateOptions)]
    kinds = {s.name: s.kind for s in specs}
    assert kinds["engine"] == "dropdown" and kinds["still"] == "checkbox" and kinds["pads"] == "tuple"
    assert kinds["ref_pose"] == "file" and kinds["expression_scale"] == "slider"
    assert {s.name: s.choices for s in specs}["engine"] == ("auto", "lite", "sadtalker")
    opts = to_options(specs, [initial_value(s) for s in specs])
    assert opts == GenerateOptions().validate()


def test_a_new_option_shows_up_with_a_generic_control():
    @dataclasses.dataclass
    class More(GenerateOptions):
        wobble: float = 0.25
        mode_x: str = "a"
        count_y: int = 3

    specs = {s.name: s for s in option_specs(More())}
    assert specs["wobble"].kind == "number" and specs["wobble"].default == 0.25
    assert specs["count_y"].kind == "number" and specs["count_y"].integer
    assert specs["mode_x"].kind == "text" and specs["mode_x"].section == "Other"
    assert convert(specs["count_y"], 7.0) == 7 and isinstance(convert(specs["count_y"], 7.0), int)


def test_form_values_are_converted_and_validated_with_one_line_errors():
    specs = option_specs()
    by = {s.name: s for s in specs}
    assert convert(by["pads"], "1, 2,3 4") == (1, 2, 3, 4)
    assert convert(by["size"], "256") == 256
    assert convert(by["transcript"], "  ") is None
    assert convert(by["ref_pose"], types.SimpleNamespace(name="/tmp/x.mp4")) == "/tmp/x.mp4"  # gradio 3
    assert convert(by["ref_pose"], "/tmp/y.mp4") == "/tmp/y.mp4"                            # gradio 4
    with pytest.raises(OptionError, match="pads"):
        convert(by["pads"], "1, two, 3, 4")
    with pytest.raises(OptionError, match="whole number"):
        convert(by["seed"], 1.5)
    values = [initial_value(s) for s in specs]
    values[[s.name for s in specs].index("expression_scale")] = 7.0
    with pytest.raises(OptionError) as err:
        to_options(specs, values)
    assert "expression-scale" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- builds
def test_blocks_build_and_events_are_wired_under_gradio3(tmp_path):
    gradio = pytest.importorskip("gradio")
    assert gradio.__version__.startswith("3.41"), "the test venv must have A1111's gradio 3.41.2"
    _check_build(json.loads(json.dumps(_build_summary(str(tmp_path)))), 3)


@pytest.fixture(scope="session")
def gradio4_python() -> Path:
    """Python of a venv with Forge's gradio 4.40 (built once per machine; ~1.5 min, ~400 MB)."""
    py = GRADIO4_VENV / "bin" / "python"
    marker = GRADIO4_VENV / ".sd-talking-head-reqs"
    want = " ".join(GRADIO4_REQS)
    if not (py.exists() and marker.exists() and marker.read_text() == want):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(GRADIO4_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"] + GRADIO4_REQS,
                       check=True, timeout=900)
        marker.write_text(want)
    return py


def test_blocks_build_and_events_are_wired_under_gradio4(gradio4_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.run([str(gradio4_python), "-c", BUILD_SCRIPT, str(REPO), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    _check_build(json.loads(line[len("RESULT"):]), 4)


def test_gradio3_only_calls_are_not_used():
    """The tab's code never calls .style(), _js= or gr.X.update directly (only through compat)."""
    import re
    bad = re.compile(r"\.style\(|\b_js=|\bgr\.\w+\.update\(|[(,]\s*source=|[(,]\s*tool=")
    for name in ("tab.py", "layout.py", "standalone.py", "controls.py"):
        text = (REPO / "sadtalker_ext" / "ui" / name).read_text()
        assert not bad.findall(text), f"gradio-3-only call in ui/{name}: {bad.findall(text)}"
    assert bad.findall("x.style(h=1); b.click(f, _js='x'); gr.Image.update(value=1); gr.Audio(source='mic')")


# ------------------------------------------------------------------------------------------- robustness
def test_tab_never_vanishes_when_building_fails(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    from sadtalker_ext.ui import compat, tab

    def broken(self):
        raise ImportError("libfoo.so: cannot open shared object file")
    monkeypatch.setattr(tab.TalkingHeadUI, "build", broken)
    blocks, title, tab_id = tab.build_tab(LocalHost(output_dir=tmp_path))
    assert (title, tab_id) == ("Talking Head", "talking_head")
    html = compat.component_names(blocks)["th_load_error"].value
    assert "libfoo.so" in html and "install.py" in html


def test_optional_parts_that_fail_do_not_break_the_tab(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    from sadtalker_ext.models import locate
    from sadtalker_ext.ui import compat, tab

    panel = types.ModuleType("sadtalker_ext.ui.refine_panel")

    def build_refine_panel(prompt=None):
        raise RuntimeError("refine panel exploded")
    panel.build_refine_panel = build_refine_panel
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.refine_panel", panel)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n == "sadtalker_ext.ui.refine_panel" else real_find_spec(n, *a))
    real_import = importlib.import_module

    def fake_import(name, *a):
        if name == "sadtalker_ext.audio.tts":
            raise OSError("libespeak-ng.so.1: cannot open shared object file")
        return real_import(name, *a)
    monkeypatch.setattr(importlib, "import_module", fake_import)

    def no_status(*a, **k):
        raise PermissionError("models folder unreadable")
    monkeypatch.setattr(locate, "status", no_status)
    blocks = tab.build_blocks(LocalHost(output_dir=tmp_path))
    names = compat.component_names(blocks)
    assert "th_generate" in names and "th_tts_text" not in names
    assert "models folder unreadable" in names["th_models"].value
    assert blocks.talking_head_ui.refine is None
    assert names["th_sec_refinementimg2img"].visible  # no panel: the refinement options are shown instead


def test_refine_panel_contract_is_wired_when_present(monkeypatch, tmp_path):
    gr = pytest.importorskip("gradio")
    from sadtalker_ext.ui import compat, tab

    seen = {}

    def build_refine_panel(host=None, prompt=None, image=None):
        seen.update(host=host, prompt=prompt, image=image)
        strength = gr.Slider(0, 1, value=0.3, label="strength", elem_id="th_refine_strength")
        return types.SimpleNamespace(inputs=[strength], apply=lambda options, s: options)
    panel = types.ModuleType("sadtalker_ext.ui.refine_panel")
    panel.build_refine_panel = build_refine_panel
    monkeypatch.setitem(sys.modules, "sadtalker_ext.ui.refine_panel", panel)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n == "sadtalker_ext.ui.refine_panel" else real_find_spec(n, *a))
    host = LocalHost(output_dir=tmp_path)
    blocks = tab.build_blocks(host)
    ui = blocks.talking_head_ui
    assert seen == {"host": host, "prompt": ui.components["prompt"], "image": ui.components["image"]}
    assert ui.gen_inputs[-3].elem_id == "th_refine_strength"
    assert not compat.component_names(blocks)["th_sec_refinementimg2img"].visible  # edited in the panel


# ------------------------------------------------------------------------------------------- handlers
def as_upload(path: Path, request) -> Path:
    """A copy of ``path`` where gradio keeps client uploads (the tab's handlers open nothing else)."""
    import shutil
    import uuid

    from sadtalker_ext.ui import guard
    folder = Path(guard.upload_roots()[0]) / f"th-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return Path(shutil.copy(path, folder / Path(path).name))


@pytest.fixture()
def arctic_wav(arctic_wav, request):
    """The reference speech as an upload (overrides conftest's server path for the handler tests)."""
    return as_upload(arctic_wav, request)


@pytest.fixture()
def ui(tmp_path):
    pytest.importorskip("gradio")
    from sadtalker_ext.ui import tab
    blocks = tab.build_blocks(LocalHost(output_dir=tmp_path / "out"))
    return blocks.talking_head_ui


def _inputs(ui, image, audio, **opts):
    values = []
    for spec in ui.specs:
        values.append(opts.get(spec.name, initial_value(spec)))
    extra = [None] if ui.components.get("tts_text") is not None else []
    refine = [getattr(comp, "value", None) for comp in ui.refine_inputs]  # the panel's defaults (off)
    return [image] + [audio] + [None] * (len(ui.audio_components) - 1) + extra + ["a prompt"] + values + refine + [[]]


def _fake_run_job(frames=6, delay=0.05, error=None, wait_for_stop=False, first_delay=0.0):
    calls = {}

    def run_job(host, image, audio, options, *, source_info=None, stages=(), phoneme_events=None, out=None):
        from sadtalker_ext.jobs import JobResult
        from sadtalker_ext.pipeline import Result
        calls.update(options=options, source_info=source_info, image=image, audio=audio,
                     phoneme_events=phoneme_events)
        with host.job("talking-head", 0):
            time.sleep(first_delay)
            for i in range(frames):
                if host.interrupted():
                    raise GenerationInterrupted("generation was interrupted; no video was written")
                host.progress(i + 1, frames, f"fake: frame {i + 1}/{frames}", np.full((64, 48, 3), i, np.uint8))
                time.sleep(delay)
                while wait_for_stop and not host.interrupted():
                    time.sleep(0.01)
            if error is not None:
                raise error
        path = host.output_dir() / "fake.mp4"
        path.write_bytes(b"\0")
        return JobResult(path=path, sidecar=path.with_suffix(".json"),
                         result=Result(path=path, num_frames=frames, duration=frames / 25, size=(48, 64),
                                       engine="fake", seconds=0.1))
    return run_job, calls


def test_generate_reports_missing_inputs_and_bad_options(ui, astronaut, arctic_wav):
    out = list(ui.generate(*_inputs(ui, None, str(arctic_wav))))
    assert len(out) == 1 and "add a source image" in out[0][0] and "th-error" in out[0][0]
    out = list(ui.generate(*_inputs(ui, astronaut, None)))
    assert "add speech" in out[0][0]
    out = list(ui.generate(*_inputs(ui, astronaut, str(arctic_wav), pose_style=99)))
    assert "--pose-style must be a number in 0..45" in out[0][0]


def test_generate_streams_progress_and_preview_then_adds_to_history(ui, monkeypatch, astronaut, arctic_wav):
    import sadtalker_ext.jobs as jobs
    fake, calls = _fake_run_job()
    monkeypatch.setattr(jobs, "run_job", fake)
    steps = list(ui.generate(*_inputs(ui, astronaut, str(arctic_wav), engine="lite", seed=7)))
    statuses = [s[0] for s in steps]
    assert any("fake: frame" in s and "th-bar" in s for s in statuses[1:-1])
    previews = [s[1] for s in steps if isinstance(s[1], np.ndarray)]
    assert previews and previews[-1].shape == (64, 48, 3)
    last = steps[-1]
    assert "Saved" in last[0] and last[2].endswith("fake.mp4")
    history = last[4]
    assert len(history) == 1 and history[0]["path"].endswith("fake.mp4") and len(last[3]) == 1
    assert calls["options"].engine == "lite" and calls["options"].seed == 7
    assert calls["source_info"] == {"prompt": "a prompt", "image": {"file": None, "origin": "pixels"}}
    assert ui.select_history(history, 0)[0].endswith("fake.mp4")


@pytest.mark.parametrize("sent,expect", [
    ("C:\\fakepath\\my portrait.png", {"file": "my portrait.png", "origin": "upload"}),   # base name only
    ("../../etc/passwd", {"file": "passwd", "origin": "upload"}),        # client text: never a path, never opened
    ("", {"file": None, "origin": "pixels"}),                             # Send to Talking Head / paste
])
def test_tab_run_records_the_uploaded_image_name_in_the_sidecar(tmp_path, request, astronaut, arctic_wav, sent,
                                                                 expect):
    """A lite run through the Generate handler wired in the Blocks: the hidden name box (filled in the
    browser, see IMAGE_NAME_JS) ends up as the sidecar's source.image.file, next to the pixels' sha256
    and the speech file's name and duration."""
    import hashlib
    pytest.importorskip("gradio")
    from sadtalker_ext.ui import compat, tab
    blocks = tab.build_blocks(LocalHost(output_dir=tmp_path / "out"))
    ui = blocks.talking_head_ui
    names = compat.component_names(blocks)
    gen = next(d for d in blocks.dependencies if names["th_generate"]._id in
               [t[0] if isinstance(t, (list, tuple)) else t for t in d["targets"]])
    handler = blocks.fns[blocks.dependencies.index(gen)].fn
    assert handler == ui.generate                 # the function the button runs
    args = _inputs(ui, astronaut, str(arctic_wav), engine="lite") + [sent]
    assert len(args) == len(ui.gen_inputs) and ui.gen_inputs[-1] is names["th_image_name"]
    last = list(handler(*args))[-1]
    assert "Saved" in last[0], last[0]
    meta = json.loads(Path(last[4][0]["sidecar"]).read_text())
    image = meta["source"]["image"]
    assert {k: image[k] for k in ("file", "origin")} == expect
    assert image["sha256"] == hashlib.sha256(np.ascontiguousarray(astronaut).tobytes()).hexdigest()
    assert meta["source"]["audio"]["file"] == arctic_wav.name
    assert abs(meta["source"]["audio"]["duration_s"] - 4.0) < 0.05
    assert meta["source"]["prompt"] == "a prompt"


def test_live_preview_pictures_are_sent_at_most_once_per_interval(ui, monkeypatch, astronaut, arctic_wav):
    """Status updates follow every chunk; the ~150 kB preview pictures at most every PREVIEW_INTERVAL_S."""
    import sadtalker_ext.jobs as jobs
    import sadtalker_ext.ui.tab as tab
    fake, _ = _fake_run_job(frames=40, delay=0.05)        # a new frame every 50 ms for 2 s
    monkeypatch.setattr(jobs, "run_job", fake)
    monkeypatch.setattr(tab, "PREVIEW_INTERVAL_S", 0.6)
    t0 = time.perf_counter()
    steps = list(ui.generate(*_inputs(ui, astronaut, str(arctic_wav), engine="lite")))
    elapsed = time.perf_counter() - t0
    updates = [s for s in steps if "fake: frame" in s[0]]
    previews = [s[1] for s in steps if isinstance(s[1], np.ndarray)]
    assert len(updates) >= 5                               # the status still follows at every poll
    assert 1 <= len(previews) <= elapsed / 0.6 + 1, (len(previews), elapsed)
    assert len(previews) < len(updates)


def test_typed_text_is_spoken_in_the_chosen_language(ui, monkeypatch, astronaut):
    import sadtalker_ext.jobs as jobs
    if ui.components.get("tts_text") is None:
        pytest.skip("no text-to-speech in this checkout")
    fake, calls = _fake_run_job(frames=2)
    monkeypatch.setattr(jobs, "run_job", fake)
    said = {}

    def synthesize(text, lang):
        said.update(text=text, lang=lang)
        return "CLIP", ["events"]
    ui.tts = types.SimpleNamespace(synthesize=synthesize)
    values = _inputs(ui, astronaut, None, language="ru")
    values[1 + len(ui.audio_components)] = "  Привет  "
    last = list(ui.generate(*values))[-1]
    assert "Saved" in last[0]
    assert said == {"text": "Привет", "lang": "ru"}
    assert calls["audio"] == "CLIP" and calls["phoneme_events"] == ["events"]
    assert calls["source_info"]["tts_text"] == "Привет"


def test_interrupt_stops_the_job_and_reports_it(ui, monkeypatch, astronaut, arctic_wav):
    import sadtalker_ext.jobs as jobs
    fake, _ = _fake_run_job(frames=100, wait_for_stop=True)
    monkeypatch.setattr(jobs, "run_job", fake)
    gen = ui.generate(*_inputs(ui, astronaut, str(arctic_wav)))
    seen = []
    for step in gen:
        seen.append(step[0])
        if "fake: frame 1/" in step[0]:
            assert "Nothing is running" in ui.interrupt(None)  # no token: another session, stops nothing
            assert "Interrupting" in ui.interrupt(step[5])     # this session's token (its gr.State)
    assert "Interrupted: no video was written." in seen[-1]
    assert not list((ui.host.output_dir()).glob("*.mp4"))
    assert "Nothing is running" in ui.interrupt()


def test_unexpected_errors_show_one_line_and_slow_steps_keep_yielding(ui, monkeypatch, astronaut, arctic_wav):
    import sadtalker_ext.jobs as jobs
    fake, _ = _fake_run_job(frames=1, first_delay=2.5, error=ValueError("boom\nsecond line"))
    monkeypatch.setattr(jobs, "run_job", fake)
    stamps, last = [], None
    t0 = time.perf_counter()
    for step in ui.generate(*_inputs(ui, astronaut, str(arctic_wav))):
        stamps.append(time.perf_counter() - t0)
        last = step
    gaps = np.diff(stamps)
    assert gaps.max() < 2.0, gaps  # gradio 3's queue gives up on a step after 5 s (httpx timeout)
    assert "Unexpected error (ValueError: boom second line)" in last[0]


def test_models_panel_and_download_button(ui, monkeypatch, tmp_path):
    from sadtalker_ext.errors import DownloadError
    from sadtalker_ext.models import registry
    from sadtalker_ext.ui import tab

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    spec = registry.get_file("wav2lip_gan.pth")
    (ckpt / spec.name).write_bytes(b"x" * 10)
    html = ui.refresh_models(str(ckpt))
    assert spec.name in html and "size mismatch" in html and str(ckpt) in html
    got = {}

    def fake_download(s, dest, progress=None, **kw):
        got.setdefault("names", []).append(s.name)
        got["dest"] = Path(dest)
        progress(5, 10)
        raise DownloadError(f"offline: download {s.name} by hand and put it in {dest}")
    monkeypatch.setattr("sadtalker_ext.models.download.download", fake_download)
    steps = list(ui.download("wav2lip", str(ckpt)))
    assert got["dest"] == ckpt and got["names"] == ["wav2lip_gan.pth"]
    assert "offline: download wav2lip_gan.pth by hand" in steps[-1][0]
    assert isinstance(tab.models_html(ui.host, str(ckpt)), str)


def test_gradio3_queue_waits_for_long_steps(tmp_path):
    """The standalone server lifts the 5 s per-step timeout that gradio 3.41's queue gets from httpx >= 0.25."""
    gr = pytest.importorskip("gradio")
    if not gr.__version__.startswith("3."):
        pytest.skip("gradio 3 only")
    import socket
    from sadtalker_ext.ui import compat

    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button("x").click(lambda s: s, box, box)
    compat.enable_queue(demo)
    assert compat.relax_queue_timeout(demo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    compat.launch(demo, "127.0.0.1", port)
    try:
        deadline = time.time() + 20
        while demo._queue.queue_client is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        client = demo._queue.queue_client
        assert client is not None and client.timeout.read is None and client.timeout.connect is None
    finally:
        demo.close()
    # a browser that reads an update 2 s late keeps its event (gradio 3 alone drops it after 1 s)
    import asyncio
    import types

    async def slow_send_json(data):
        await asyncio.sleep(2.0)
    event = types.SimpleNamespace(websocket=types.SimpleNamespace(send_json=slow_send_json))
    assert asyncio.run(demo._queue.send_message(event, {"msg": "process_generating"})) is True
