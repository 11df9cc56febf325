"""Issue 14: the option schema (sadtalker_ext.options) is the one declaration of every option.

The CLI's flags (argparse's actions), the tab's controls (the real gradio Blocks) and the HTTP API's
accepted keys must match it exactly: names, ranges, choices, defaults. Expected values are written here
from the schema's declared meaning (what users were promised), not read back from the front ends.
"""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from sadtalker_ext import options as O
from sadtalker_ext.api import inputs
from sadtalker_ext.cli.main import build_parser
from sadtalker_ext.errors import OptionError


def _generate_actions():
    """{flag: action} of the ``generate`` command's option groups (the stages' argument groups)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    gen = sub.choices["generate"]
    titles = set(O.STAGES.values())
    return {opt: a for g in gen._action_groups if g.title in titles for a in g._group_actions
            for opt in a.option_strings}


def test_schema_declares_every_field_by_stage():
    schema = O.schema()
    assert list(schema) == [f.name for f in dataclasses.fields(O.GenerateOptions)]
    stages = {s.stage for s in schema.values()}
    assert stages == set(O.STAGES)
    for group, stage in ((O.MotionOptions, "motion"), (O.LipsyncOptions, "lipsync"),
                         (O.RefineOptions, "refine"), (O.OutputOptions, "output")):
        assert {f.name for f in dataclasses.fields(group)} == {n for n, s in schema.items() if s.stage == stage}
    # the drifts issue 14 names: one range for the lip-sync masks, the settings' precision = the options'
    for name in ("mouth_mask_dilate", "face_mask_erode", "mask_blur"):
        assert schema[name].range == (0.0, 256.0)
    assert O.GenerateOptions().precision == "fp32"


def test_cli_flags_match_the_schema_exactly():
    actions = _generate_actions()
    d = O.GenerateOptions()
    expected = {}
    for name, spec in O.schema().items():
        flag = O.flag_of(name, spec)
        if flag is not None:
            expected[flag] = (name, spec)
    extra = set(actions) - set(expected)
    assert extra == set(), f"CLI flags not declared in the option schema: {sorted(extra)}"
    assert set(expected) == set(actions)
    for flag, (name, spec) in expected.items():
        a = actions[flag]
        default = getattr(d, name)
        if isinstance(default, bool):
            assert a.nargs == 0 and a.default is False, flag  # store_true; --no-blinks inverts
            assert spec.invert == (default is True), flag
            continue
        if name == "language":
            continue
        want = list(default) if isinstance(default, tuple) else default
        assert a.default == want, flag
        if spec.choices and all(isinstance(c, str) for c in spec.choices):
            assert tuple(a.choices) == spec.choices, flag
        else:
            assert a.choices is None, flag
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert a.type is type(default), flag
    # the literal list that drifted: --refine-mode's choices are the schema's
    assert tuple(actions["--refine-mode"].choices) == O.REFINE_MODES == ("every", "keyframes")


def test_cli_values_reach_the_options():
    from sadtalker_ext.cli.main import _options
    args = build_parser().parse_args(["generate", "--image", "a.png", "--audio", "a.wav", "--out", "o.mp4",
                                      "--no-blinks", "--pads", "1", "2", "3", "4", "--mask-blur", "100",
                                      "--refine-mode", "every", "--lang", "ru"])
    opts = _options(args)
    assert opts.blinks is False and opts.pads == (1, 2, 3, 4) and opts.mask_blur == 100.0
    assert opts.refine_mode == "every" and opts.language == "ru" and opts.still is False


def _components_by_option(tmp_path):
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.ui import tab

    tab.build_blocks(LocalHost(output_dir=tmp_path))
    ui = tab._last_ui
    return {s.name: c for s, c in zip(ui.specs, ui.option_components)}


def _choices(component):
    return [c[0] if isinstance(c, (tuple, list)) else c for c in component.choices]


def test_tab_controls_match_the_schema_exactly(tmp_path):
    comps = _components_by_option(tmp_path)
    schema = O.schema()
    assert list(comps) == list(schema)
    d = O.GenerateOptions()
    for name, spec in schema.items():
        c = comps[name]
        kind = type(c).__name__
        if spec.range is not None and kind in ("Slider", "Number"):
            assert c.minimum == spec.range[0], name
            assert c.maximum == (spec.range[1] if spec.ui_max else None), name
            assert c.value == getattr(d, name), name
        if spec.step is not None:
            assert kind == "Slider" and c.step == spec.step, name
        if spec.range is not None and isinstance(getattr(d, name), (int, float)) \
                and not isinstance(getattr(d, name), bool) and kind not in ("Slider", "Number", "Dropdown"):
            pytest.fail(f"{name} has a range but a {kind} control")
        if spec.choices or spec.suggestions:
            assert kind == "Dropdown", name
            shown = [x for x in _choices(c) if x != ""]
            want = [str(x) for x in (spec.choices or spec.suggestions)]
            assert shown[:len(want)] == want and set(shown) - set(want) <= {str(getattr(d, name))}, name
            assert (c.value or None) == (None if getattr(d, name) is None else str(getattr(d, name))), name
        if isinstance(getattr(d, name), bool):
            assert kind == "Checkbox" and c.value == getattr(d, name), name
    # the sliders that stopped at 64 while validate took 256
    assert comps["mask_blur"].maximum == comps["face_mask_erode"].maximum == 256.0


def test_api_accepts_exactly_the_schema_keys_that_are_not_server_paths():
    schema = O.schema()
    assert inputs.PATH_OPTIONS == {n for n, s in schema.items() if s.value == "path"} == {
        "checkpoints", "ref_eyeblink", "ref_pose", "lipsync_debug", "sd_checkpoint"}
    assert inputs.PATH_OR_DATA_OPTIONS == {"refine"}
    accepted = {n for n in schema if not inputs.is_path_option(n)}
    assert accepted == {n for n, s in schema.items() if s.value != "path"}
    for name in accepted - {"refine"}:
        opts = inputs.parse_options({name: getattr(O.GenerateOptions(), name)})
        assert getattr(opts, name) == getattr(O.GenerateOptions(), name)
    for name in inputs.PATH_OPTIONS:
        with pytest.raises(OptionError, match="name files on the server"):
            inputs.parse_options({name: "x"})
    with pytest.raises(OptionError, match="unknown option"):
        inputs.parse_options({"not_an_option": 1})


@pytest.mark.parametrize("name", [n for n, s in O.schema().items() if s.range is not None and n not in ("fps", "pads")])
def test_validate_uses_the_declared_range(name):
    lo, hi = O.schema()[name].range
    integer = isinstance(getattr(O.GenerateOptions(), name), int)
    O.GenerateOptions(**{name: lo}).validate()
    O.GenerateOptions(**{name: hi}).validate()
    with pytest.raises(OptionError, match=f"--{name.replace('_', '-')} must be a number in {lo}..{hi}"):
        O.GenerateOptions(**{name: hi + 1}).validate()
    with pytest.raises(OptionError):
        O.GenerateOptions(**{name: lo - (1 if integer else 0.5)}).validate()


def test_host_settings_choices_are_the_options():
    from sadtalker_ext.host import a1111
    assert a1111.ENGINE_CHOICES == list(O.ENGINES)
    assert a1111.PRECISION_CHOICES == list(O.PRECISIONS)
    assert a1111.SETTINGS["talking_head_precision"][0] == O.GenerateOptions().precision
    from sadtalker_ext.engines import sadtalker
    assert set(sadtalker.PREPROCESS_MODES) == set(O.PREPROCESS)


# ------------------------------------------------------------------ mutation-testing survivors (issue 19)
# bench/mutation.sh found these behaviours untested; each test pins the exact value or message.
def _known_names():
    return ", ".join(sorted(f.name for f in dataclasses.fields(O.GenerateOptions)))


def test_unknown_option_message_lists_shortest_first_truncates_and_counts_the_rest():
    data = {"zz": 1, "b": 2, "aaa": 3, 7: 4, "k" * 41: 5, "j" * 40: 6, "ccc": 7, "pose_style": 0}
    with pytest.raises(OptionError) as e:
        O.GenerateOptions.from_dict(data)
    # sorted by (length, name); names over 40 characters cut to 37 + "..."; the first 5 shown
    assert str(e.value) == ("unknown option(s): 7, b, zz, aaa, ccc and 2 more; known: " + _known_names())
    with pytest.raises(OptionError) as e:
        O.GenerateOptions.from_dict({"k" * 41: 1, "j" * 40: 2, "seed": 1})
    assert str(e.value) == f"unknown option(s): {'j' * 40}, {'k' * 37}...; known: " + _known_names()
    with pytest.raises(OptionError) as e:
        O.GenerateOptions.from_dict({"b": 1, "a": 2, "c": 3, "d": 4, "e": 5})
    assert str(e.value) == "unknown option(s): a, b, c, d, e; known: " + _known_names()
    assert O.GenerateOptions.from_dict({"pose_style": 3, "seed": 5}) == O.GenerateOptions(pose_style=3, seed=5)


def test_short_bounds_a_hostile_value_to_80_characters():
    # reprlib already cuts each string to 60 characters; two 36-character strings make exactly 80
    exactly_80 = ("a" * 36, "b" * 36)
    assert O._short(exactly_80) == "('" + "a" * 36 + "', '" + "b" * 36 + "')"
    assert O._short(("a" * 36, "b" * 37)) == "('" + "a" * 36 + "', '" + "b" * 35 + "..."
    assert len(O._short(("a" * 36, "b" * 37))) == 80
    assert O._short("x" * 10) == "'" + "x" * 10 + "'"
    # a value whose bounded repr raises (reprlib slices anything whose class is named "str") is
    # described by its type name
    fake_str = type("str", (), {})()
    assert O._short(fake_str) == "<str>"
    with pytest.raises(OptionError) as e:
        O.GenerateOptions(device=fake_str).validate()
    assert str(e.value).startswith("--device <str> is not valid; ")


def test_path_check_refuses_what_is_not_a_path_with_the_options_flag():
    check = O._path_check("a video file")
    for ok in (None, "clip.mp4", " clip.mp4 "):
        check(O.GenerateOptions(ref_pose=ok), "ref_pose")
    for bad in ("", "   ", 3, b"clip.mp4"):
        with pytest.raises(OptionError) as e:
            check(O.GenerateOptions(ref_pose=bad), "ref_pose")
        assert str(e.value) == "--ref-pose must be the path of a video file"


def test_option_makes_a_dataclass_field_with_its_spec():
    @dataclasses.dataclass
    class Knobs:
        size: int = O.option(256, stage="output", label="Size", unit="px")
        pads: list = O.option(default_factory=lambda: [0, 10], stage="lipsync", label="Pads")

    a, b = Knobs(), Knobs()
    assert a.size == 256 and a.pads == [0, 10] and a.pads is not b.pads
    size, pads = dataclasses.fields(Knobs)
    assert O.spec_of(size) == O.Option(stage="output", label="Size", unit="px")
    assert O.spec_of(pads) == O.Option(stage="lipsync", label="Pads")
    assert size.default == 256 and pads.default is dataclasses.MISSING


def test_flag_of_defaults_to_the_dashed_name_unless_the_spec_says_otherwise():
    assert O.flag_of("pose_style") == "--pose-style"
    assert O.flag_of("pose_style", O.Option(stage="motion", label="Pose")) == "--pose-style"
    assert O.flag_of("language", O.Option(stage="motion", label="Language", flag="--lang")) == "--lang"
    assert O.flag_of("engine_internal", O.Option(stage="motion", label="x", flag=None)) is None


def test_refine_takes_a_path_or_parsed_json_and_nothing_else():
    from sadtalker_ext.refine.keyframes import KeyframeSchedule
    for ok in (None, "keys.json", {"keyframes": []}, []):
        assert O.GenerateOptions(refine=ok).validate().refine is ok
    # a schedule object travels as its JSON object (the tab's panel: KeyframeSchedule.to_dict)
    for bad in ("", "  ", 3, b"keys.json", ("keys.json",), KeyframeSchedule()):
        with pytest.raises(OptionError) as e:
            O.GenerateOptions(refine=bad).validate()
        assert str(e.value) == "--refine must be the path of a keyframes JSON file"  # exact: case too


def test_fps_other_than_25_is_refused_with_the_reason():
    for bad in (30, 24, 25.5, "25"):
        with pytest.raises(OptionError) as e:
            O.GenerateOptions(fps=bad).validate()
        assert str(e.value) == "only 25 fps output is supported (the audio models are trained at 25 fps)"
    assert O.GenerateOptions(fps=25).validate().fps == 25


def test_device_accepts_the_named_devices_and_cuda_n_only():
    for ok in ("auto", "cpu", "cuda", "mps", "cuda:0", "cuda:12"):
        assert O.GenerateOptions(device=ok).validate().device == ok
    for bad in ("cuda:", "cuda:x", "cuda:1a", "CUDA:0", "cuda0", "gpu", 3):
        with pytest.raises(OptionError) as e:
            O.GenerateOptions(device=bad).validate()
        assert str(e.value) == f"--device {bad!r} is not valid; use auto, cpu, cuda, cuda:N or mps"


def test_transcript_must_be_text_of_at_most_200000_characters():
    assert O.GenerateOptions(transcript="x" * 200_000).validate().transcript == "x" * 200_000
    assert O.GenerateOptions(transcript="hello").validate().transcript == "hello"
    with pytest.raises(OptionError) as e:
        O.GenerateOptions(transcript=b"hello").validate()
    assert str(e.value) == "--transcript must be text"
    with pytest.raises(OptionError) as e:
        O.GenerateOptions(transcript="x" * 200_001).validate()
    assert str(e.value) == ("--transcript is 200001 characters; at most 200000 are accepted "
                            "(leave it out to recognise the speech)")


def test_language_must_be_a_lowercase_code():
    for ok in ("en", "ru", "zh", "pt-BR", "en_US", "en-" + "a" * 29):  # at most 32 characters
        assert O.GenerateOptions(language=ok).validate().language == ok
    for bad in ("EN", "e", "english", "en-", "en-" + "a" * 30, 3, None):
        with pytest.raises(OptionError) as e:
            O.GenerateOptions(language=bad).validate()
        assert str(e.value) == f"--lang {bad!r} is not a language code; use e.g. en, ru, zh"
    with pytest.raises(OptionError) as e:
        O.GenerateOptions(language="EN").validate()
    assert str(e.value) == "--lang 'EN' is not a language code; use e.g. en, ru, zh"


def test_pads_must_be_four_integers_and_the_message_shows_what_came():
    assert O.GenerateOptions(pads=[0, 10, 0, 0]).validate().pads == (0, 10, 0, 0)
    for bad, shown in (((0, 10, 0), "(0, 10, 0)"), (5, "5"), ("0 10 0 0", "'0 10 0 0'"),
                       ((0, 10, 0, 1025), "(0, 10, 0, 1025)")):
        with pytest.raises(OptionError) as e:
            O.GenerateOptions(pads=bad).validate()
        assert str(e.value) == f"--pads needs 4 integers top bottom left right in -1024..1024, got {shown}"


def test_to_dict_holds_every_field_and_round_trips():
    d = O.GenerateOptions(seed=5, pose_style=3).to_dict()
    assert d["seed"] == 5 and d["pose_style"] == 3
    assert set(d) == {f.name for f in dataclasses.fields(O.GenerateOptions)}
    assert O.GenerateOptions.from_dict(d) == O.GenerateOptions(seed=5, pose_style=3)
