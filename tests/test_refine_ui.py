"""The refinement panel: keyframe table <-> schedule, the parameter plot, and the panel built and wired
under gradio 3.41 (this venv) and 4.40 (the cached Forge venv of test_ui_build), with its handlers
(JSON import/export, plot, one-frame preview through a host double)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import DependencyError, OptionError
from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule, RefineParams
from sadtalker_ext.ui.refine_panel import (COLUMNS, EXAMPLE_ROWS, HEADERS, plot_schedule, preview_frame,
                                           rows_to_schedule, schedule_to_rows)

from test_refine_stage import FakeHost, synthetic_landmarks  # noqa: E402
from test_ui_build import GRADIO4_VENV, gradio4_python  # noqa: F401,E402  (the cached gradio 4.40 venv)

REPO = Path(__file__).resolve().parents[1]


def test_rows_round_trip():
    s = KeyframeSchedule([Keyframe(time=0.0, prompt="a, b", negative_prompt="n", denoising_strength=0.3,
                                   cfg_scale=7.5, steps=20, sampler="Euler a", seed=-1, mask="face", mask_blur=8,
                                   padding=32, interpolation={f: "ease" for f in
                                                              ("denoising_strength", "cfg_scale", "steps", "seed",
                                                               "mask_blur", "padding")}),
                          Keyframe(frame=60, cfg_scale=4.0, interpolation={"cfg_scale": "hold", "steps": "linear"}),
                          Keyframe(time=1.5, mask="mouth")], mode="every", batch_size=6, same_noise=False).validate()
    rows = schedule_to_rows(s)
    assert len(rows) == 3 and all(len(r) == len(COLUMNS) for r in rows)
    assert rows[0][HEADERS.index("interpolation")] == "ease"
    assert rows[1][HEADERS.index("interpolation")] == "cfg_scale=hold, steps=linear"
    assert rows[1][HEADERS.index("time (s)")] == "" and rows[1][HEADERS.index("frame")] == "60"
    back = rows_to_schedule(rows, mode="every", batch_size=6, same_noise=False)
    assert back == s


def test_rows_accept_numbers_blank_rows_and_dataframes():
    rows = [[0, None, "", "", 0.4, 7, 20.0, "DDIM", "", "mouth", 4, 16, ""],
            [""] * len(COLUMNS),
            ["2.5", "", "  portrait  ", "", "", "", "", "", "123", "", "", "", "hold"]]
    s = rows_to_schedule(rows)
    assert len(s.keyframes) == 2
    a, b = s.keyframes
    assert a.time == 0.0 and a.steps == 20 and isinstance(a.steps, int) and a.mask == "mouth"
    assert b.time == 2.5 and b.prompt == "  portrait  " and b.seed == 123 and b.interpolation["cfg_scale"] == "hold"
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([[1.0, np.nan, "x", "", 0.5, np.nan, np.nan, "", "", "", np.nan, np.nan, ""]], columns=HEADERS)
    assert rows_to_schedule(df).keyframes == [Keyframe(time=1.0, prompt="x", denoising_strength=0.5)]


@pytest.mark.parametrize("row,match", [
    (["x", "", "", "", "", "", "", "", "", "", "", "", ""], r"row 1, column 'time \(s\)': time must be a number"),
    (["0", "", "", "", "2", "", "", "", "", "", "", "", ""], "row 1: denoising_strength must be"),
    (["0", "", "", "", "", "", "", "", "", "", "", "", "cubic"], "interpolation 'cubic'"),
    (["0", "", "", "", "", "", "", "", "", "", "", "", "steps"], "interpolation 'steps'"),
    (["0", "", "", "", "", "", "", "", "", "", "", "", "steps=fast"], "interpolation 'fast' for steps"),
    (["", "", "p", "", "", "", "", "", "", "", "", "", ""], "give exactly one of time"),
])
def test_row_errors_name_row_and_column(row, match):
    with pytest.raises(OptionError, match=match):
        rows_to_schedule([row])


def test_plot_has_each_numeric_parameter_with_keyframe_markers():
    s = KeyframeSchedule([Keyframe(time=0, denoising_strength=0.2), Keyframe(time=2, denoising_strength=0.6,
                                                                             steps=30),
                          Keyframe(time=9, cfg_scale=3.0)]).validate()
    fig = plot_schedule(s, 4.0)
    axes = fig.axes
    # no seed panel: no keyframe fixes it (-1 = random per run), so it would be a flat line at -1
    assert [a.get_ylabel() for a in axes] == ["denoising strength", "CFG scale", "steps", "mask blur (px)",
                                              "padding (px)"]
    def markers(ax):
        return [ln for ln in ax.get_lines() if ln.get_marker() == "o"]

    line = axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), np.arange(100) / 25)
    np.testing.assert_allclose(line.get_ydata(), s.track_values("denoising_strength", 25, 100))
    (m,) = markers(axes[0])
    np.testing.assert_allclose(m.get_xdata(), [0.0, 2.0])
    np.testing.assert_allclose(m.get_ydata(), [0.2, 0.6])
    assert markers(axes[1]) == []                                                    # the key at 9 s: past 4 s
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), 3.0)              # but it shapes the track
    np.testing.assert_allclose(markers(axes[2])[0].get_xdata(), [2.0])
    vlines = sorted({float(ln.get_xdata()[0]) for ln in axes[3].get_lines()[1:]})
    assert vlines == [0.0, 2.0]                                                      # every keyframe in the video
    seeded = plot_schedule(KeyframeSchedule([Keyframe(time=0), Keyframe(time=2, seed=1234)]).validate(), 4.0)
    ax = [a for a in seeded.axes if a.get_ylabel() == "seed"]
    assert len(ax) == 1 and ax[0].get_lines()[0].get_ydata().max() == 1234
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_preview_frame_through_a_host_double(astronaut):
    host = FakeHost(native=64)
    s = KeyframeSchedule([Keyframe(time=0, denoising_strength=0.2), Keyframe(time=1, denoising_strength=0.6)])
    out = preview_frame(s, astronaut, 0.5, host=host)
    assert len(host.calls) == 1 and host.calls[0].params.denoising_strength == pytest.approx(0.2 + 0.4 * 12 / 25)  # frame 12
    changed = np.any(out != astronaut, axis=2)
    assert 0.005 < changed.mean() < 0.1                     # the face only
    from sadtalker_ext.errors import InputError, NoFaceError
    with pytest.raises(NoFaceError):
        preview_frame(s, np.full((200, 200, 3), 128, np.uint8), 0.0, host=host)
    with pytest.raises(InputError):
        preview_frame(s, None, 0.0, host=host)
    with pytest.raises(DependencyError):
        preview_frame(s, astronaut, 0.0)


@pytest.fixture()
def built():
    gr = pytest.importorskip("gradio")
    from sadtalker_ext.ui import compat
    from sadtalker_ext.ui.refine_panel import build_refine_panel
    with gr.Blocks() as blocks:
        prompt = compat.make("Textbox", elem_id="p")
        image = compat.image_input("img", "img")
        panel = build_refine_panel(prompt=prompt, image=image)
    return blocks, panel, prompt, image


def test_panel_builds_and_is_wired_under_gradio3(built, tmp_path, request):
    from sadtalker_ext.ui import compat
    blocks, panel, prompt, image = built
    c = panel.components
    assert panel.inputs == [c["enabled"], c["mode"], c["table"], c["batch_size"], c["same_noise"],
                            c["sd_checkpoint"], prompt, c["size"], c["size_px"]]
    assert c["table"].headers == HEADERS
    deps = compat.dependencies(blocks)
    targets = {t for d in deps for t in d["targets"]}
    for name in ("to_json", "from_json", "json_file", "plot_button", "preview_button"):
        assert c[name]._id in targets, name
    preview_dep = next(d for d in deps if c["preview_button"]._id in d["targets"])
    assert image._id in preview_dep["inputs"] and c["table"]._id in preview_dep["inputs"]
    # values -> schedule -> options -> the run plan's stage (refine_stage_for, as pipeline.plan_run calls it)
    from sadtalker_ext.options import GenerateOptions
    from sadtalker_ext.refine.stage import refine_stage_for
    defaults = panel.default_values()
    off = panel.apply(GenerateOptions(refine="old.json", refine_mode="every", sd_checkpoint="x"), *defaults)
    assert panel.get_schedule(*defaults) is None and (off.refine, off.refine_mode, off.sd_checkpoint) == (None,) * 3
    assert refine_stage_for(off.validate(), host=FakeHost()) is None
    on = [True] + defaults[1:-3] + ["prompt from txt2img"] + defaults[-2:]
    sched = panel.get_schedule(*on)
    assert sched.defaults.prompt == "prompt from txt2img" and len(sched.keyframes) == 2
    opts = panel.apply(GenerateOptions(), *on).validate()
    assert opts.refine == sched.to_dict() and opts.sd_checkpoint is None   # the checkpoint box is empty
    stage = refine_stage_for(opts, host=FakeHost(native=64))
    assert stage.backend.name == "host:fake-webui" and stage.schedule == sched
    with pytest.raises(DependencyError):
        refine_stage_for(opts, host=None)
    named = list(on)
    named[panel.inputs.index(c["sd_checkpoint"])] = " model.safetensors "
    assert panel.apply(GenerateOptions(), *named).sd_checkpoint == "model.safetensors"
    with pytest.raises(OptionError):
        panel.get_schedule(True, "every", [["x"] + [""] * 12], 4, True, "", "")
    # handlers
    h = panel.handlers
    text, msg = h["to_json"](EXAMPLE_ROWS, "every", 8, False)
    data = json.loads(text)
    assert msg == "" and data["mode"] == "every" and data["batch_size"] == 8 and len(data["keyframes"]) == 2
    rows, mode, batch, same, size, size_px, msg = h["from_json"](text)
    assert rows == EXAMPLE_ROWS and (mode, batch, same, size, msg) == ("every", 8, False, "auto", "")
    text, msg = h["to_json"](EXAMPLE_ROWS, "every", 8, False, "pixels", 384.0)   # gr.Number gives floats
    assert msg == "" and json.loads(text)["size"] == 384
    assert h["from_json"](text)[4:6] == ("pixels", 384)
    assert "size must be" in h["to_json"](EXAMPLE_ROWS, "every", 8, False, "pixels", 10)[1]
    assert "OptionError" in h["from_json"]('{"mode": 3}')[-1]
    outside = tmp_path / "k.json"          # a server file the client did not upload: refused, not read
    outside.write_text(text)
    got, msg = h["import_file"](str(outside))
    assert got != text and "was not uploaded through this page" in msg
    from sadtalker_ext.ui import guard
    upload = Path(guard.upload_roots()[0]) / f"th-test-{os.getpid()}"   # where gradio puts uploads
    upload.mkdir(parents=True, exist_ok=True)
    request.addfinalizer(lambda: shutil.rmtree(upload, ignore_errors=True))
    f = upload / "k.json"
    f.write_text(text)
    assert h["import_file"](str(f))[0] == text

    class Tmp:  # gradio 3 passes a tempfile wrapper with .name
        name = str(f)
    assert h["import_file"](Tmp())[0] == text
    fig, msg = h["plot"](EXAMPLE_ROWS, "keyframes", 4, True, 3.0)
    assert msg == "" and len(fig.axes) == 5  # no seed panel: the example fixes no seed
    out, msg = h["preview"](None, 0.0, None, *on)
    assert "InputError" in msg                                 # no image chosen: a message, no crash


def test_panel_builds_under_gradio4(gradio4_python, tmp_path):  # noqa: F811
    script = (
        "import sys, json\nsys.path.insert(0, sys.argv[1])\n"
        "from sadtalker_ext.ui import compat\n"
        "from sadtalker_ext.ui.refine_panel import build_refine_panel, EXAMPLE_ROWS\n"
        "gr = compat.gr()\n"
        "with gr.Blocks() as b:\n"
        "    p = gr.Textbox()\n"
        "    panel = build_refine_panel(prompt=p)\n"
        "s = panel.get_schedule(True, 'every', EXAMPLE_ROWS, 4, True, '', 'x')\n"
        "fig, msg = panel.handlers['plot'](EXAMPLE_ROWS, 'keyframes', 4, True, 3.0)\n"
        "print('RESULT' + json.dumps({'v': gr.__version__, 'inputs': len(panel.inputs), 'deps': len(compat.dependencies(b)),"
        " 'mode': s.mode, 'keys': len(s.keyframes), 'axes': len(fig.axes), 'msg': msg}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.run([str(gradio4_python), "-c", script, str(REPO)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    assert res["v"].startswith("4.40") and res == {**res, "inputs": 9, "deps": 5, "mode": "every", "keys": 2,
                                                    "axes": 5, "msg": ""}


def test_panel_uses_no_gradio3_only_calls():
    import re
    text = (REPO / "sadtalker_ext" / "ui" / "refine_panel.py").read_text()
    assert not re.findall(r"\.style\(|\b_js=|\bgr\.\w+\.update\(|[(,]\s*source=|[(,]\s*tool=", text)


@pytest.mark.parametrize("choice,pixels,side", [
    ("auto", None, None),       # the face crop's own size: between the face (116 px) and face + padding
    ("pixels", 384.0, 384),     # gr.Number hands over a float
    ("native", None, 512),
])
def test_tab_crop_size_control_reaches_the_refine_stage(tmp_path, request, monkeypatch, astronaut, arctic_wav,
                                                         choice, pixels, side):
    """The tab's crop-size controls go through the tab's Generate handler into the RefineStage the run plan builds:
    the img2img request the host gets has the chosen side (auto: the face crop's own, far below 512)."""
    pytest.importorskip("gradio")
    from sadtalker_ext import jobs
    from sadtalker_ext.ui import tab
    from test_refine_stage import chunks_of, ctx_for
    from test_ui_build import as_upload

    class Host(FakeHost):
        def output_dir(self):
            return tmp_path

    host = Host(native=512)
    ui = tab.build_blocks(host).talking_head_ui
    c = ui.refine.components
    assert c["size"] in ui.gen_inputs and c["size_px"] in ui.gen_inputs
    n = 5
    base = astronaut[:320, 64:384]
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])
    lms = np.stack([synthetic_landmarks(161 + 2 * i, 124) for i in range(n)])
    seen = {}

    def run_job(job, image, audio, options, *, source_info=None, stages=(), **kw):
        from sadtalker_ext.refine.stage import refine_stage_for
        stage = refine_stage_for(options.validate(), host=job)   # the stage the run plan builds
        seen["stages"] = list(stages) + [stage]
        list(stage(chunks_of(frames, lms), ctx_for(n)))          # on a real clip, through the host's img2img
        raise OptionError("stop here")
    monkeypatch.setattr(jobs, "run_job", run_job)
    values = {comp: getattr(comp, "value", None) for comp in ui.gen_inputs}
    values.update({ui.components["image"]: astronaut, ui.audio_components[0]: str(as_upload(arctic_wav, request)),
                   c["enabled"]: True, c["table"]: [list(r) for r in EXAMPLE_ROWS], c["size"]: choice})
    if pixels is not None:
        values[c["size_px"]] = pixels
    args = [values[comp] for comp in ui.gen_inputs]
    args[-1] = []                                             # the history state
    outs = list(ui.generate(*args))
    assert "stop here" in outs[-1][0]
    (stage,) = seen["stages"]
    assert stage.schedule.size == (choice if choice != "pixels" else 384)
    got = host.calls[0].images.shape[1:3]
    assert got[0] == got[1]
    if side is None:
        assert 116 <= got[0] <= 116 + 2 * 32 + 48 and got[0] % 8 == 0, got
    else:
        assert got[0] == side
