"""Reliability: the bad-input matrix, run through the Python API, the CLI and the HTTP API.

Every case of :data:`CASES` names an input (odd image, damaged or unusual audio, a video without
sound, a bad checkpoint, an option out of range) and its documented outcome: a typed
``TalkingHeadError`` whose message is one line (CLI: ``error: <line>``, exit status 2; HTTP: a 4xx/5xx
JSON ``{"detail": line, "error": type}``), or a correct video (frame count from the audio at 25 fps,
256 x 256, an AAC track at the audio's own rate). For every case and front end: no traceback, no
output file (nor temporary ``.part`` file, nor API upload folder) left behind, and the same
process / server instance serves the next request (checked after each error: the host lock is free
and the API queue idle; and by :func:`test_serves_after_the_matrix`).

Front ends: ``python`` = :func:`sadtalker_ext.pipeline.generate`; ``cli`` =
``sadtalker_ext.cli.main.main(argv)`` in this process with fd-level capture (the entry point of
``python -m sadtalker_ext``; test_lite_inputs.py and test_reliability_faults.py run it as a
subprocess too); ``http`` = the API routes as the standalone server mounts them
(``api.mount(app, LocalHost)``), one app instance for the whole matrix, through TestClient.

Python-API-only inputs: AudioClip objects (NaN/inf, int16, too loud, empty, two channels, rate 0)
and numpy images (1x1 float, empty, 4-D, float with NaN).

The 10-minute audio is not rendered in full (15,000 frames take minutes on CI's CPU): it is
decoded, its motion computed for all 15,000 frames and its frames streamed, then the run is
stopped after two chunks (Python API and HTTP here, Ctrl-C in test_reliability_faults.py); the
writer is tested separately on 15,000 frames with the full 10-minute audio track.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest

from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.errors import (AudioError, CheckpointError, GenerationInterrupted, ImageError, NoFaceError,
                                  OptionError, TalkingHeadError)
from sadtalker_ext.host.base import LocalHost
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import Callbacks, generate

from test_reliability_common import (LITE, SHORT_SECONDS, TALLY, build_inputs, check_video, leftovers,  # noqa: E402
                                     one_line, rss_mb, summary, wav_bytes)  # noqa: F401  (summary: autouse)

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sadtalker_ext import api  # noqa: E402

URL = "/talking-head/v1/generate"


@dataclass(frozen=True)
class Case:
    """One bad (or odd) input and its documented outcome.

    error/message: the typed error and a piece of its message (None: a video is expected).
    http: (status, error type, message piece) where the HTTP API answers differently (it checks
    uploads before decoding them). seconds: expected video length (None: the audio's).
    """

    id: str
    image: Optional[str] = "portrait"
    audio: str = "speech"
    opts: Tuple[Tuple[str, object], ...] = ()
    error: Optional[type] = None
    message: str = ""
    http: Optional[Tuple[int, str, str]] = None
    seconds: Optional[float] = SHORT_SECONDS
    rate: int = 16000
    video: Optional[str] = None
    ckpt: Optional[str] = None
    cli: Optional[Tuple[str, ...]] = None   # flags instead of opts (argparse-level values)
    cli_message: Optional[str] = None
    frontends: Tuple[str, ...] = ("python", "cli", "http")
    face_check: bool = True

    def options(self) -> dict:
        out = dict(LITE)
        out.update(dict(self.opts))
        if self.ckpt:
            out["lipsync"] = "wav2lip"
        return out


CASES = [
    # --- images
    Case("good"),
    Case("no_face", image="noface", error=NoFaceError, message="no face found"),
    Case("two_faces", image="two_faces"),
    Case("face_at_edge", image="edge"),
    Case("rgba", image="rgba"),
    Case("grayscale", image="gray"),
    Case("palette", image="palette"),
    Case("rgb_16bit", image="rgb16"),
    Case("exif_rotated", image="exif"),
    Case("one_pixel", image="one_pixel", error=NoFaceError, message="no face found"),
    Case("eight_k", image="eight_k"),
    Case("truncated_png", image="truncated", error=ImageError, message="cannot read image",
         http=(422, "ImageError", "cannot read")),
    Case("text_as_image", image="text", error=ImageError, message="cannot read image",
         http=(415, "UnsupportedMediaType", "not a picture")),
    # --- audio
    Case("empty_audio", audio="empty", error=AudioError, message="empty (0 bytes)"),
    Case("truncated_wav_header", audio="trunc_header", error=AudioError, message="cannot decode audio"),
    Case("truncated_wav_data", audio="trunc_data", seconds=0.3),
    Case("silent_audio", audio="silent"),
    Case("tenth_second", audio="tenth", seconds=0.1),
    Case("mp3_44k_stereo", audio="speech_mp3", rate=44100),
    Case("ogg_opus_48k", audio="speech_ogg", rate=48000),
    Case("m4a_aac_48k_stereo", audio="speech_m4a", rate=48000),
    Case("wav_stereo", audio="stereo"),
    Case("wav_48k", audio="rate48k", rate=48000),
    Case("video_without_audio_as_audio", audio="video_noaudio", error=AudioError, message="no audio track"),
    Case("text_as_audio", audio="text", error=AudioError, message="cannot decode audio"),
    Case("video_input_without_audio_track", image=None, video="noaudio", frontends=("python", "cli"),
         face_check=False),
    # --- checkpoints (Wav2Lip lip-sync stage, lite engine): HTTP reads them from the host's models folder
    Case("ckpt_wrong_model", ckpt="wrong_model", error=CheckpointError, message="it is not wav2lip_gan.pth"),
    Case("ckpt_truncated", ckpt="truncated", error=CheckpointError, message="truncated or corrupt"),
    Case("ckpt_not_state_dict", ckpt="not_state_dict", error=CheckpointError, message="holds a list, not a dict"),
    Case("ckpt_missing", ckpt="missing", error=CheckpointError, message="wav2lip_gan.pth not found"),
    # --- options out of range
    Case("size_300", opts=(("size", 300),), error=OptionError, message="--size must be 256 or 512"),
    Case("pose_style_99", opts=(("pose_style", 99),), error=OptionError, message="--pose-style"),
    Case("expression_scale_negative", opts=(("expression_scale", -1.0),), error=OptionError,
         message="--expression-scale"),
    Case("crf_99", opts=(("crf", 99),), error=OptionError, message="--crf"),
    Case("chunk_size_0", opts=(("chunk_size", 0),), error=OptionError, message="--chunk-size"),
    Case("face_index_5_of_1", opts=(("face_index", 5),), error=OptionError, message="face-index 5"),
    Case("device_tpu", opts=(("device", "tpu"),), error=OptionError, message="--device"),
    Case("engine_unknown", opts=(("engine", "warp"),), error=OptionError, message="--engine 'warp'",
         cli_message="invalid choice: 'warp'"),
    Case("extcrop_with_lite", opts=(("preprocess", "extcrop"),), error=OptionError,
         message="needs --engine sadtalker"),
]

PARAMS = [pytest.param(c, fe, id=f"{c.id}-{fe}") for c in CASES for fe in c.frontends]


def test_matrix_is_big_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut, arctic_wav, synthetic_checkpoints):
    return build_inputs(tmp_path_factory.mktemp("reliability-inputs"), astronaut, arctic_wav,
                        synthetic_checkpoints)


@pytest.fixture(scope="module")
def api_tmp(tmp_path_factory):
    """The API's upload folders go here (tempfile.tempdir), so leftovers can be counted."""
    base = tmp_path_factory.mktemp("api-tmp")
    mp = pytest.MonkeyPatch()
    mp.setattr(tempfile, "tempdir", str(base))
    yield base
    mp.undo()


@dataclass
class Server:
    client: object
    host: LocalHost
    queue: object
    out: Path
    models: Path
    tmp: Path
    served: int = 0
    log: list = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory, api_tmp):
    """One API app (as ``python -m sadtalker_ext ui`` mounts it) for the whole matrix."""
    root = tmp_path_factory.mktemp("reliability-server")
    host = LocalHost(output_dir=root / "out", models_dir=root / "models")
    (root / "models").mkdir()
    app = fastapi.FastAPI()
    queue = api.mount(app, host, auth=None)
    with TestClient(app) as client:
        yield Server(client, host, queue, host.output_dir(), root / "models", api_tmp)


