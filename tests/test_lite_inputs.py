"""Inputs the lite engine must handle (formats, odd images, silence, short audio, several faces) and
bad inputs that must give one clear typed error and leave no file behind."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from sadtalker_ext.audio.decode import AudioClip, load_audio
from sadtalker_ext.errors import AudioError, ImageError, NoFaceError, OptionError
from sadtalker_ext.face.landmarks import detect_faces
from sadtalker_ext.face.measure import mouth_opening
from sadtalker_ext.io.image import load_image
from sadtalker_ext.io.probe import probe, read_frames
from sadtalker_ext.options import GenerateOptions
from sadtalker_ext.pipeline import generate

REPO = Path(__file__).resolve().parents[1]
FAST = dict(engine="lite", size=256, phonemes="acoustic")


def encode_audio(src: np.ndarray, rate: int, path: Path, codec: str, channels: int = 1, fmt: str | None = None):
    """Write ``src`` (float32 mono) with PyAV in another container/codec/rate/layout."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        data = np.repeat(src[None, :], channels, axis=0).astype(np.float32)
        sample_fmt = s.codec_context.codec.audio_formats[0].name if s.codec_context.codec.audio_formats else "fltp"
        frame_size = 1024
        pts = 0
        for i in range(0, data.shape[1], frame_size):
            block = np.ascontiguousarray(data[:, i:i + frame_size])
            fr = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            fr.sample_rate = rate
            fr.pts = pts
            fr.time_base = Fraction(1, rate)
            pts += block.shape[1]
            resampled = av.AudioResampler(format=sample_fmt, layout=layout, rate=rate).resample(fr)
            for r in resampled:
                for pkt in s.encode(r):
                    c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


@pytest.fixture(scope="module")
def speech(arctic_wav):
    return load_audio(arctic_wav)


@pytest.mark.parametrize("name,codec,rate,channels,fmt", [
    ("a.mp3", "libmp3lame", 44100, 2, None),
    ("a.ogg", "libopus", 48000, 1, None),
    ("a.m4a", "aac", 48000, 2, "mp4"),
    ("a.flac", "flac", 22050, 1, None),
])
def test_audio_formats_decode(tmp_path, speech, name, codec, rate, channels, fmt):
    from scipy.signal import resample_poly
    x = resample_poly(speech.samples, rate, 16000).astype(np.float32)
    p = tmp_path / name
    encode_audio(x, rate, p, codec, channels, fmt)
    clip = load_audio(p)
    assert clip.sample_rate == rate and clip.samples.ndim == 1
    assert abs(clip.duration - 4.0) < 0.1
    # the speech survives: the loud part is where it was
    env = np.abs(clip.resampled()).reshape(-1)[: 64000]
    assert env[8000:60000].max() > 0.1


def test_stereo_48k_m4a_end_to_end_keeps_rate(tmp_path, speech, astronaut):
    from scipy.signal import resample_poly
    x = resample_poly(speech.samples, 3, 1).astype(np.float32)
    p = tmp_path / "speech.m4a"
    encode_audio(x, 48000, p, "aac", 2, "mp4")
    out = tmp_path / "o.mp4"
    generate(astronaut, p, out, GenerateOptions(**FAST))
    info = probe(out)
    assert info.sample_rate == 48000 and info.audio_codec == "aac"
    clip = load_audio(p)
    assert abs(info.num_frames - clip.duration * 25) <= 1


@pytest.mark.parametrize("kind", ["rgba", "gray", "16bit", "palette", "exif"])
def test_image_variants(tmp_path, astronaut, kind):
    p = tmp_path / f"{kind}.png"
    if kind == "rgba":
        Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])).save(p)
    elif kind == "gray":
        Image.fromarray(astronaut).convert("L").save(p)
    elif kind == "16bit":
        g = (np.asarray(Image.fromarray(astronaut).convert("L"), np.uint16) * 257)
        Image.fromarray(g).save(p)  # 16-bit grayscale PNG
        import cv2
        p16 = tmp_path / "rgb16.png"
        cv2.imwrite(str(p16), (astronaut[:, :, ::-1].astype(np.uint16) * 257))  # 16-bit RGB PNG
        img16 = load_image(p16)
        assert img16.dtype == np.uint8 and np.abs(img16.astype(int) - astronaut).max() <= 1
    elif kind == "palette":
        Image.fromarray(astronaut).convert("P", palette=Image.ADAPTIVE).save(p)
    elif kind == "exif":
        p = tmp_path / "rot.jpg"
        im = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut)))  # stored rotated...
        exif = Image.Exif()
        exif[0x0112] = 8  # ...with the tag that rotates it back upright
        im.save(p, exif=exif)
    img = load_image(p)
    assert img.dtype == np.uint8 and img.shape == (512, 512, 3)
    faces = detect_faces(img)
    assert len(faces) == 1  # upright after EXIF transpose, face found in every variant


