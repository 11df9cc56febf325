"""install.py's plan inside a WebUI: additions only, mediapipe chosen by the host's protobuf, one cv2.

The venvs are described as both real hosts have them (AUTOMATIC1111 v1.10.1 and Forge pin protobuf 3.20.0
and ship opencv-python 4.11.0.86, numpy 1.26.2, matplotlib, attrs, scipy, scikit-image, Pillow,
safetensors); the Requires-Dist lines are the published wheels' METADATA. What pip really does inside
the real hosts (pip freeze before/after) is asserted by test_real_hosts.py.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("th_install", REPO / "install.py")
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)  # not inside a WebUI: importing it installs nothing

HOST = {"protobuf": "3.20.0", "opencv-python": "4.11.0.86", "numpy": "1.26.2", "matplotlib": "3.11.2",
        "attrs": "26.1.0", "scipy": "1.16.3", "scikit-image": "0.21.0", "pillow": "9.5.0", "safetensors": "0.4.2",
        "torch": "2.12.1", "gradio": "3.41.2", "open-clip-torch": "2.20.0", "tqdm": "4.70.1"}
HOST_MODULES = {"scipy", "skimage", "PIL", "safetensors", "cv2", "tqdm"}
MEDIAPIPE_0_10_21_REQUIRES = ["absl-py", "attrs>=19.1.0", "flatbuffers>=2.0", "jax", "jaxlib", "matplotlib",
                              "numpy<2", "opencv-contrib-python", "protobuf<5,>=4.25.3", "sounddevice>=0.4.4",
                              "sentencepiece"]
MEDIAPIPE_0_10_9_REQUIRES = ["absl-py", "attrs >=19.1.0", "flatbuffers >=2.0", "matplotlib", "numpy",
                             "opencv-contrib-python", "protobuf <4,>=3.11", "sounddevice >=0.4.4"]


def _missing(present):
    return lambda names: [n for n in names if n not in present]


def _names(commands):
    return [a.split("=")[0].split(">")[0].split("<")[0] for c in commands for a in c if not a.startswith("--")]


def test_protobuf_3_host_gets_mediapipe_0_10_9_without_deps_and_no_second_cv2():
    commands, notes = install.host_plan(HOST, _missing(HOST_MODULES))
    assert notes == []
    assert ["--no-deps", "mediapipe==0.10.9"] in commands
    names = _names(commands)
    for forbidden in ("opencv-contrib-python", "opencv-python", "jax", "jaxlib", "protobuf", "numpy", "torch",
                      "matplotlib", "attrs", "scipy", "scikit-image", "Pillow", "safetensors"):
        assert forbidden not in names, (forbidden, commands)
    # what mediapipe 0.10.9 needs and the host lacks comes before it, resolved with the other packages
    assert {"absl-py", "flatbuffers", "av", "onnxruntime", "pocketsphinx", "soundfile"} <= set(commands[0] and
                                                                                                  _names(commands[:1]))
    assert commands[-1] == ["--no-deps", "silero-vad==6.2.3"]


def test_protobuf_4_25_host_gets_mediapipe_0_10_21_and_nothing_when_complete():
    host = {**HOST, "protobuf": "4.25.9"}
    commands, _ = install.host_plan(host, _missing(HOST_MODULES))
    assert ["--no-deps", "mediapipe==0.10.21"] in commands
    assert "opencv-contrib-python" not in _names(commands) and "jax" not in _names(commands)
    everything = HOST_MODULES | {"mediapipe", "av", "onnxruntime", "pocketsphinx", "soundfile", "espeakng_loader",
                                 "librosa", "silero_vad"}
    done = {**host, "mediapipe": "0.10.21"}
    assert install.host_plan(done, _missing(everything), requires=lambda d: MEDIAPIPE_0_10_21_REQUIRES) == ([], [])


def test_unsupported_protobuf_installs_no_mediapipe_and_says_why():
    commands, notes = install.host_plan({**HOST, "protobuf": "4.21.12"}, _missing(HOST_MODULES))
    assert "mediapipe" not in _names(commands)
    assert len(notes) == 1 and "protobuf 4.21.12" in notes[0] and "Nothing of the WebUI was changed" in notes[0]


def test_mediapipe_left_by_an_old_install_after_the_restart_is_replaced():
    # install.py of 9679016 upgraded protobuf for mediapipe 0.10.21; the next start put 3.20.0 back
    everything = HOST_MODULES | {"mediapipe", "av", "onnxruntime", "pocketsphinx", "soundfile", "espeakng_loader",
                                 "librosa", "silero_vad"}
    host = {**HOST, "mediapipe": "0.10.21", "opencv-contrib-python": "4.11.0.86", "absl-py": "2.5.1",
            "flatbuffers": "25.12.19", "jax": "0.7.1"}
    commands, notes = install.host_plan(host, _missing(everything), requires=lambda d: MEDIAPIPE_0_10_21_REQUIRES)
    assert commands == [["--no-deps", "--force-reinstall", "mediapipe==0.10.9"]]
    assert any("replacing it with mediapipe==0.10.9" in n for n in notes)
    assert any("2 distributions of the cv2 module" in n for n in notes)
    # a working one is left alone
    ok = install.host_plan({**HOST, "mediapipe": "0.10.9"}, _missing(everything),
                           requires=lambda d: MEDIAPIPE_0_10_9_REQUIRES)
    assert ok == ([], [])


def test_host_without_cv2_gets_opencv_python_not_contrib():
    host = {k: v for k, v in HOST.items() if k != "opencv-python"}
    commands, _ = install.host_plan(host, _missing(HOST_MODULES - {"cv2"}))
    assert "opencv-python" in _names(commands[:1]) and "opencv-contrib-python" not in _names(commands)


def test_constraints_pin_every_installed_distribution():
    text = install.constraints_text({"protobuf": "3.20.0", "torch": "2.12.1+cu130", "odd": "not a version",
                                     "mediapipe": "0.10.21"}, exclude=("mediapipe",))
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ["protobuf==3.20.0", "torch==2.12.1+cu130"]


@pytest.mark.parametrize("version,expected", [("3.20.0", (3, 20, 0)), ("4.25.3", (4, 25, 3)),
                                              ("2.12.1+cu130", (2, 12, 1)), ("1.0rc1", (1, 0))])
def test_version_tuple(version, expected):
    assert install._version_tuple(version) == expected
