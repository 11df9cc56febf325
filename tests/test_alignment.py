"""Forced alignment (audio/phonemes.py) on pocketsphinx's own LibriVox test clips.

The five clips (Sense and Sensibility, LibriVox, public domain) with their transcripts, word and
phone labels (``*.json``, ``*.phone.json``) and speech/silence labels (``*.lab``) ship only in
pocketsphinx's source distribution. The fixture fetches it once with pip for the installed
version (``--no-binary pocketsphinx`` only: ``:all:`` would also build Cython from source, ~9 min)
and extracts the clips to ~/.cache/sd-talking-head/pocketsphinx-sdist; nothing is committed.
"""
from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.audio.phonemes import align_phonemes, align_words

CACHE = Path.home() / ".cache" / "sd-talking-head" / "pocketsphinx-sdist"
CLIPS = ["0870", "0880", "0890", "0920", "0930"]


@pytest.fixture(scope="module")
def librivox() -> Path:
    ver = version("pocketsphinx")
    dest = CACHE / f"pocketsphinx-{ver}-librivox"
    names = [f"sense_and_sensibility_01_austen_64kb-{c}" for c in CLIPS]
    if all((dest / f"{n}.wav").is_file() and (dest / f"{n}.phone.json").is_file() for n in names):
        return dest
    tarball = CACHE / f"pocketsphinx-{ver}.tar.gz"
    if not tarball.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
               "--no-binary", "pocketsphinx", f"pocketsphinx=={ver}", "-d", str(CACHE)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not tarball.is_file():
            pytest.fail(f"could not fetch the pocketsphinx {ver} sdist for its LibriVox test clips: "
                        f"{proc.stderr.strip()[-300:]}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tf:
        for m in tf.getmembers():
            if "/test/data/librivox/" in m.name and m.isfile():
                name = m.name.rsplit("/", 1)[-1]
                with tf.extractfile(m) as src:
                    (dest / name).write_bytes(src.read())
    return dest


def _clean(word: str) -> str:
    return re.sub(r"\(\d+\)$", "", word)


def _clip(librivox: Path, clip: str):
    base = librivox / f"sense_and_sensibility_01_austen_64kb-{clip}"
    audio = load_audio(f"{base}.wav")
    assert audio.sample_rate == 16000
    text = Path(f"{base}.txt").read_text().strip()
    ref = json.loads(Path(f"{base}.json").read_text())
    phones = json.loads(Path(f"{base}.phone.json").read_text())
    lab = [float(line.split()[0]) for line in Path(f"{base}.lab").read_text().splitlines() if line.strip()]
    return audio.samples, text, ref, phones, lab


@pytest.fixture(scope="module")
def aligned(librivox):
    out = {}
    for c in CLIPS:
        x, text, ref, phones, lab = _clip(librivox, c)
        out[c] = dict(words=align_words(x, text), phones=align_phonemes(x, transcript=text, required=True),
                      ref=ref, ref_phones=phones, lab=lab, text=text)
    return out


def test_word_boundaries_within_50ms_of_reference(aligned):
    errs = []
    for c, a in aligned.items():
        ref = [(_clean(w["t"]), w["b"], w["b"] + w["d"]) for w in a["ref"]["w"] if not w["t"].startswith("<")]
        got = a["words"]
        assert [w for w, _, _ in got] == [w for w, _, _ in ref] == a["text"].split(), c
        for (_, s, e), (_, rs, re_) in zip(got, ref):
            errs += [abs(s - rs), abs(e - re_)]
    errs = np.array(errs)
    print(f"word boundaries vs reference labels: {len(errs)} boundaries, median {np.median(errs) * 1000:.1f} ms, "
          f"p90 {np.percentile(errs, 90) * 1000:.1f} ms, max {errs.max() * 1000:.1f} ms")
    assert np.median(errs) <= 0.050
    assert np.percentile(errs, 90) <= 0.100


def test_speech_onset_offset_match_lab_labels(aligned):
    errs = []
    for a in aligned.values():
        onset, offset = a["lab"][0], a["lab"][-1]
        errs += [abs(a["words"][0][1] - onset), abs(a["words"][-1][2] - offset)]
    errs = np.array(errs)
    print(f"speech onset/offset vs .lab: median {np.median(errs) * 1000:.1f} ms, max {errs.max() * 1000:.1f} ms")
    assert np.median(errs) <= 0.050
    assert errs.max() <= 0.100


def test_phone_boundaries_match_reference(aligned):
    errs, matched, total = [], 0, 0
    for a in aligned.values():
        ref = [(p["t"], p["b"], p["b"] + p["d"]) for w in a["ref_phones"]["w"] for p in w["w"]]
        got = [(e.phoneme, e.start, e.end) for e in a["phones"]]
        total += len(ref)
        sm = difflib.SequenceMatcher(a=[g[0] for g in got], b=[r[0] for r in ref], autojunk=False)
        for block in sm.get_matching_blocks():
            for k in range(block.size):
                (_, s, e), (_, rs, re_) = got[block.a + k], ref[block.b + k]
                matched += 1
                errs += [abs(s - rs), abs(e - re_)]
        # phone spans tile the utterance: each starts where the previous ended
        assert all(abs(got[i + 1][1] - got[i][2]) < 1e-6 for i in range(len(got) - 1))
    errs = np.array(errs)
    print(f"phones: {matched}/{total} reference phones matched in order, "
          f"boundary median {np.median(errs) * 1000:.1f} ms, "
          f"p90 {np.percentile(errs, 90) * 1000:.1f} ms")
    assert matched / total >= 0.95
    assert np.median(errs) <= 0.050
