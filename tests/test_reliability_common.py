"""Shared parts of the reliability suite (tests/test_reliability_*.py); holds no tests itself.

* :data:`TALLY` counts what the suite did (cases tried, outcomes matched, faults injected and
  survived, HTTP requests sent/served/rejected, attacks tried/refused); :func:`summary` (an autouse
  fixture each reliability module imports) registers a plugin that prints the counts in pytest's
  terminal summary, once, at the end of the run.
* :func:`build_inputs` writes every odd input (images, audio, videos, bad checkpoints) once.
* Helpers: :func:`leftovers` (files a failed run must not leave), :func:`check_video`,
  :func:`one_line`, :func:`rss_mb`.
"""
from __future__ import annotations

import errno

import io
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
from PIL import Image

from test_lite_inputs import encode_audio  # noqa: E402  (PyAV encoder for mp3/ogg/m4a)

SPEECH_START = 8000          # samples into ARCTIC a0007 (16 kHz) where the speech is loud
SHORT_SECONDS = 0.6          # the "good" clip of the matrix: 15 frames
LITE = dict(engine="lite", size=256, phonemes="acoustic")


class Tally:
    """Thread-safe counters of the reliability suite, printed at the end of the run."""

    ORDER = ("cases_tried", "outcomes_matched", "faults_injected", "faults_survived", "requests_sent",
             "requests_served", "requests_rejected", "attacks_tried", "attacks_refused")

    def __init__(self):
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        assert key in self.ORDER, key
        with self._lock:
            self.counts[key] += n

    def line(self) -> str:
        c = self.counts
        return (f"cases tried {c['cases_tried']}, outcomes matched {c['outcomes_matched']}; "
                f"faults injected {c['faults_injected']}, survived {c['faults_survived']}; "
                f"HTTP requests sent {c['requests_sent']}, served {c['requests_served']}, "
                f"rejected 429/503 {c['requests_rejected']}; attacks tried {c['attacks_tried']}, "
                f"refused {c['attacks_refused']}")


TALLY = Tally()


class _SummaryPlugin:
    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.section("reliability suite")
        terminalreporter.write_line(TALLY.line())
        path = os.environ.get("RELIABILITY_SUMMARY_JSON")
        if path:  # for reports: the same counts as JSON
            import json
            Path(path).write_text(json.dumps(dict(TALLY.counts), indent=1))


@pytest.fixture(autouse=True, scope="module")
def summary(request):
    """Register the end-of-run summary (once per session, whichever reliability module runs first)."""
    pm = request.config.pluginmanager
    if not pm.has_plugin("reliability-summary"):
        pm.register(_SummaryPlugin(), "reliability-summary")
    yield


# ----------------------------------------------------------------------------- small helpers
def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text.strip() and "Traceback" not in text


def leftovers(folder: Path) -> list:
    """Every file under ``folder`` (recursively), as names relative to it."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def check_video(path: Path, frames: int, size=(256, 256), sample_rate: Optional[int] = None,
                audio: bool = True):
    """Probe a finished video: frame count, size, audio track (and its rate)."""
    from sadtalker_ext.io.probe import probe
    info = probe(path)
    assert (info.width, info.height) == tuple(size), (info.width, info.height)
    assert info.num_frames == frames, (info.num_frames, frames)
    if audio:
        assert info.audio_codec == "aac", info.audio_codec
        if sample_rate is not None:
            assert info.sample_rate == sample_rate, info.sample_rate
    return info


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    import soundfile as sf
    data = samples if channels == 1 else np.repeat(samples[:, None], channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Paths of every input of the matrix (``images``, ``audio``, ``videos``, ``ckpt_dirs``)."""

    root: Path
    images: Dict[str, Path]
    audio: Dict[str, Path]
    videos: Dict[str, Path]
    ckpt_dirs: Dict[str, Path]
    speech: np.ndarray          # ARCTIC a0007 float32 16 kHz
    short: np.ndarray           # the 0.6 s "good" slice


def _speech(arctic_wav) -> np.ndarray:
    from sadtalker_ext.audio.decode import load_audio
    return load_audio(arctic_wav).samples


