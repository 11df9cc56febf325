"""Every numeric option at its bounds, through the CLI, the HTTP API and the tab's handler.

The bounds below are written from what each option means, not read from ``options.py``:

* ``pose_style`` 0..45: the PoseVAE has 46 class biases (``audio2pose.netG.decoder.classbias`` is
  ``[46, 64]`` in the official checkpoint manifest; official ``--pose_style`` "from [0, 46)").
* ``crf`` 0..51: libx264's CRF scale for 8-bit video.
* ``restore_fidelity`` 0..1: CodeFormer's fidelity weight ``w`` in [0, 1].
* ``seed`` 0..2**63-1: a non-negative signed 64-bit integer (numpy's ``default_rng`` and
  ``torch.Generator.manual_seed`` take it; negative seeds are refused by numpy).
* ``expression_scale`` 0..3, ``face_index`` 0..63, ``chunk_size`` 1..256, ``max_side`` 256..8192,
  ``batch_size`` 1..64, ``wav2lip_batch_size`` 1..1024, mask sizes 0..256 px, pads -1024..1024 px:
  the documented ranges (README / ``--help``).

At ``lo`` and ``hi`` the value is accepted; one step beyond (integers: +-1; floats: the next
representable double) is a one-line OptionError naming the option. The values at the bounds also
run through the code that uses them (networks, writer, compositing) without a traceback.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sadtalker_ext.errors import OptionError
from sadtalker_ext.options import GenerateOptions

INT_BOUNDS = {
    "pose_style": (0, 45), "seed": (0, 2**63 - 1), "face_index": (0, 63), "chunk_size": (1, 256),
    "crf": (0, 51), "max_side": (256, 8192), "batch_size": (1, 64), "wav2lip_batch_size": (1, 1024),
}
FLOAT_BOUNDS = {
    "expression_scale": (0.0, 3.0), "mouth_mask_dilate": (0.0, 256.0), "face_mask_erode": (0.0, 256.0),
    "mask_blur": (0.0, 256.0), "restore_fidelity": (0.0, 1.0),
}


def _cases():
    for name, (lo, hi) in INT_BOUNDS.items():
        yield name, lo, hi, lo - 1, hi + 1
    for name, (lo, hi) in FLOAT_BOUNDS.items():
        yield name, lo, hi, math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)


CASES = list(_cases())
ACCEPTED = [(n, v) for n, lo, hi, _, _ in CASES for v in (lo, hi)] + [("size", 256), ("size", 512)]
REJECTED = [(n, v) for n, _, _, below, above in CASES for v in (below, above)] + \
    [("size", v) for v in (255, 257, 511, 513)] + [("fps", 24), ("fps", 26)]


def _flag(name):
    return "--" + name.replace("_", "-")


def _one_line(msg: str, name: str):
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    assert name.replace("_", "-") in msg or name in msg, msg


def test_pose_style_bound_is_the_checkpoints_class_count(reference_dir):
    manifest = json.loads((reference_dir / "manifests" / "SadTalker_V0.0.2_256.safetensors.json").read_text())
    classes = manifest["keys"]["audio2pose.netG.decoder.classbias"]["shape"][0]
    assert INT_BOUNDS["pose_style"] == (0, classes - 1) == (0, 45)


# -- the Python API / HTTP API's option parser --------------------------------------------------
@pytest.mark.parametrize("name,value", ACCEPTED)
def test_api_accepts_the_bounds(name, value):
    from sadtalker_ext.api.inputs import parse_options
    opts = parse_options({name: value})
    assert getattr(opts, name) == value
    assert getattr(GenerateOptions(**{name: value}).validate(), name) == value


@pytest.mark.parametrize("name,value", REJECTED)
def test_api_refuses_one_step_beyond(name, value):
    from sadtalker_ext.api.inputs import parse_options
    with pytest.raises(OptionError) as err:
        parse_options(json.dumps({name: value}))
    _one_line(str(err.value), name)
    with pytest.raises(OptionError):
        GenerateOptions(**{name: value}).validate()


@pytest.mark.parametrize("value", [-1025, 1025])
@pytest.mark.parametrize("side", range(4))
def test_pads_bounds(value, side):
    from sadtalker_ext.api.inputs import parse_options
    for ok in (-1024, 1024):
        pads = [0, 10, 0, 0]
        pads[side] = ok
        assert parse_options({"pads": pads}).pads == tuple(pads)
    pads = [0, 10, 0, 0]
    pads[side] = value
    with pytest.raises(OptionError) as err:
        parse_options({"pads": pads})
    _one_line(str(err.value), "pads")


# -- the CLI ------------------------------------------------------------------------------------------
def _cli_args(name, value, tmp_path):
    if name == "pads":
        extra = ["--pads", *map(str, value)]
    else:
        extra = [f"{_flag(name)}={value!r}"]  # "=": a negative value is not taken for a flag
    return ["--quiet", "generate", "--image", str(tmp_path / "p.png"), "--audio", str(tmp_path / "a.wav"),
            "--out", str(tmp_path / "o.mp4"), *extra]


@pytest.mark.parametrize("name,value", [c for c in ACCEPTED])
def test_cli_accepts_the_bounds(name, value, tmp_path):
    from sadtalker_ext.cli.main import _options, build_parser
    args = build_parser().parse_args(_cli_args(name, value, tmp_path))
    assert getattr(_options(args), name) == value


@pytest.mark.parametrize("name,value", [c for c in REJECTED if c[0] != "fps"])
def test_cli_refuses_one_step_beyond(name, value, tmp_path, capsys):
    from sadtalker_ext.cli.main import main
    rc = main(_cli_args(name, value, tmp_path))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: "), err
    _one_line(err, name)
    assert not (tmp_path / "o.mp4").exists()


# -- the tab ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    pytest.importorskip("gradio")
    from sadtalker_ext.host.base import LocalHost
    from sadtalker_ext.ui import tab
    blocks = tab.build_blocks(LocalHost(output_dir=tmp_path_factory.mktemp("ui") / "out"))
    return blocks.talking_head_ui


def _form(ui, image, audio, **opts):
    from sadtalker_ext.ui.controls import initial_value
    values = []
    for spec in ui.specs:
        if spec.name in opts:
            v = opts[spec.name]
            values.append(", ".join(map(str, v)) if spec.kind == "tuple" else
                          (str(v) if spec.kind == "dropdown" else v))
        else:
            values.append(initial_value(spec))
    extra = [None] if ui.components.get("tts_text") is not None else []
    refine = [getattr(comp, "value", None) for comp in ui.refine_inputs]
    return [image] + [audio] + [None] * (len(ui.audio_components) - 1) + extra + ["p"] + values + refine + [[]]


@pytest.mark.parametrize("name,value", [c for c in ACCEPTED])
def test_tab_form_accepts_the_bounds(ui, name, value):
    from sadtalker_ext.ui.controls import to_options
    v = ui._split_inputs(_form(ui, None, None, **{name: value}))
    assert getattr(to_options(ui.specs, v["options"]), name) == value


@pytest.mark.parametrize("name,value", [c for c in REJECTED if c[0] != "fps"])
def test_tab_handler_refuses_one_step_beyond(ui, name, value, astronaut, arctic_wav, request):
    import shutil
    import uuid

    from sadtalker_ext.ui import guard
    folder = guard.upload_roots()[0] / f"th-test-{uuid.uuid4().hex}"  # the tab opens only uploads
    folder.mkdir(parents=True)
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    speech = shutil.copy(arctic_wav, folder / "speech.wav")
    out = list(ui.generate(*_form(ui, astronaut, str(speech), **{name: value})))
    assert len(out) == 1, "the run must not start"
    html = out[0][0]
    assert "th-error" in html and "Traceback" not in html
    _one_line(html, name)


# -- the bounds reach the code that uses them, without a traceback -------------------------------
def _short_clip(arctic_wav, seconds=0.6):
    from sadtalker_ext.audio.decode import AudioClip, load_audio
    full = load_audio(arctic_wav)
    return AudioClip(full.samples[8000:8000 + int(seconds * 16000)].copy(), 16000)


@pytest.mark.parametrize("extreme", ["lo", "hi"])
def test_lite_run_at_every_bound(extreme, tmp_path, astronaut, arctic_wav, synthetic_checkpoints):
    """One lite + Wav2Lip run with every option at its lower (upper) bound writes a valid video."""
    from sadtalker_ext.io.probe import probe
    from sadtalker_ext.pipeline import generate
    pick = 0 if extreme == "lo" else 1
    kw = {n: b[pick] for n, b in {**INT_BOUNDS, **FLOAT_BOUNDS}.items()
          if n not in ("face_index", "batch_size", "max_side")}
    kw["max_side"] = INT_BOUNDS["max_side"][0]  # the upper cap is above this photo: nothing to resize
    kw["pads"] = (-1024,) * 4 if extreme == "lo" else (1024,) * 4
    opts = GenerateOptions(engine="lite", size=256, preprocess="full" if extreme == "lo" else "crop",
                           lipsync="wav2lip", checkpoints=str(synthetic_checkpoints), **kw).validate()
    out = tmp_path / f"{extreme}.mp4"
    res = generate(astronaut, _short_clip(arctic_wav), out, opts)
    info = probe(out)
    assert info.num_frames == 15 and res.num_frames == 15
    stats = res.info["lipsync"]
    # pads -1024: the face box is empty, every frame passes through; pads 1024: the whole frame is the box
    assert stats["refined"] == (0 if extreme == "lo" else 15) and stats["frames"] == 15


def test_seed_and_pose_style_bounds_through_the_sadtalker_motion_networks(synthetic_checkpoints, arctic_wav):
    torch = pytest.importorskip("torch")
    from sadtalker_ext.audio.mel import prepare_sadtalker_audio
    from sadtalker_ext.models.loading import SafetensorsCheckpoint
    from sadtalker_ext.motion.sadtalker.loaders import load_audio2coeff
    a2c = load_audio2coeff(SafetensorsCheckpoint(synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors"))
    clip = _short_clip(arctic_wav, 0.4)
    audio = prepare_sadtalker_audio(clip.samples, 16000, 25, num_frames=10)
    ref = np.zeros((10, 70), np.float32)
    outs = {}
    for style in INT_BOUNDS["pose_style"]:
        for seed in INT_BOUNDS["seed"]:
            c = a2c.generate(audio.indiv_mels, ref, None, style, generator=torch.Generator().manual_seed(seed))
            assert c.shape == (10, 70) and np.isfinite(c).all()
            outs[style, seed] = c
    assert np.abs(outs[0, 0][:, 64:] - outs[45, 0][:, 64:]).max() > 1e-4  # the style is used
    with pytest.raises(ValueError):  # one class past the table: the network itself cannot take it
        a2c.generate(audio.indiv_mels, ref, None, INT_BOUNDS["pose_style"][1] + 1,
                     generator=torch.Generator().manual_seed(0))