@pytest.fixture(autouse=True)
def _no_env_checkpoints(monkeypatch):
    from sadtalker_ext.models import locate
    monkeypatch.delenv(locate.ENV_VAR, raising=False)


# ----------------------------------------------------------------------------- front ends
def _cli_flags(case: Case, inputs) -> list:
    if case.cli is not None:
        return list(case.cli)
    flags = []
    for key, value in case.options().items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    if case.ckpt:
        flags += ["--checkpoints", str(inputs.ckpt_dirs[case.ckpt])]
    return flags


def run_python(case: Case, inputs, out: Path):
    opts = case.options()
    if case.ckpt:
        opts["checkpoints"] = str(inputs.ckpt_dirs[case.ckpt])
    image = inputs.images[case.image] if case.image else None
    video = inputs.videos[case.video] if case.video else None
    try:
        return generate(image, inputs.audio[case.audio], out, GenerateOptions(**opts), video=video), None
    except TalkingHeadError as exc:
        return None, exc


def run_cli(case: Case, inputs, out: Path, capfd):
    from sadtalker_ext.cli.main import main
    argv = ["--quiet", "generate"]
    argv += ["--video", str(inputs.videos[case.video])] if case.video else ["--image", str(inputs.images[case.image])]
    argv += ["--audio", str(inputs.audio[case.audio]), "--out", str(out)] + _cli_flags(case, inputs)
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects a value before main's own handling
        rc = exc.code
    cap = capfd.readouterr()
    return rc, cap.out, cap.err


