"""The refinement parameters are declared once (sadtalker_ext/refine/params.py, issue 14 step 3): the keyframe's
fields, the keys a keyframes JSON may hold (CLI, tab import, HTTP API), the keyframe table's columns and plot
labels, and the img2img request a backend / host receives all come from RefineParams' fields."""
from __future__ import annotations

import re
from dataclasses import fields

import numpy as np
import pytest

from sadtalker_ext.api.inputs import parse_options
from sadtalker_ext.errors import OptionError
from sadtalker_ext.refine import keyframes
from sadtalker_ext.refine.keyframes import Keyframe, KeyframeSchedule
from sadtalker_ext.refine.params import FIELD_SPECS, Img2ImgRequest, RefineParams
from sadtalker_ext.refine.stage import RefineStage, load_schedule
from sadtalker_ext.ui.refine_panel import COLUMNS, HEADERS, PLOT_LABELS, rows_to_schedule, schedule_to_rows

from test_refine_stage import Recorder, chunks_of, ctx_for, synthetic_landmarks

PARAMS = [f.name for f in fields(RefineParams)]


def _edge_values():
    """A value for every declared field at the edge of what it accepts (numbers at their upper bound)."""
    out = {}
    for name, spec in FIELD_SPECS.items():
        if spec.kind == "choice":
            out[name] = spec.choices[-1]
        elif spec.kind == "text":
            out[name] = "DDIM" if name == "sampler" else f"{name} text"
        else:
            out[name] = int(spec.hi) if spec.kind == "int" else float(spec.hi)
    return out


def test_the_declaration_is_the_one_field_list():
    assert list(FIELD_SPECS) == PARAMS
    assert PARAMS == ["prompt", "negative_prompt", "denoising_strength", "cfg_scale", "steps", "sampler", "seed",
                      "mask", "mask_blur", "padding"]
    kf = fields(Keyframe)
    assert [f.name for f in kf] == ["time", "frame", *PARAMS, "interpolation"]
    for f in kf[2:-1]:
        assert f.default is None and str(f.type).startswith("Optional[")
    # every declared default is a valid value (the prompt's None = "the portrait's own prompt")
    assert RefineParams().validate() == RefineParams()


def test_json_keys_of_the_cli_tab_and_api_are_the_declared_fields():
    values = _edge_values()
    data = {"defaults": dict(values), "keyframes": [{"time": 0, **values}, {"frame": 5, "cfg_scale": 2}]}
    s = load_schedule(data)                               # what --refine and the tab's JSON import read
    assert s.keyframes[0].values() == values and s.defaults.to_dict() == values
    assert parse_options({"refine": data}).refine == data  # the HTTP API checks the schedule before the job
    for bad in ({"defaults": {"strength": 0.3}}, {"keyframes": [{"time": 0, "strength": 0.3}]}):
        with pytest.raises(OptionError, match="strength"):
            load_schedule(bad)
        with pytest.raises(OptionError, match="strength"):
            parse_options({"refine": bad})
    for name, spec in FIELD_SPECS.items():              # each range is the declared one
        if spec.numeric:
            with pytest.raises(OptionError, match=name):
                load_schedule({"keyframes": [{"time": 0, name: spec.hi + 1}]})


def test_keyframe_table_columns_and_plot_labels_derive_from_the_declaration():
    assert [name for _, name in COLUMNS] == ["time", "frame", *PARAMS, "interpolation"]
    # the headers the tab always showed (written out here, not read from the code)
    assert HEADERS == ["time (s)", "frame", "prompt", "negative prompt", "denoising", "CFG", "steps", "sampler",
                       "seed", "mask", "mask blur", "padding", "interpolation"]
    assert PLOT_LABELS == {"denoising_strength": "denoising strength", "cfg_scale": "CFG scale", "steps": "steps",
                           "seed": "seed", "mask_blur": "mask blur (px)", "padding": "padding (px)"}
    values = _edge_values()
    s = KeyframeSchedule([Keyframe(time=1.5, **values, interpolation={"cfg_scale": "ease"})]).validate()
    rows = schedule_to_rows(s)
    assert len(rows[0]) == len(COLUMNS)
    back = rows_to_schedule(rows)
    assert back.keyframes[0].values() == values and back.keyframes[0].interpolation == {"cfg_scale": "ease"}


def test_the_img2img_request_carries_the_declared_parameters(astronaut):
    names = {f.name for f in fields(Img2ImgRequest)}
    # typed, no "extra" dict; the parameters only in .params (request.mask is the mask image itself, the
    # parameter "mask" - which kind of mask - is params.mask)
    assert "extra" not in names and names & set(PARAMS) == {"mask"}
    assert {f.name: f.type for f in fields(Img2ImgRequest)}["params"] == "RefineParams"
    frames = np.stack([astronaut[:320, 64:384]] * 6)
    lms = np.stack([synthetic_landmarks(161, 124)] * 6)
    set_all = {**_edge_values(), "mask": "face", "denoising_strength": 0.4, "prompt": "a portrait"}
    sched = KeyframeSchedule([Keyframe(frame=0, **set_all), Keyframe(frame=3, steps=40, mask_blur=2)],
                             mode="every", batch_size=3).validate()
    rec = Recorder()
    list(RefineStage(sched, rec, seed=1)(chunks_of(frames, lms, 3), ctx_for(6)))
    assert [r.frame_indices for r in rec.requests] == [[0, 1, 2], [3, 4, 5]]
    for r, first in zip(rec.requests, (0, 3)):
        assert r.params == sched.params_at(first, 25.0)          # every field as scheduled for the batch
    assert rec.requests[1].params.steps == 40 and rec.requests[1].params.mask_blur == 2
    # a request built without the stage gets the declared defaults (prompt None reads as "")
    bare = Img2ImgRequest(images=frames[:1])
    assert bare.params == RefineParams(prompt="")


def test_the_keyframes_doc_table_matches_the_declaration():
    rows = {}
    for line in keyframes.__doc__.splitlines():
        m = re.match(r"^(\w+)\s+(float|int px|int)\s+(-?[\d^]+(?:-1)?) \.\. (-?[\d^]+(?:-1)?)\s+(\w+)", line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    numeric = [n for n, s in FIELD_SPECS.items() if s.numeric]
    assert sorted(rows) == sorted(numeric)

    def num(text):
        return 2 ** 32 - 1 if text == "2^32-1" else float(text)

    for name, (kind, lo, hi, interp) in rows.items():
        spec = FIELD_SPECS[name]
        assert (num(lo), num(hi), interp) == (spec.lo, spec.hi, spec.interpolation), name
        assert kind.split()[0] == spec.kind and (kind.endswith("px") == (spec.unit == "px")), name