def test_8k_image(tmp_path, astronaut, speech):
    import cv2
    big = cv2.resize(astronaut, (7680, 7680), interpolation=cv2.INTER_CUBIC)[:4320]
    short = AudioClip(samples=speech.samples[:16000], sample_rate=16000)
    out = tmp_path / "big.mp4"
    generate(big, short, out, GenerateOptions(**FAST))
    assert probe(out).width == 256
    out2 = tmp_path / "bigfull.mp4"
    generate(big, short, out2, GenerateOptions(engine="lite", size=256, preprocess="full", phonemes="acoustic"))
    info = probe(out2)
    assert max(info.width, info.height) == 2048  # full mode caps the long side (--max-side)


def test_silent_audio_keeps_mouth_closed(tmp_path, astronaut):
    clip = AudioClip(samples=np.zeros(32000, np.float32), sample_rate=16000)
    out = tmp_path / "silent.mp4"
    generate(astronaut, clip, out, GenerateOptions(engine="lite", size=512))
    openings = [mouth_opening(detect_faces(f)[0].points) for f in list(read_frames(out))[::5]]
    src_open = mouth_opening(detect_faces(astronaut)[0].points)
    print("silent openings", np.round(openings, 3), "source", round(src_open, 3))
    assert max(openings) < 0.5 * src_open  # the source smiles with open lips; silence closes them


def test_sub_second_audio(tmp_path, astronaut, speech):
    clip = AudioClip(samples=speech.samples[16000:16000 + 4800], sample_rate=16000)  # 0.3 s
    out = tmp_path / "short.mp4"
    generate(astronaut, clip, out, GenerateOptions(**FAST))
    info = probe(out)
    assert info.num_frames in (7, 8, 9)


