"""Installs what sd-talking-head needs.

Inside AUTOMATIC1111 / Forge the host runs this file at start-up with its ``launch`` module: only
missing packages are installed, with versions compatible with the host, and torch, torchvision,
gradio, numpy, pydantic and fastapi are never installed or upgraded.

Standalone (fresh venv):  python install.py [--neural] [--ray] [--test]
  --neural  PyTorch 2.13.0 (CPU wheel) + safetensors + librosa for the SadTalker / Wav2Lip engines
  --ray     Ray 2.60.0, for ``batch --ray`` (runs jobs on a Ray cluster; without it batches run locally)
  --test    pytest and the test-only extras (Ray included: its local-cluster test runs in CI)
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

# (import name, pip requirement). The lite engine needs only these; no torch.
LITE = [
    ("mediapipe", "mediapipe==0.10.21"),   # face detection + 478 landmarks, models inside the wheel; pins numpy<2
    ("av", "av>=12"),                      # PyAV: audio decoding, H.264/AAC encoding
    ("scipy", "scipy>=1.10"),
    ("skimage", "scikit-image>=0.21"),     # bundled demo portrait, SSIM
    ("onnxruntime", "onnxruntime>=1.16"),  # runs silero-vad's ONNX model
    ("pocketsphinx", "pocketsphinx>=5.0"), # offline English recognition + forced alignment
    ("PIL", "Pillow>=9"),
    ("soundfile", "soundfile>=0.12"),
    ("espeakng_loader", "espeakng-loader>=0.2.4"),  # espeak-ng library + data (en/ru/cmn) for --text
    ("tqdm", "tqdm>=4.60"),                # batch progress bars (the WebUI ships it too)
]
NO_DEPS = [("silero_vad", "silero-vad==6.2.3")]  # only its bundled ONNX file is used; its deps would pull torch
NEURAL = [("safetensors", "safetensors>=0.4"), ("librosa", "librosa>=0.10")]
RAY = [("ray", "ray==2.60.0")]  # batch --ray; pinned: pip check clean beside the test extras (protobuf 4, pydantic 1)
TORCH = ("torch", "torch==2.13.0")  # pinned: an unpinned torch would download several GB of CUDA wheels
TEST = [("pytest", "pytest>=7"),
        # the HTTP API's tests: the versions AUTOMATIC1111 v1.10 ships (FastAPI 0.94 + pydantic 1)
        ("fastapi", "fastapi==0.94.0"), ("httpx", "httpx>=0.24,<0.28"),
        ("multipart", "python-multipart>=0.0.9,<0.0.13"),
        # the tab's tests: A1111's gradio (gradio 4.40 for Forge is tested in its own cached venv) and a
        # real browser (Debian's chromium, driven by Playwright; no browser download)
        ("gradio", "gradio==3.41.2"), ("playwright", "playwright>=1.40"),
        # img2img refinement's standalone backend (tests run it on a tiny offline pipeline); neither
        # pulls torch (it is optional for both), pip resolves typer 0.28 beside pydantic 1
        ("diffusers", "diffusers>=0.27"), ("transformers", "transformers>=4.40")]
HOST_OWNED = {"torch", "torchvision", "gradio", "numpy", "pydantic", "fastapi"}


def _missing(items):
    return [req for mod, req in items if importlib.util.find_spec(mod) is None]


def install_in_host() -> None:
    import launch  # the WebUI's installer helpers

    for mod, req in LITE + NEURAL:
        if req.split("=")[0].split(">")[0].strip() in HOST_OWNED:
            continue
        if not launch.is_installed(mod):
            launch.run_pip(f"install \"{req}\"", f"sd-talking-head requirement: {req}")
    for mod, req in NO_DEPS:
        if not launch.is_installed(mod):
            launch.run_pip(f"install --no-deps \"{req}\"", f"sd-talking-head requirement: {req}")


def install_standalone(argv) -> None:
    neural = "--neural" in argv
    test = "--test" in argv
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    reqs = ["numpy<2"] + [req for _, req in LITE]
    if neural:
        reqs += [req for _, req in NEURAL]
        if importlib.util.find_spec("torch") is None:
            reqs.append(TORCH[1])
    if test:
        reqs += [req for _, req in TEST]
    if test or "--ray" in argv:
        reqs += [req for _, req in RAY]
    subprocess.check_call(pip + reqs)
    subprocess.check_call(pip + ["--no-deps"] + [req for _, req in NO_DEPS])


def _run_by_webui(argv) -> bool:
    """True when the WebUI runs this file: it starts ``python install.py`` without arguments and
    with its own folder (``launch.py``, ``modules/``) on PYTHONPATH."""
    if argv:
        return False
    return importlib.util.find_spec("launch") is not None and importlib.util.find_spec("modules") is not None


if __name__ == "__main__":
    if _run_by_webui(sys.argv[1:]):
        install_in_host()
    else:
        install_standalone(sys.argv[1:])
else:
    try:
        install_in_host()
    except ImportError:  # not inside the WebUI (e.g. imported by a tool): nothing to do
        pass