def run_http(case: Case, inputs, srv: Server):
    if case.ckpt:  # the host's models folder holds the bad file (nothing for "missing")
        for f in srv.models.iterdir():
            f.unlink()
        src = inputs.ckpt_dirs[case.ckpt] / "wav2lip_gan.pth"
        if src.exists() or src.is_symlink():
            (srv.models / "wav2lip_gan.pth").symlink_to(src.resolve())
    try:
        files = {"image": ("portrait" + inputs.images[case.image].suffix, inputs.images[case.image].read_bytes()),
                 "audio": ("speech" + inputs.audio[case.audio].suffix, inputs.audio[case.audio].read_bytes())}
        TALLY.add("requests_sent")
        return srv.client.post(URL, files=files, data={"options": json.dumps(case.options()),
                                                        "return_video": "false"})
    finally:
        for f in srv.models.iterdir():
            f.unlink()


def _expected_frames(case: Case, inputs) -> int:
    clip = load_audio(inputs.audio[case.audio])
    n = clip.num_frames(25)
    assert abs(n - case.seconds * 25) <= 2, (n, case.seconds)  # the clip is what the case says
    return n


def _check_good_video(case: Case, inputs, path: Path, face_check: bool):
    check_video(path, _expected_frames(case, inputs), sample_rate=case.rate)
    if face_check:  # the portrait came through upright and whole: a face is found in the video
        from sadtalker_ext.face.landmarks import detect_faces
        from sadtalker_ext.io.probe import read_frames
        first = next(iter(read_frames(path)))
        assert len(detect_faces(first)) >= 1


def _server_idle(srv: Server):
    assert srv.queue.status() == {"running": False, "waiting": 0, "max_waiting": srv.queue.max_waiting}
    assert not LocalHost._lock.locked()
    assert not srv.host.interrupted()


# ----------------------------------------------------------------------------- the matrix
@pytest.mark.parametrize("case,frontend", PARAMS)
def test_matrix(case: Case, frontend: str, inputs, server, tmp_path, capfd):
    if case.ckpt == "missing":
        from sadtalker_ext.lipsync.stage import find_wav2lip_checkpoint
        if find_wav2lip_checkpoint() is not None:
            pytest.skip("this machine has a Wav2Lip checkpoint in its default folders")
    TALLY.add("cases_tried")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"{case.id}.mp4"
    if frontend == "python":
        result, err = run_python(case, inputs, out)
        if case.error is None:
            assert err is None, f"{type(err).__name__}: {err}"
            assert result.path == out and leftovers(out_dir) == [out.name]
            _check_good_video(case, inputs, out, case.face_check)
        else:
            assert isinstance(err, case.error), f"{type(err).__name__}: {err}"
            assert case.message in str(err) and one_line(str(err)), str(err)
            assert leftovers(out_dir) == []
        assert not LocalHost._lock.locked()
    elif frontend == "cli":
        rc, stdout, stderr = run_cli(case, inputs, out, capfd)
        assert "Traceback" not in stderr + stdout
        if case.error is None:
            assert rc == 0, stderr
            # the video and its sidecar (the CLI writes the tab's <out>.json since the run plan, issue 14)
            assert leftovers(out_dir) == sorted([out.name, out.with_suffix(".json").name])
            meta = json.loads(out.with_suffix(".json").read_text())
            assert meta["extension"] == "sd-talking-head" and meta["frames"] > 0
            _check_good_video(case, inputs, out, False)
        else:
            assert rc == 2, (rc, stderr)
            lines = [ln for ln in stderr.splitlines() if "error:" in ln]
            assert len(lines) == 1, stderr
            assert (case.cli_message or case.message) in lines[0], lines[0]
            assert leftovers(out_dir) == []
    else:
        before = set(leftovers(server.out))
        resp = run_http(case, inputs, server)
        new = sorted(set(leftovers(server.out)) - before)
        body = resp.json()
        if case.error is None:
            assert resp.status_code == 200, resp.text
            TALLY.add("requests_served")
            assert new == sorted([body["filename"], body["sidecar"]])
            _check_good_video(case, inputs, server.out / body["filename"], False)
            assert body["frames"] == _expected_frames(case, inputs)
        else:
            status, kind, message = case.http or (case.error.http_status, case.error.__name__, case.message)
            assert (resp.status_code, body.get("error")) == (status, kind), resp.text
            assert message in body["detail"] and one_line(body["detail"]), body["detail"]
            assert new == []
        assert leftovers(server.tmp) == []  # the upload folder of the request is gone
        _server_idle(server)
    TALLY.add("outcomes_matched")


