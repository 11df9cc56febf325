"""Installs what sd-talking-head needs.

Inside AUTOMATIC1111 / Forge the host runs this file at every start (``python install.py`` with its
folder on PYTHONPATH). There it only *adds* packages: every distribution the WebUI's venv already has
is pinned to its installed version through a pip constraints file written from that venv, so pip can
never upgrade or downgrade one (a package we need that cannot be had beside the host's versions makes
the install fail with pip's one-line reason, and the host keeps running). mediapipe is chosen by the
host's protobuf — both hosts pin protobuf 3.20.0, and the WebUI puts its pins back at every normal
start, so an upgraded protobuf would not survive the next restart:

* protobuf < 4 -> mediapipe 0.10.9 (needs protobuf >=3.11,<4; the last release before 4.25.3)
* protobuf 4.25.3 .. 4.x, or none -> mediapipe 0.10.21

Both are installed ``--no-deps`` with only the dependencies our code uses: never opencv-contrib-python
beside the host's opencv-python (two distributions of ``cv2``), nor jax/jaxlib/sentencepiece/sounddevice.
A mediapipe whose protobuf requirement the venv no longer meets (left by an earlier install after the
WebUI restored its protobuf) is replaced by the matching release.

Standalone (fresh venv):  python install.py [--neural] [--ray] [--test]
  --neural  PyTorch 2.13.0 (CPU wheel) + safetensors + librosa for the SadTalker / Wav2Lip engines
  --ray     Ray 2.60.0, for ``batch --ray`` (runs jobs on a Ray cluster; without it batches run locally)
  --test    pytest and the test-only extras (Ray included: its local-cluster test runs in CI)
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

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
        ("diffusers", "diffusers>=0.27"), ("transformers", "transformers>=4.40"),
        # property-based fuzzing of the API's JSON options and of image/audio headers
        ("hypothesis", "hypothesis>=6.100,<7")]
HOST_OWNED = {"torch", "torchvision", "gradio", "numpy", "pydantic", "fastapi"}

#: mediapipe releases for a host, by its protobuf: (release, its protobuf range, the dependencies we
#: install beside it). Taken from each wheel's Requires-Dist, without opencv-contrib-python (the host's
#: opencv-python provides cv2), sounddevice (audio tasks), jax/jaxlib/sentencepiece (LLM converter):
#: ``mediapipe.python.solutions`` face_detection/face_mesh (478 landmarks) import none of them.
MEDIAPIPE_FOR_PROTOBUF_3 = ("mediapipe==0.10.9", (3, 11), (4, 0),
                            ["absl-py", "attrs>=19.1.0", "flatbuffers>=2.0", "matplotlib", "protobuf>=3.11,<4"])
MEDIAPIPE_FOR_PROTOBUF_4 = ("mediapipe==0.10.21", (4, 25, 3), (5, 0),
                            ["absl-py", "attrs>=19.1.0", "flatbuffers>=2.0", "matplotlib", "numpy<2",
                             "protobuf>=4.25.3,<5"])
#: distributions that install the ``cv2`` module (any one of them is enough)
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
PREFIX = "sd-talking-head"


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_tuple(version: str) -> Tuple[int, ...]:
    """(major, minor, micro) of a version string; the leading numeric parts only ("3.20.0" -> (3, 20, 0))."""
    parts = []
    for p in version.split("."):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
        if m.group() != p:
            break
    return tuple(parts)


def installed_distributions() -> Dict[str, str]:
    """{canonical distribution name: version} of the running interpreter's environment (the first of
    duplicates, which is the one imported)."""
    found: Dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and dist.version and _canon(name) not in found:
            found[_canon(name)] = dist.version
    return found


def constraints_text(installed: Dict[str, str], exclude: Tuple[str, ...] = ()) -> str:
    """A pip constraints file pinning every distribution of ``installed`` to its version."""
    lines = [f"# {PREFIX} install.py: the WebUI venv as found; pip may add packages, never change these"]
    for name in sorted(installed):
        version = installed[name]
        if name in exclude or not re.fullmatch(r"[0-9A-Za-z.+!_-]+", version) or not _version_tuple(version):
            continue  # a version pip could not parse would make it reject the whole file
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def mediapipe_choice(installed: Dict[str, str]) -> Optional[tuple]:
    """The (release, protobuf min, protobuf max, dependencies) entry for the venv's protobuf, or None
    when no mediapipe release with the legacy face solutions accepts it."""
    protobuf = installed.get("protobuf")
    if protobuf is None:
        return MEDIAPIPE_FOR_PROTOBUF_4
    v = _version_tuple(protobuf)
    for choice in (MEDIAPIPE_FOR_PROTOBUF_3, MEDIAPIPE_FOR_PROTOBUF_4):
        if choice[1] <= v < choice[2]:
            return choice
    return None


def host_plan(installed: Dict[str, str], missing_modules, requires=None) -> Tuple[List[List[str]], List[str]]:
    """What to install into a WebUI venv: (pip argument lists, messages for the user).

    ``installed``: {canonical name: version} of the venv; ``missing_modules(names)`` -> the import
    names among ``names`` that cannot be imported; ``requires(dist)`` -> its Requires-Dist lines
    (default ``importlib.metadata.requires``). Each argument list is to be run with the
    constraints file of ``installed`` (see :func:`constraints_text`); the ones that carry
    ``--no-deps`` install exactly what they name.
    """
    commands: List[List[str]] = []
    notes: List[str] = []
    wanted = [(m, r) for m, r in LITE + NEURAL if m != "mediapipe" and _canon(re.split(r"[<>=!~\[ ]", r)[0])
              not in HOST_OWNED]
    missing = set(missing_modules([m for m, _ in wanted] + ["mediapipe", "cv2"] + [m for m, _ in NO_DEPS]))
    reqs = [r for m, r in wanted if m in missing]

    choice = mediapipe_choice(installed)
    mp_version = installed.get("mediapipe")
    if choice is None:
        notes.append(f"{PREFIX}: this WebUI has protobuf {installed.get('protobuf')}; mediapipe needs protobuf "
                     f"<4 (0.10.9) or >=4.25.3,<5 (0.10.21), so the lite engine and face detection are not "
                     f"installed. Nothing of the WebUI was changed.")
    else:
        release, _, _, deps = choice
        target = release.split("==")[1]
        repair = mp_version is not None and "mediapipe" not in missing and mp_version != target \
            and not _protobuf_ok(mp_version, installed.get("protobuf"), requires)
        if "mediapipe" in missing or repair:
            if repair:
                notes.append(f"{PREFIX}: mediapipe {mp_version} does not work with this WebUI's protobuf "
                             f"{installed.get('protobuf')}; replacing it with {release}")
            # its dependencies first (resolved against the pinned venv), then the wheel itself
            reqs += [d for d in deps if _canon(re.split(r"[<>=!~\[ ]", d)[0]) not in installed]
            commands.append(["--no-deps", release] if not repair else
                            ["--no-deps", "--force-reinstall", release])
    opencv = [d for d in OPENCV_DISTS if d in installed]
    if "cv2" in missing and not opencv:
        reqs.append("opencv-python")  # not mediapipe's opencv-contrib-python: one cv2 for the WebUI too
    if len(opencv) > 1:
        notes.append(f"{PREFIX}: this venv has {len(opencv)} distributions of the cv2 module ({', '.join(opencv)}); "
                     f"they overwrite each other's files. Keep one: pip uninstall the others, then "
                     f"'pip install --force-reinstall --no-deps {opencv[0]}=={installed[opencv[0]]}'.")
    if reqs:
        commands.insert(0, reqs)
    commands += [["--no-deps", r] for m, r in NO_DEPS if m in missing]
    return commands, notes


def _protobuf_ok(mediapipe_version: str, protobuf: Optional[str], requires=None) -> bool:
    """Whether the installed mediapipe's own protobuf requirement accepts ``protobuf``."""
    if protobuf is None:
        return False
    try:
        lines = (requires or importlib.metadata.requires)("mediapipe") or []
    except importlib.metadata.PackageNotFoundError:
        lines = []
    try:
        from packaging.requirements import Requirement
    except ImportError:  # every venv with pip has its vendored copy
        from pip._vendor.packaging.requirements import Requirement
    for line in lines:
        req = Requirement(line)
        if _canon(req.name) == "protobuf":
            return req.specifier.contains(protobuf, prereleases=True)
    # no metadata to go by: the releases we know
    v = _version_tuple(mediapipe_version)
    pv = _version_tuple(protobuf)
    return pv < (4,) if v < (0, 10, 10) else pv >= (4, 25, 3)


