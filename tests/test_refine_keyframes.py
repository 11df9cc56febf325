"""Keyframe schedule of the img2img refinement: interpolation of every field type and mode, order,
duplicates, keyframes past the end, JSON round trip and validation, the portrait's prompt."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sadtalker_ext.errors import InputError, OptionError
from sadtalker_ext.refine.keyframes import (FIELD_SPECS, NUMERIC_FIELDS, TEXT_FIELDS, Keyframe, KeyframeSchedule,
                                            RefineParams, frame_of_time, portrait_prompt, prompt_from_infotext)

FPS = 25


def sched(*kfs, **kw):
    return KeyframeSchedule(keyframes=list(kfs), **kw).validate()


def test_field_table_covers_the_issue():
    assert set(FIELD_SPECS) == {"prompt", "negative_prompt", "denoising_strength", "cfg_scale", "steps", "sampler",
                                "seed", "mask", "mask_blur", "padding"}
    assert set(TEXT_FIELDS) == {"prompt", "negative_prompt", "sampler", "mask"}


@pytest.mark.parametrize("name,a,b,kind", [
    ("denoising_strength", 0.2, 0.6, float), ("cfg_scale", 4.0, 10.0, float), ("steps", 10, 30, int),
    ("mask_blur", 0, 16, int), ("padding", 8, 64, int), ("seed", 100, 200, int)])
@pytest.mark.parametrize("mode", ["linear", "hold", "ease"])
def test_numeric_interpolation_every_field_and_mode(name, a, b, kind, mode):
    s = sched(Keyframe(frame=10, **{name: a}), Keyframe(frame=30, **{name: b}), interpolation={name: mode})
    vals = s.track_values(name, FPS, 41)
    assert np.all(vals[:11] == a) and np.all(vals[30:] == b)        # held before the first / after the last key
    u = (np.arange(10, 31) - 10) / 20.0
    if mode == "linear":
        expect = a + u * (b - a)
    elif mode == "hold":
        expect = np.where(u < 1, a, b)
    else:
        expect = a + (3 * u ** 2 - 2 * u ** 3) * (b - a)
    if kind is int:
        expect = np.floor(expect + 0.5)
        assert all(isinstance(getattr(s.params_at(f, FPS), name), int) for f in (10, 17, 30))
    np.testing.assert_allclose(vals[10:31], expect, atol=1e-12)
    if mode == "ease":  # zero slope at both keys: smaller steps near the ends than in the middle
        d = np.abs(np.diff(s.track_values(name, FPS, 41)[10:31].astype(float)))
        assert d[0] <= d[10] and d[-1] <= d[10]


def test_field_defaults_for_interpolation():
    s = sched(Keyframe(frame=0, seed=5, denoising_strength=0.0, steps=10),
              Keyframe(frame=10, seed=15, denoising_strength=1.0, steps=20))
    p = s.params_at(5, FPS)
    assert p.seed == 5                      # seed holds by default
    assert p.denoising_strength == pytest.approx(0.5) and p.steps == 15   # numeric default linear


def test_per_keyframe_interpolation_overrides_schedule():
    s = sched(Keyframe(frame=0, cfg_scale=5.0, interpolation={"cfg_scale": "hold"}),
              Keyframe(frame=10, cfg_scale=15.0), Keyframe(frame=20, cfg_scale=5.0),
              interpolation={"cfg_scale": "ease"})
    v = s.track_values("cfg_scale", FPS, 21)
    assert np.all(v[:10] == 5.0)                          # segment 0-10: the keyframe's own "hold"
    assert v[15] == pytest.approx(10.0)                   # segment 10-20: the schedule's "ease"
    np.testing.assert_allclose(v[12], 15.0 - 10.0 * (3 * 0.2 ** 2 - 2 * 0.2 ** 3))


@pytest.mark.parametrize("name,a,b", [("prompt", "a cat", "a dog"), ("negative_prompt", "blur", "noise"),
                                      ("sampler", "Euler a", "DDIM"), ("mask", "face", "mouth")])
def test_text_fields_change_at_their_keyframe(name, a, b):
    s = sched(Keyframe(time=0.4, **{name: a}), Keyframe(time=1.0, **{name: b}))
    assert [getattr(s.params_at(f, FPS), name) for f in (10, 24, 25, 99)] == [a, a, b, b]
    default = getattr(RefineParams(prompt=""), name)
    assert [getattr(s.params_at(f, FPS), name) for f in (0, 9)] == [default, default]  # before its first key


def test_text_field_rejects_interpolation():
    with pytest.raises(OptionError, match="prompt is text"):
        sched(Keyframe(frame=0, prompt="x", interpolation={"prompt": "linear"}))


def test_unset_fields_take_defaults_and_tracks_are_independent():
    d = RefineParams(prompt="base", negative_prompt="ugly", denoising_strength=0.25, cfg_scale=6.0, steps=12,
                     sampler="DDIM", seed=7, mask="mouth", mask_blur=3, padding=10)
    s = sched(Keyframe(frame=50, cfg_scale=9.0), defaults=d)
    p = s.params_at(0, FPS)
    assert p == RefineParams(prompt="base", negative_prompt="ugly", denoising_strength=0.25, cfg_scale=9.0,
                             steps=12, sampler="DDIM", seed=7, mask="mouth", mask_blur=3, padding=10)


def test_out_of_order_keyframes_equal_sorted():
    kfs = [Keyframe(frame=40, steps=40, prompt="c"), Keyframe(time=0.0, steps=10, prompt="a"),
           Keyframe(frame=20, steps=20, prompt="b", cfg_scale=3.0)]
    a = sched(*kfs)
    b = sched(kfs[1], kfs[2], kfs[0])
    for f in range(0, 60, 3):
        assert a.params_at(f, FPS) == b.params_at(f, FPS)
    assert a.keyframe_frames(FPS) == [0, 20, 40]
    assert a.params_at(30, FPS).steps == 30 and a.params_at(30, FPS).prompt == "b"


def test_duplicates_merge_later_wins_per_field():
    s = sched(Keyframe(frame=10, denoising_strength=0.2, prompt="first", cfg_scale=4.0),
              Keyframe(time=0.4, denoising_strength=0.6, interpolation={"denoising_strength": "hold"}),  # frame 10
              Keyframe(frame=20, denoising_strength=1.0))
    assert s.keyframe_frames(FPS) == [10, 20]
    p = s.params_at(10, FPS)
    assert p.denoising_strength == 0.6 and p.prompt == "first" and p.cfg_scale == 4.0
    assert s.params_at(15, FPS).denoising_strength == 0.6   # the later duplicate's "hold" applies


def test_keyframes_beyond_the_end():
    s = sched(Keyframe(frame=0, denoising_strength=0.0), Keyframe(frame=100, denoising_strength=1.0, prompt="late"))
    n = 50
    assert s.keyframe_frames(FPS, n) == [0]            # the one past the end is never refined...
    assert s.keyframe_frames(FPS) == [0, 100]
    v = s.track_values("denoising_strength", FPS, n)   # ...but still shapes the interpolation
    np.testing.assert_allclose(v, np.arange(n) / 100.0)
    assert s.params_at(49, FPS).prompt == ""           # its text would take effect only at its own frame
    only_late = sched(Keyframe(time=10.0, cfg_scale=3.0))
    assert only_late.keyframe_frames(FPS, 100) == [] and only_late.params_at(0, FPS).cfg_scale == 3.0


def test_time_to_frame():
    assert frame_of_time(2.0, 25) == 50 and frame_of_time(2.039, 25) == 50 and frame_of_time(2.04, 25) == 51
    assert frame_of_time(0.12, 25) == 3   # 0.12 * 25 = 2.9999999999999996 in floating point
    assert Keyframe(time=1.0).validate().index(30) == 30


def test_seed_minus_one_is_the_runs_seed():
    s = sched(Keyframe(frame=0, seed=-1), Keyframe(frame=10, seed=50), interpolation={"seed": "linear"})
    assert s.params_at(0, FPS, random_seed=1234).seed == 1234
    assert s.params_at(5, FPS, random_seed=10).seed == 30
    assert sched().params_at(3, FPS, random_seed=99).seed == 99


def test_default_prompt_from_portrait():
    s = sched(Keyframe(frame=10, prompt="later")).with_source_prompt("from txt2img")
    assert [s.params_at(f, FPS).prompt for f in (0, 9, 10)] == ["from txt2img", "from txt2img", "later"]
    s2 = sched(Keyframe(frame=10, cfg_scale=5.0)).with_source_prompt("photo of a woman", "lowres")
    assert s2.params_at(0, FPS).prompt == "photo of a woman" and s2.params_at(0, FPS).negative_prompt == "lowres"
    s3 = sched(defaults=RefineParams(prompt="mine", negative_prompt="x")).with_source_prompt("other", "y")
    assert s3.params_at(0, FPS).prompt == "mine" and s3.params_at(0, FPS).negative_prompt == "x"
    assert sched().params_at(0, FPS).prompt == ""


def test_infotext_parsing(tmp_path):
    text = ("portrait of an astronaut,\nstudio light\nNegative prompt: blurry, lowres\nbad hands\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    assert prompt_from_infotext(text) == ("portrait of an astronaut,\nstudio light", "blurry, lowres\nbad hands")
    assert prompt_from_infotext("just a prompt\nSteps: 20, Sampler: Euler") == ("just a prompt", "")
    assert prompt_from_infotext(None) == ("", "")
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert portrait_prompt(path)[0] == "portrait of an astronaut,\nstudio light"
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert portrait_prompt(tmp_path / "plain.png") == ("", "")
    assert portrait_prompt(np.zeros((4, 4, 3), np.uint8)) == ("", "")
    assert portrait_prompt(tmp_path / "missing.png") == ("", "")


def test_json_round_trip(tmp_path):
    s = sched(Keyframe(time=0.5, prompt="a", denoising_strength=0.35, interpolation={"denoising_strength": "ease"}),
              Keyframe(frame=40, cfg_scale=5.5, steps=25, sampler="DDIM", seed=3, mask="mouth", mask_blur=4,
                       padding=16, negative_prompt="n"),
              defaults=RefineParams(prompt=None, negative_prompt="bad"), interpolation={"steps": "hold"},
              mode="every", batch_size=8, same_noise=False, flow="farneback", max_buffer_mb=256)
    path = s.save(tmp_path / "k.json")
    back = KeyframeSchedule.load(path)
    assert back == s
    data = json.loads(path.read_text())
    assert data["keyframes"][0] == {"time": 0.5, "prompt": "a", "denoising_strength": 0.35,
                                    "interpolation": {"denoising_strength": "ease"}}
    assert "time" not in data["keyframes"][1]
    # a bare list is the keyframes list
    bare = KeyframeSchedule.from_json('[{"frame": 3, "steps": 5}]')
    assert bare.keyframes == [Keyframe(frame=3, steps=5)] and bare.mode == "keyframes"
    assert KeyframeSchedule.from_json('{"keyframes": [{"time": 1, "steps": 30.0}]}').keyframes[0].steps == 30


@pytest.mark.parametrize("text,match", [
    ('{"keyframes": [{"steps": 5}]}', "keyframe 1: give exactly one of time"),
    ('{"keyframes": [{"time": 1, "frame": 2}]}', "exactly one"),
    ('{"keyframes": [{"time": -1}]}', "time must be seconds >= 0"),
    ('{"keyframes": [{"frame": 1.5}]}', "frame must be a whole number"),
    ('{"keyframes": [{"frame": 0}, {"frame": 1, "denoising_strength": 1.5}]}', "keyframe 2: denoising_strength must be"),
    ('{"keyframes": [{"frame": 0, "steps": 0}]}', "steps must be a number in 1..150"),
    ('{"keyframes": [{"frame": 0, "steps": 2.5}]}', "steps must be a whole number"),
    ('{"keyframes": [{"frame": 0, "cfg_scale": "high"}]}', "cfg_scale must be a number"),
    ('{"keyframes": [{"frame": 0, "mask": "eyes"}]}', "mask 'eyes' is not valid"),
    ('{"keyframes": [{"frame": 0, "prompt": 3}]}', "prompt must be text"),
    ('{"keyframes": [{"frame": 0, "sampler": " "}]}', "sampler must be"),
    ('{"keyframes": [{"frame": 0, "colour": 1}]}', "unknown key"),
    ('{"keyframes": [{"frame": 0, "interpolation": {"cfg_scale": "cubic"}}]}', "interpolation 'cubic'"),
    ('{"keyframes": [{"frame": 0, "interpolation": {"zoom": "linear"}}]}', "unknown field 'zoom'"),
    ('{"mode": "some"}', "refine mode 'some'"),
    ('{"batch_size": 0}', "batch_size"),
    ('{"flow": "lk"}', "flow 'lk'"),
    ('{"max_buffer_mb": 1}', "max_buffer_mb"),
    ('{"defaults": {"seed": -2}}', "defaults: seed"),
    ('{"defaults": {"size": 3}}', "defaults: unknown field"),
    ('{"version": 2}', "version 2"),
    ('{"frames": []}', "unknown key"),
    ('"text"', "JSON object"),
    ('{bad json', "not valid"),
])
def test_validation_errors(text, match):
    with pytest.raises(OptionError, match=match) as ei:
        KeyframeSchedule.from_json(text)
    assert "\n" not in str(ei.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the keyframes file"):
        KeyframeSchedule.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"keyframes": [{"frame": 0, "steps": -1}]}')
    with pytest.raises(OptionError, match=r"bad.json: keyframe 1: steps"):
        KeyframeSchedule.load(tmp_path / "bad.json")


def test_track_values_rejects_text_and_key_frames_of():
    s = sched(Keyframe(frame=5, cfg_scale=3.0), Keyframe(frame=9, steps=3), Keyframe(frame=2, cfg_scale=4.0))
    assert s.key_frames_of("cfg_scale", FPS) == [2, 5] and s.key_frames_of("steps", FPS) == [9]
    with pytest.raises(OptionError):
        s.track_values("prompt", FPS, 10)
    assert set(NUMERIC_FIELDS) == {"denoising_strength", "cfg_scale", "steps", "seed", "mask_blur", "padding"}