@pytest.mark.parametrize("frontend", ["python", "cli", "http"])
def test_serves_after_the_matrix(frontend, inputs, server, tmp_path, capfd):
    """After every bad case above, the same process / server still makes a correct video."""
    good = CASES[0]
    out = tmp_path / "again.mp4"
    TALLY.add("cases_tried")
    if frontend == "python":
        result, err = run_python(good, inputs, out)
        assert err is None and result.num_frames == 15
        check_video(out, 15, sample_rate=16000)
    elif frontend == "cli":
        rc, _, stderr = run_cli(good, inputs, out, capfd)
        assert rc == 0, stderr
        check_video(out, 15, sample_rate=16000)
    else:
        resp = run_http(good, inputs, server)
        assert resp.status_code == 200, resp.text
        TALLY.add("requests_served")
        check_video(server.out / resp.json()["filename"], 15, sample_rate=16000)
        _server_idle(server)
    TALLY.add("outcomes_matched")


# ----------------------------------------------------------------------------- in-memory inputs (Python API)
def _clip(kind, short):
    from sadtalker_ext.audio.decode import AudioClip
    x = short.copy()
    if kind == "nan":
        x[::7] = np.nan
        x[3::11] = np.inf
        return AudioClip(x, 16000)
    if kind == "int16":
        return AudioClip((x * 20000).astype(np.int16), 16000)
    if kind == "too_loud":
        return AudioClip(x * 40.0, 16000)
    if kind == "empty":
        return AudioClip(np.zeros(0, np.float32), 16000)
    if kind == "two_channels":
        return AudioClip(np.stack([x, x]), 16000)
    if kind == "zero_rate":
        return AudioClip(x, 0)
    raise KeyError(kind)


@pytest.mark.parametrize("kind,error", [("nan", None), ("int16", None), ("too_loud", None), ("empty", AudioError),
                                        ("two_channels", AudioError), ("zero_rate", AudioError)])
def test_python_api_audio_clips(kind, error, inputs, astronaut, tmp_path):
    """AudioClip objects from a caller: repaired (NaN/inf, int PCM, > 1) or one-line AudioError."""
    TALLY.add("cases_tried")
    out = tmp_path / "clip.mp4"
    clip = _clip(kind, inputs.short)
    if error is None:
        generate(astronaut, clip, out, GenerateOptions(**LITE))
        check_video(out, 15, sample_rate=16000)
    else:
        with pytest.raises(error) as err:
            generate(astronaut, clip, out, GenerateOptions(**LITE))
        assert one_line(str(err.value))
        assert leftovers(tmp_path) == []
    TALLY.add("outcomes_matched")


@pytest.mark.parametrize("kind", ["float_1x1", "empty_array", "four_dims", "nan_float"])
def test_python_api_image_arrays(kind, inputs, astronaut, tmp_path):
    """numpy images from a caller: odd ones give a one-line ImageError / NoFaceError, a float one works."""
    TALLY.add("cases_tried")
    out = tmp_path / "img.mp4"
    arr = {"float_1x1": np.zeros((1, 1, 3), np.float32), "empty_array": np.zeros((0, 0, 3), np.uint8),
           "four_dims": np.zeros((2, 64, 64, 3), np.uint8),
           "nan_float": np.where(np.arange(512)[:, None, None] % 97 == 0, np.nan, astronaut / 255.0)}[kind]
    from sadtalker_ext.audio.decode import AudioClip
    clip = AudioClip(inputs.short, 16000)
    if kind == "nan_float":
        generate(arr, clip, out, GenerateOptions(**LITE))
        check_video(out, 15, sample_rate=16000)
    else:
        with pytest.raises((ImageError, NoFaceError)) as err:
            generate(arr, clip, out, GenerateOptions(**LITE))
        assert one_line(str(err.value))
        assert leftovers(tmp_path) == []
    TALLY.add("outcomes_matched")