def _missing_modules(names) -> List[str]:
    out = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except (ImportError, ValueError):
            out.append(name)
    return out


def install_in_host() -> None:
    import launch  # the WebUI's installer helpers

    installed = installed_distributions()
    # the WebUI's own test (distribution metadata, then the import spec), as its other extensions use
    commands, notes = host_plan(installed, lambda names: [n for n in names if not launch.is_installed(n)])
    for note in notes:
        print(note)
    if not commands:
        return
    exclude = ("mediapipe",) if any("--force-reinstall" in c for c in commands) else ()
    fd, constraints = tempfile.mkstemp(prefix="sd-talking-head-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as f:
            f.write(constraints_text(installed, exclude))
        for args in commands:
            quoted = " ".join(a if a.startswith("--") else f'"{a}"' for a in args)
            launch.run_pip(f'install -c "{constraints}" {quoted}',
                           f"{PREFIX} requirements: {' '.join(a for a in args if not a.startswith('--'))}")
    finally:
        os.unlink(constraints)
    after = installed_distributions()
    changed = {n: (v, after[n]) for n, v in installed.items() if n != "mediapipe" and after.get(n, v) != v}
    if changed:  # the constraints make this impossible; say so loudly if pip ever did it anyway
        print(f"{PREFIX}: WARNING: pip changed the WebUI's packages: "
              + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(changed.items())))


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
