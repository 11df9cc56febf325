"""Real inputs for the batch, async-API and Ray tests: skimage photos with a detectable face, a
short cut of the ARCTIC speech, texts for espeak-ng, one damaged image and one missing file.

Faces checked with the lite engine's detector (``find_face``): astronaut, its mirror image and a
crop of it, the cameraman (``camera``), and two LFW faces (``lfw_subset``, 25x25, upscaled to
200x200). ``chelsea`` (a cat) and ``coffee`` have none.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

ARCTIC = Path(__file__).resolve().parents[1] / "sadtalker_ext" / "assets" / "arctic_a0007.wav"  # bundled copy


def portraits() -> dict[str, np.ndarray]:
    """name -> uint8 image (RGB, or grayscale for the cameraman)."""
    import cv2
    from skimage import data
    astro = data.astronaut()
    lfw = data.lfw_subset()
    def up(i):
        return cv2.resize((lfw[i] * 255).round().astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
    return {"astronaut": astro, "astronaut-mirror": np.ascontiguousarray(astro[:, ::-1]),
            "astronaut-crop": np.ascontiguousarray(astro[0:320, 60:380]), "cameraman": data.camera(),
            "lfw-0": up(0), "lfw-1": up(1)}


def write_inputs(folder: Path, speech_seconds: float = 1.2, reference_wav: Path = ARCTIC) -> dict[str, Path]:
    """PNG portraits, ``speech.wav`` (the first ``speech_seconds`` of ARCTIC a0007 after 0.3 s), a
    damaged PNG (its first 600 bytes). Returns name -> path."""
    import soundfile as sf
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, img in portraits().items():
        p = folder / f"{name}.png"
        Image.fromarray(img).save(p)
        out[name] = p
    x, sr = sf.read(str(reference_wav), dtype="float32")
    start = int(0.3 * sr)
    need = int(speech_seconds * sr)
    reps = int(np.ceil((start + need) / len(x)))
    x = np.tile(x, reps)[start:start + need]  # 10 s of speech for the bench: the recording repeated
    sf.write(str(folder / "speech.wav"), x, sr, subtype="PCM_16")
    out["speech"] = folder / "speech.wav"
    broken = folder / "broken.png"
    broken.write_bytes(out["astronaut"].read_bytes()[:600])
    out["broken"] = broken
    return out


def twelve_jobs(folder: Path) -> Path:
    """The acceptance jobs file: 10 good jobs (6 photos x speech or text, per-job overrides), a
    damaged image and a missing file. Paths relative to the file. Returns the CSV's path."""
    write_inputs(folder)
    rows = [
        {"image": "astronaut.png", "audio": "speech.wav", "output": "01-astronaut"},
        {"image": "cameraman.png", "audio": "speech.wav", "output": "02-cameraman"},
        {"image": "astronaut-mirror.png", "audio": "speech.wav", "output": "03-mirror", "seed": "7"},
        {"image": "astronaut-crop.png", "text": "Hello there.", "output": "04-crop-text"},
        {"image": "lfw-0.png", "audio": "speech.wav", "output": "05-lfw0", "still": "true"},
        {"image": "lfw-1.png", "text": "Good morning.", "output": "06-lfw1-text"},
        {"image": "astronaut.png", "text": "Nice to meet you.", "output": "07-astronaut-text",
         "options": json.dumps({"expression_scale": 1.5})},
        {"image": "cameraman.png", "text": "Thank you.", "output": "08-cameraman-text", "rate": "190"},
        {"image": "astronaut-mirror.png", "text": "Yes.", "output": "09-mirror-text", "preprocess": "resize"},
        {"image": "astronaut.png", "audio": "speech.wav", "output": "10-astronaut-pose", "pose_style": "12"},
        {"image": "broken.png", "audio": "speech.wav", "output": "11-broken"},
        {"image": "no-such-photo.png", "audio": "speech.wav", "output": "12-missing"},
    ]
    cols = ["image", "audio", "text", "output", "seed", "still", "options", "rate", "preprocess", "pose_style"]
    path = folder / "jobs.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


GOOD = ["01-astronaut", "02-cameraman", "03-mirror", "04-crop-text", "05-lfw0", "06-lfw1-text",
        "07-astronaut-text", "08-cameraman-text", "09-mirror-text", "10-astronaut-pose"]
BAD = ["11-broken", "12-missing"]