# ----------------------------------------------------------------------------- 10-minute audio
TEN_MINUTES = 600.0


@pytest.fixture(scope="module")
def ten_minutes(inputs):
    """A 10-minute, 16 kHz mono WAV (19.2 MB: under the API's 50 MB limit): a0007 repeated."""
    path = inputs.root / "ten_minutes.wav"
    reps = int(np.ceil(TEN_MINUTES * 16000 / len(inputs.speech)))
    path.write_bytes(wav_bytes(np.tile(inputs.speech, reps)[:int(TEN_MINUTES * 16000)], 16000))
    return path


def test_ten_minute_audio_python_streams(ten_minutes, inputs, tmp_path):
    """Accepted; all 15,000 frames planned; frames arrive in chunks long before the end, with
    memory far below what 15,000 frames would need (2.9 GB); stopping after two chunks leaves nothing."""
    TALLY.add("cases_tried")
    seen = []
    t0 = time.perf_counter()
    rss0 = rss_mb("self")

    def progress(done, total, text, preview):
        if done:  # not the "finding the face" / "analysing the speech" reports before the first frame
            seen.append((done, total, time.perf_counter() - t0, rss_mb("self")))

    out = tmp_path / "long.mp4"
    with pytest.raises(GenerationInterrupted) as err:
        generate(inputs.images["portrait"], ten_minutes, out, GenerateOptions(**LITE),
                 callbacks=Callbacks(progress=progress, should_stop=lambda: len(seen) >= 2))
    assert one_line(str(err.value))
    assert [s[:2] for s in seen] == [(25, 15000), (50, 15000)]
    peak = max(s[3] for s in seen) - rss0
    print(f"10-minute audio: first chunk after {seen[0][2]:.1f} s, RSS +{peak:.0f} MB")
    assert peak < 1000, peak
    assert leftovers(tmp_path) == []
    TALLY.add("outcomes_matched")


def test_ten_minute_audio_http_accepted_and_streamed(ten_minutes, inputs, server):
    """The 19 MB upload passes the limits; the job streams; the host's interrupt stops it (499)."""
    TALLY.add("cases_tried")
    frames = []

    def on_progress(done, total, text, preview):
        if not done:  # the "finding the face" / "analysing the speech" reports before the first frame
            return
        frames.append((done, total))
        if len(frames) == 2:
            server.host.interrupt()
    server.host._on_progress = on_progress
    before = set(leftovers(server.out))
    try:
        TALLY.add("requests_sent")
        resp = server.client.post(URL, files={"image": ("p.png", inputs.images["portrait"].read_bytes()),
                                              "audio": ("long.wav", ten_minutes.read_bytes())},
                                  data={"options": json.dumps(LITE)})
    finally:
        server.host._on_progress = None
    assert resp.status_code == 499, resp.text
    assert resp.json()["error"] == "GenerationInterrupted" and one_line(resp.json()["detail"])
    assert frames == [(25, 15000), (50, 15000)]
    assert set(leftovers(server.out)) == before and leftovers(server.tmp) == []
    _server_idle(server)
    TALLY.add("outcomes_matched")


def test_ten_minute_writer_full_length(ten_minutes, tmp_path):
    """The writer takes 15,000 frames and the whole 10-minute track (tiny frames keep it cheap)."""
    from sadtalker_ext.io.probe import probe
    from sadtalker_ext.io.video_writer import VideoWriter
    TALLY.add("cases_tried")
    clip = load_audio(ten_minutes)
    assert clip.num_frames(25) == 15000
    out = tmp_path / "w.mp4"
    block = np.zeros((250, 16, 16, 3), np.uint8)
    with VideoWriter(out, (16, 16), 25, audio=clip.samples, sample_rate=clip.sample_rate) as w:
        for i in range(60):
            block[:] = i * 4
            w.write(block)
    info = probe(out)
    assert info.num_frames == 15000 and abs(info.video_duration - TEN_MINUTES) < 0.1, info
    assert abs(info.audio_duration - TEN_MINUTES) < 0.2, info
    assert info.sample_rate == 16000 and info.audio_codec == "aac"
    assert leftovers(tmp_path) == ["w.mp4"]
    TALLY.add("outcomes_matched")