def test_multiple_faces_largest_and_index(astronaut, tmp_path, speech):
    import cv2
    small = cv2.resize(astronaut, (256, 256))
    canvas = np.full((512, 1024, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[128:384, 640:896] = small
    faces = detect_faces(canvas)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    assert faces[0].box[0] < 512 < faces[1].box[0]
    short = AudioClip(samples=speech.samples[:8000], sample_rate=16000)
    generate(canvas, short, tmp_path / "f1.mp4", GenerateOptions(face_index=1, **FAST))
    with pytest.raises(OptionError, match="face-index 5"):
        generate(canvas, short, tmp_path / "f5.mp4", GenerateOptions(face_index=5, **FAST))
    assert not (tmp_path / "f5.mp4").exists()


# ---------------------------------------------------------------- bad inputs through the CLI

def run_cli(tmp_path, image, audio, *extra):
    out = tmp_path / "out.mp4"
    p = subprocess.run([sys.executable, "-m", "sadtalker_ext", "--quiet", "generate", "--image", str(image),
                        "--audio", str(audio), "--out", str(out), "--size", "256", *extra],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    leftovers = [f.name for f in tmp_path.iterdir() if f.name.endswith(".mp4") or ".part" in f.name]
    return p, leftovers


@pytest.fixture
def portrait_png(tmp_path, astronaut):
    p = tmp_path / "portrait.png"
    Image.fromarray(astronaut).save(p)
    return p


def _bad_input_cases(tmp_path, astronaut, arctic_wav):
    from skimage import data
    noface = tmp_path / "noface.png"
    Image.fromarray(data.coffee()).save(noface)
    textimg = tmp_path / "fake.png"
    textimg.write_text("this is not an image\n")
    full = tmp_path / "full.png"
    Image.fromarray(astronaut).save(full)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(full.read_bytes()[:2000])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    textwav = tmp_path / "text.wav"
    textwav.write_text("not audio at all\n" * 50)
    truncwav = tmp_path / "trunc.wav"
    truncwav.write_bytes(Path(arctic_wav).read_bytes()[:30])
    return [
        ("no face", noface, arctic_wav, [], "no face found"),
        ("text as image", textimg, arctic_wav, [], "cannot read image"),
        ("truncated png", trunc, arctic_wav, [], "cannot read image"),
        ("missing image", tmp_path / "nope.png", arctic_wav, [], "image file not found"),
        ("empty audio", full, empty, [], "is empty"),
        ("text as audio", full, textwav, [], "audio"),
        ("truncated wav", full, truncwav, [], "audio"),
        ("missing audio", full, tmp_path / "nope.wav", [], "audio file not found"),
        ("bad size", full, arctic_wav, ["--size", "300"], "--size must be 256 or 512"),
        ("bad pose style", full, arctic_wav, ["--pose-style", "99"], "--pose-style"),
        ("bad expression scale", full, arctic_wav, ["--expression-scale", "-1"], "--expression-scale"),
        ("bad face index", full, arctic_wav, ["--face-index", "3"], "face-index 3"),
    ]


def test_bad_inputs_cli(tmp_path, astronaut, arctic_wav):
    cases = _bad_input_cases(tmp_path, astronaut, arctic_wav)
    for name, image, audio, extra, message in cases:
        p, leftovers = run_cli(tmp_path, image, audio, *extra)
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("error:")]
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        assert len(lines) == 1 and message in lines[0], (name, p.stderr)
        assert "Traceback" not in p.stderr, name
        assert leftovers == [], (name, leftovers)


def test_bad_inputs_python_api_typed(tmp_path, astronaut, arctic_wav):
    expected = {"no face": NoFaceError, "text as image": ImageError, "truncated png": ImageError,
                "missing image": ImageError, "empty audio": AudioError, "text as audio": AudioError,
                "truncated wav": AudioError, "missing audio": AudioError, "bad size": OptionError,
                "bad pose style": OptionError, "bad expression scale": OptionError, "bad face index": OptionError}
    for name, image, audio, extra, message in _bad_input_cases(tmp_path, astronaut, arctic_wav):
        opts = dict(FAST)
        for k, v in zip(extra[::2], extra[1::2]):
            key = k.lstrip("-").replace("-", "_")
            opts[key] = type(getattr(GenerateOptions(), key))(v)
        out = tmp_path / "api.mp4"
        with pytest.raises(expected[name]) as ei:
            generate(image, audio, out, GenerateOptions(**opts))
        assert message in str(ei.value) and "\n" not in str(ei.value)
        assert not out.exists()
        assert not list(tmp_path.glob(".*part*"))


def test_failure_mid_run_leaves_no_file(tmp_path, astronaut, arctic_wav):
    from sadtalker_ext.errors import GenerationInterrupted
    from sadtalker_ext.pipeline import Callbacks
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # after two chunks were encoded
    out = tmp_path / "x.mp4"
    with pytest.raises(GenerationInterrupted):
        generate(astronaut, arctic_wav, out, GenerateOptions(**FAST), callbacks=Callbacks(should_stop=stop))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_non_english_audio_uses_acoustic_visemes(astronaut, speech, monkeypatch):
    from sadtalker_ext.audio import phonemes
    from sadtalker_ext.engines.base import RunContext
    from sadtalker_ext.engines.lite import LiteEngine
    called = []
    monkeypatch.setattr(phonemes, "align_phonemes", lambda *a, **k: called.append(1) or None)
    eng = LiteEngine()
    for lang, expect_calls in (("ru", 0), ("en", 1)):
        opts = GenerateOptions(engine="lite", size=256, language=lang)
        src = eng.prepare(astronaut, opts)
        ctx = RunContext(audio=speech, options=opts, num_frames=speech.num_frames())
        eng.motion(src, ctx)
        assert len(called) == expect_calls, lang
    assert ctx.info["viseme_source"] == "acoustic"  # en, but alignment (stubbed) gave nothing


def test_odd_sample_rate_is_resampled_for_aac(tmp_path, astronaut, speech):
    from scipy.signal import resample_poly
    x = resample_poly(speech.samples[:16000], 7, 16).astype(np.float32)  # 1 s at 7 kHz
    out = tmp_path / "odd.mp4"
    generate(astronaut, AudioClip(samples=x, sample_rate=7000), out, GenerateOptions(**FAST))
    info = probe(out)
    assert info.sample_rate == 8000 and abs(info.num_frames - 25) <= 1
