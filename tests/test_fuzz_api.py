"""Property-based fuzzing (Hypothesis) of the HTTP API: its JSON options and the headers of the
image and audio files it is sent (issue 15).

The property, for every request drawn: the answer is a 2xx, or a 4xx whose body is
``{"detail": one line, "error": type}`` of a few hundred bytes; never a 5xx, a traceback or a
hang. Requests run the real pipeline (lite engine, 256 px) on the astronaut portrait and a
0.12 s slice of CMU ARCTIC a0007, so a drawn request that is valid makes a real 3-frame video.
Options whose *valid* values need model files (engine sadtalker, lipsync wav2lip, a refinement
schedule) are kept to their invalid draws: a valid one would answer 503 (missing models) by design.
Bounded in time: few examples per test, no deadline per example (the machine may be loaded),
together well under a minute on two cores.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from dataclasses import fields

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")  # a test dependency (install.py --test)
fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sadtalker_ext import api  # noqa: E402
from sadtalker_ext.host.base import LocalHost  # noqa: E402
from sadtalker_ext.options import GenerateOptions  # noqa: E402

URL = "/talking-head/v1/generate"
FUZZ = settings(max_examples=25, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
OPTION_NAMES = [f.name for f in fields(GenerateOptions)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, astronaut, arctic_wav):
    import soundfile as sf

    root = tmp_path_factory.mktemp("fuzz")
    host = LocalHost(output_dir=root / "out", models_dir=root / "models")
    app = fastapi.FastAPI()
    api.mount(app, host)
    png = io.BytesIO()
    Image.fromarray(astronaut).resize((256, 256)).save(png, format="PNG")
    data, rate = sf.read(str(arctic_wav), dtype="float32")
    wav = io.BytesIO()
    sf.write(wav, data[8000:8000 + int(0.12 * rate)], rate, format="WAV", subtype="PCM_16")
    with TestClient(app) as client:
        yield {"client": client, "png": png.getvalue(), "wav": wav.getvalue(), "host": host,
               "seen": {"2xx": 0, "4xx": 0}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_outcome(resp, seen) -> None:
    """2xx, or a 4xx with a one-line JSON detail; anything else fails with the request's answer."""
    code = resp.status_code
    assert code < 500, (code, resp.text[:500])
    if 200 <= code < 300:
        seen["2xx"] += 1
        return
    assert 400 <= code < 500, (code, resp.text[:500])
    seen["4xx"] += 1
    body = resp.json()
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip(), body
    assert "\n" not in detail and "Traceback" not in detail, detail[:500]
    assert len(resp.content) < 4096, (len(resp.content), detail[:200])


# ----------------------------------------------------------------------------- JSON options
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                          max_leaves=10)
# values near the bounds and of the wrong type, the kinds of mistake a client makes
plausible = st.sampled_from([0, 1, -1, 2, 4, 25, 45, 46, 51, 52, 64, 65, 255, 256, 512, 256.0, 1.5, 3.0, 3.01,
                             2 ** 63 - 1, 2 ** 63, 1e308, -0.0, "256", "false", "true", "", "lite", "auto",
                             "acoustic", "crop", "resize", "full", "fp16", "cpu", "en", "none", True, False,
                             [0, 10, 0, 0], [0, 10.5, 0, 0], [1, 2, 3], "../../etc/passwd", "/etc/passwd",
                             "file:///etc/passwd", {"keyframes": []}, [{"time": 1e308}], [[[[[]]]]]])
option_key = st.one_of(st.sampled_from(OPTION_NAMES), st.text(max_size=12))
options_strategy = st.dictionaries(option_key, st.one_of(plausible, json_value), max_size=5)


def _needs_models(opts: dict) -> dict:
    """Drop the draws whose valid values need model files (answered 503 by design)."""
    out = dict(opts)
    if out.get("engine") in ("sadtalker", "auto"):
        out["engine"] = "lite"
    out.setdefault("engine", "lite")
    if out.get("lipsync") in ("wav2lip", "auto"):
        out["lipsync"] = "none"
    if "refine" in out:
        from sadtalker_ext.errors import TalkingHeadError
        from sadtalker_ext.refine.keyframes import KeyframeSchedule
        try:
            KeyframeSchedule.from_dict(out["refine"])
            del out["refine"]  # a valid schedule would need a Stable Diffusion model
        except TalkingHeadError:
            pass
        except Exception:  # noqa: BLE001 - the API itself must answer it; keep the draw
            pass
    out.setdefault("size", 256)
    out.setdefault("phonemes", "acoustic")
    return out