def build_inputs(root: Path, astronaut: np.ndarray, arctic_wav: Path,
                 synthetic_checkpoints: Optional[Path] = None) -> Inputs:
    """Write the matrix's inputs under ``root`` (each kind of damage as a real file)."""
    import cv2
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    im: Dict[str, Path] = {}

    def save(name, arr, **kw):
        p = root / name
        Image.fromarray(arr).save(p, **kw)
        im[p.stem] = p
        return p

    a = astronaut
    save("portrait.png", a)
    save("noface.png", data.coffee())
    canvas = np.full((512, 1024, 3), 200, np.uint8)
    canvas[:, :512] = a
    canvas[128:384, 640:896] = cv2.resize(a, (256, 256), interpolation=cv2.INTER_AREA)
    save("two_faces.png", canvas)
    # the face box is x 179..272: cut 10 px into it on the left, and close to the top
    save("edge.png", np.ascontiguousarray(a[40:, 189:]))
    rgba = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    rgba[:64, :, 3] = 0  # a transparent band: composited on white
    save("rgba.png", rgba)
    save("gray.png", np.asarray(Image.fromarray(a).convert("L")))
    p = root / "palette.png"
    Image.fromarray(a).convert("P", palette=Image.ADAPTIVE).save(p)
    im["palette"] = p
    p = root / "rgb16.png"
    cv2.imwrite(str(p), a[:, :, ::-1].astype(np.uint16) * 257)  # 16-bit RGB PNG
    im["rgb16"] = p
    p = root / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned by 90 degrees, the tag turns it upright
    Image.fromarray(np.ascontiguousarray(np.rot90(a))).save(p, exif=exif, quality=92)
    im["exif"] = p
    save("one_pixel.png", np.zeros((1, 1, 3), np.uint8))
    big = np.full((4320, 7680, 3), 90, np.uint8)  # 8K UHD, the portrait 4x in the middle
    big[112:112 + 2048, 2816:2816 + 2048] = cv2.resize(a, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    p = root / "eight_k.jpg"
    Image.fromarray(big).save(p, quality=85)
    im["eight_k"] = p
    whole = (root / "portrait.png").read_bytes()
    p = root / "truncated.png"
    p.write_bytes(whole[:len(whole) // 3])
    im["truncated"] = p
    p = root / "text.png"
    p.write_text("this is a text file, not a picture\n" * 20)
    im["text"] = p

    speech = _speech(arctic_wav)
    short = speech[SPEECH_START:SPEECH_START + int(SHORT_SECONDS * 16000)].copy()
    au: Dict[str, Path] = {}

    def put(name, blob: bytes):
        q = root / name
        q.write_bytes(blob)
        au[q.stem] = q
        return q

    good = put("speech.wav", wav_bytes(short, 16000))
    put("empty.wav", b"")
    put("trunc_header.wav", good.read_bytes()[:30])
    put("trunc_data.wav", good.read_bytes()[:44 + 2 * 4800])  # header says 0.6 s, 0.3 s are there
    put("silent.wav", wav_bytes(np.zeros(int(SHORT_SECONDS * 16000), np.float32), 16000))
    put("tenth.wav", wav_bytes(speech[16000:17600], 16000))
    put("stereo.wav", wav_bytes(short, 16000, channels=2))
    from scipy.signal import resample_poly
    x48 = resample_poly(short, 3, 1).astype(np.float32)
    put("rate48k.wav", wav_bytes(x48, 48000))
    x44 = resample_poly(short, 441, 160).astype(np.float32)
    for name, codec, rate, ch, fmt, x in (("speech.mp3", "libmp3lame", 44100, 2, None, x44),
                                          ("speech.ogg", "libopus", 48000, 1, None, x48),
                                          ("speech.m4a", "aac", 48000, 2, "mp4", x48)):
        q = root / name
        encode_audio(x, rate, q, codec, ch, fmt)
        au[q.stem + "_" + q.suffix[1:]] = q
    put("text.wav", b"not audio at all, just words\n" * 40)

    # a video without an audio track (10 frames of the portrait)
    from sadtalker_ext.io.video_writer import VideoWriter
    vid = root / "noaudio.mp4"
    with VideoWriter(vid, (256, 256), 25, audio=None) as w:
        w.write(np.repeat(cv2.resize(a, (256, 256))[None], 10, axis=0))
    au["video_noaudio"] = vid
    videos = {"noaudio": vid}

    ck: Dict[str, Path] = {}
    if synthetic_checkpoints is not None:
        import torch
        for name in ("wrong_model", "truncated", "not_state_dict", "missing"):
            (root / "ckpt" / name).mkdir(parents=True, exist_ok=True)
            ck[name] = root / "ckpt" / name
        # the Wav2Lip name holding SadTalker's MappingNet (a real checkpoint of another model)
        os.symlink(synthetic_checkpoints / "mapping_00229-model.pth.tar", ck["wrong_model"] / "wav2lip_gan.pth")
        with open(synthetic_checkpoints / "wav2lip.pth", "rb") as src:
            (ck["truncated"] / "wav2lip_gan.pth").write_bytes(src.read(1 << 20))
        torch.save([1, 2, 3], ck["not_state_dict"] / "wav2lip_gan.pth")
    return Inputs(root=root, images=im, audio=au, videos=videos, ckpt_dirs=ck, speech=speech, short=short)


class FullDiskContainer:
    """An output container whose ``mux`` fails with ENOSPC after ``budget`` packets."""

    def __init__(self, real, budget):
        self._real, self._budget = real, budget

    def mux(self, packet):
        if self._budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget -= 1
        return self._real.mux(packet)

    def __getattr__(self, name):
        return getattr(self._real, name)