@FUZZ
@given(opts=options_strategy, as_text=st.booleans())
@example(opts={}, as_text=False)  # always one valid request: the 2xx path is exercised too
@example(opts={"still": "false", "size": 256.0}, as_text=True)
def test_fuzz_json_options(world, opts, as_text):
    opts = _needs_models(opts)
    try:
        encoded = json.dumps(opts)
    except (ValueError, OverflowError):
        return
    body = {"image": _b64(world["png"]), "audio": _b64(world["wav"]), "return_video": False,
            "options": encoded if as_text else opts}
    resp = world["client"].post(URL, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    check_outcome(resp, world["seen"])


@FUZZ
@given(opts=options_strategy)
def test_fuzz_multipart_options(world, opts):
    opts = _needs_models(opts)
    try:
        encoded = json.dumps(opts)
    except (ValueError, OverflowError):
        return
    resp = world["client"].post(URL, files={"image": ("p.png", world["png"]), "audio": ("a.wav", world["wav"])},
                                data={"options": encoded, "return_video": "false"})
    check_outcome(resp, world["seen"])


# ----------------------------------------------------------------------------- file headers
def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


@st.composite
def png_files(draw, good: bytes):
    kind = draw(st.sampled_from(["header", "truncated", "flipped"]))
    if kind == "truncated":
        return good[:draw(st.integers(8, len(good) - 1))]
    if kind == "flipped":  # one byte of the real file changed
        i = draw(st.integers(8, len(good) - 1))
        return good[:i] + bytes([draw(st.integers(0, 255))]) + good[i + 1:]
    w = draw(st.one_of(st.integers(0, 64), st.integers(0, 2 ** 31 - 1), st.sampled_from([8192, 8193, 20000])))
    h = draw(st.one_of(st.integers(0, 64), st.integers(0, 2 ** 31 - 1), st.sampled_from([8192, 8193, 20000])))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
    ctype = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7, 255]))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, draw(st.integers(0, 2)))
    idat = zlib.compress(draw(st.binary(max_size=256)))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@st.composite
def jpeg_files(draw):
    w, h = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    comps = draw(st.sampled_from([1, 3, 4, 0, 255]))
    sof = struct.pack(">BHHB", 8, h, w, comps) + b"".join(bytes([i + 1, 0x11, 0]) for i in range(comps % 8))
    return (b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + draw(st.binary(max_size=64)) + b"\xff\xd9")


@st.composite
def wav_files(draw):
    rate = draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.sampled_from([1, 3999, 4000, 8000, 16000, 44100, 48000,
                                                                        192000, 192001, 10_000_019, 2 ** 31 - 1])))
    channels = draw(st.one_of(st.sampled_from([1, 2]), st.integers(0, 65535)))
    bits = draw(st.sampled_from([8, 16, 24, 32, 0, 7, 64]))
    fmt_tag = draw(st.sampled_from([1, 3, 0, 0xFFFE, 2]))
    data = draw(st.binary(max_size=4096))
    claimed = draw(st.one_of(st.just(len(data)), st.integers(0, 2 ** 32 - 1)))
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + len(data)) & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", claimed) + data)


@FUZZ
@given(data=st.data())
def test_fuzz_image_headers(world, data):
    image = data.draw(st.one_of(png_files(world["png"]), jpeg_files()))
    resp = world["client"].post(URL, json={"image": _b64(image), "audio": _b64(world["wav"]),
                                           "options": {"engine": "lite", "size": 256, "phonemes": "acoustic"},
                                           "return_video": False})
    check_outcome(resp, world["seen"])


@FUZZ
@given(audio=wav_files())
def test_fuzz_audio_headers(world, audio):
    resp = world["client"].post(URL, files={"image": ("p.png", world["png"]), "audio": ("a.wav", audio)},
                                data={"options": json.dumps({"engine": "lite", "size": 256, "phonemes": "acoustic"}),
                                      "return_video": "false"})
    check_outcome(resp, world["seen"])
