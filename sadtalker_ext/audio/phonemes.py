"""English phoneme timings from pocketsphinx's bundled en-US model: recognition + forced alignment.

pocketsphinx (BSD licence) ships its acoustic model, dictionary and language model inside the
wheel, so this runs offline. Without a transcript the speech is first recognised, then the
recognised (or given) text is force-aligned to get phone-level spans (10 ms resolution).
Returns None when pocketsphinx is not installed or nothing could be aligned, so callers fall back
to acoustic features; with ``required=True`` a DependencyError/AudioError is raised instead.

The decoder holds Python's GIL for the whole decode (about 0.6 s per second of speech on one CPU
core), which would freeze every other thread of the process - inside the WebUI the whole server,
``/sdapi/v1/progress`` included. :func:`align_phonemes` therefore runs it in a worker process by
default: ``<this python> -m sadtalker_ext.audio.phonemes`` (a plain subprocess, not
``multiprocessing``, whose spawn would re-import the WebUI's ``__main__``), fed the samples on stdin
and answering JSON on stdout. The parent only waits on the pipes (no GIL held), polls
``should_stop`` every 0.1 s, and kills the worker on interrupt, error or exit. The events are the
same numbers the in-process decode gives (floats pass JSON exactly).
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from typing import Callable, Optional

import numpy as np

from ..errors import AudioError, DependencyError, GenerationInterrupted
from .decode import SpooledSamples
from .events import PhonemeEvent

log = logging.getLogger(__name__)
RATE = 16000
FRAME_S = 0.01  # pocketsphinx frame = 10 ms
SEGMENT_S = 20.0  # long audio is processed in segments cut at quiet points


def _decoder():
    from pocketsphinx import Decoder
    return Decoder(samprate=RATE, loglevel="FATAL")


def _split_points(x16: np.ndarray) -> list[tuple[int, int]]:
    """Segments of at most ~SEGMENT_S seconds, cut at the quietest 100 ms near each boundary."""
    n = len(x16)
    seg = int(SEGMENT_S * RATE)
    if n <= seg * 1.25:
        return [(0, n)]
    bounds = [0]
    win = int(0.1 * RATE)
    while n - bounds[-1] > seg * 1.25:
        lo = bounds[-1] + int(seg * 0.75)
        hi = min(n - win, bounds[-1] + int(seg * 1.25))
        starts = np.arange(lo, hi, win // 2)
        energy = [float(np.mean(x16[s:s + win] ** 2)) for s in starts]
        bounds.append(int(starts[int(np.argmin(energy))] + win // 2))
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def _pcm16(x: np.ndarray) -> bytes:
    """16-bit PCM bytes of float samples in [-1, 1]."""
    return (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()


def _clean_text(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    return " ".join(words)


def _decode(decoder, raw: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(raw, full_utt=True)
    decoder.end_utt()


def _recognise(decoder, raw: bytes) -> str:
    """Open-vocabulary recognition with the bundled en-US language model; cleaned lower-case words."""
    _decode(decoder, raw)
    hyp = decoder.hyp()
    return _clean_text(hyp.hypstr) if hyp is not None else ""


def _force_align(decoder, raw: bytes, text: str):
    """Word/phone alignment of ``text`` to ``raw`` (16-bit PCM at 16 kHz), or None.

    The first pass aligns words; get_alignment() is only filled by a second pass with the
    alignment search switched on (set_alignment).
    """
    decoder.set_align_text(text)
    _decode(decoder, raw)
    decoder.set_alignment()
    _decode(decoder, raw)
    return decoder.get_alignment()


def _align_spans(x16: np.ndarray, transcript: str | None) -> list[tuple[str, float, float]] | None:
    """(ARPAbet phone, start s, end s) of ``x16``, decoded in this process; None without pocketsphinx."""
    try:
        decoder = _decoder()
    except ImportError:
        return None
    segments = _split_points(x16)
    spans: list[tuple[str, float, float]] = []
    for s0, s1 in segments:
        raw = _pcm16(x16[s0:s1])  # per segment: no whole-length int16 copy of long audio
        text = _clean_text(transcript) if (transcript and len(segments) == 1) else None
        try:
            text = text or _recognise(decoder, raw)
            if not text:
                continue
            alignment = _force_align(decoder, raw, text)
        except (RuntimeError, ValueError) as exc:  # pocketsphinx raises these when alignment fails
            log.info("pocketsphinx alignment failed on a segment: %s", exc)
            alignment = None
        finally:
            try:
                decoder.activate_search("_default")
            except (RuntimeError, KeyError, ValueError):  # older builds name the default search differently
                decoder = _decoder()
        if alignment is None:
            continue
        off = s0 / RATE
        for word in alignment:
            for phone in word:
                start = off + phone.start * FRAME_S
                spans.append((str(phone.name), start, start + phone.duration * FRAME_S))
    return spans


#: Seconds between two looks at ``should_stop`` while the worker runs.
POLL_S = 0.1


def _worker_env() -> dict:
    """The environment of the worker: ours, with this package's folder first on PYTHONPATH (inside the
    WebUI the extension's folder is on ``sys.path`` only, not on PYTHONPATH)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _align_spans_in_worker(x16: np.ndarray, transcript: str | None,
                           should_stop: Optional[Callable[[], bool]] = None) -> list[tuple[str, float, float]] | None:
    """:func:`_align_spans` in a worker process (see the module doc). Raises GenerationInterrupted when
    ``should_stop()`` turns true (the worker is killed), DependencyError when the worker fails."""
    header = json.dumps({"transcript": transcript, "samples": len(x16)}).encode() + b"\n"
    # the input goes through an unnamed temporary file: Popen.communicate() cannot resume writing to a
    # stdin pipe after a timeout, and a writer thread would be one more thing to clean up
    with tempfile.TemporaryFile() as request:
        request.write(header)
        if isinstance(x16, SpooledSamples):  # file-backed: copied block by block, never held whole
            for a in range(0, len(x16), 1 << 20):
                request.write(x16[a:a + (1 << 20)].astype("<f4", copy=False).tobytes())
        else:
            samples = np.ascontiguousarray(x16, dtype="<f4")
            request.write(memoryview(samples).cast("B"))  # the array's own buffer: no bytes copy of the track
        request.seek(0)
        proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=request, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_worker_env())
    try:
        while True:
            if should_stop is not None and should_stop():
                raise GenerationInterrupted("generation was interrupted; no video was written")
            try:
                out, err = proc.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        answer = json.loads(out.decode("utf8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " ".join(err.decode("utf8", "replace").strip().splitlines()[-1:])
        raise DependencyError(f"the speech-alignment worker failed (exit {proc.returncode}: {tail[:300]}); "
                              "set 'Mouth shapes from' to acoustic") from None
    if answer.get("spans") is None:
        return None
    return [(str(n), float(a), float(b)) for n, a, b in answer["spans"]]


def _worker_main() -> int:
    """``python -m sadtalker_ext.audio.phonemes``: a JSON header line, float32 samples; answers JSON."""
    import stat

    stdin = sys.stdin.buffer
    line = stdin.readline()
    header = json.loads(line)
    n = int(header["samples"])
    if stat.S_ISREG(os.fstat(stdin.fileno()).st_mode):  # the request file: read segment by segment
        x16 = SpooledSamples(stdin.fileno(), stdin.tell(), n)
    else:  # a pipe: read straight into the float32 array (one copy of the track)
        x16 = np.empty(n, "<f4")
        view, got = memoryview(x16).cast("B"), 0
        while got < 4 * n:
            k = stdin.readinto(view[got:])
            if not k:
                raise SystemExit(f"the speech-alignment request ended after {got // 4} of {n} samples")
            got += k
    spans = _align_spans(x16, header.get("transcript"))
    sys.stdout.write(json.dumps({"spans": spans}) + "\n")
    sys.stdout.flush()
    return 0


def align_phonemes(x16: np.ndarray, *, transcript: str | None = None, required: bool = False,
                   should_stop: Optional[Callable[[], bool]] = None,
                   in_process: bool = False) -> list[PhonemeEvent] | None:
    """Phone spans (ARPAbet, seconds) of English speech ``x16`` (float32 mono 16 kHz).

    transcript: the words spoken (improves alignment); recognised when None. Long audio is
    processed in ~20 s segments (a transcript is then ignored, since it cannot be split reliably).
    The decode runs in a worker process (the GIL stays free; see the module doc) unless
    ``in_process``; ``should_stop()`` is polled meanwhile and stops it (GenerationInterrupted).
    Raises DependencyError (no pocketsphinx, with ``required``; a failed worker) and AudioError
    (nothing aligned, with ``required``).
    """
    if _find_spec("pocketsphinx") is None:
        spans = None
    elif in_process:
        spans = _align_spans(x16, transcript)
    else:
        spans = _align_spans_in_worker(x16, transcript, should_stop)
    if spans is None:
        if required:
            raise DependencyError("pocketsphinx is not installed; pip install pocketsphinx, "
                                  "or use --phonemes acoustic")
        return None
    events = [PhonemeEvent(phoneme=n, start=a, end=b) for n, a, b in spans]
    if not events:
        if required:
            raise AudioError("no English speech could be aligned; check the audio or use --phonemes acoustic")
        return None
    return events


def _find_spec(name: str):
    import importlib.util

    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def align_words(x16: np.ndarray, transcript: str | None = None) -> list[tuple[str, float, float]]:
    """Word spans (word, start s, end s) from the same alignment, silences excluded."""
    decoder = _decoder()
    pcm = _pcm16(x16)
    text = (_clean_text(transcript) if transcript else None) or _recognise(decoder, pcm)
    if not text:
        return []
    alignment = _force_align(decoder, pcm, text)
    out = []
    for w in alignment or []:
        name = re.sub(r"\(\d+\)$", "", w.name)
        if name.startswith("<") or name.startswith("["):
            continue
        out.append((name, w.start * FRAME_S, (w.start + w.duration) * FRAME_S))
    return out


if __name__ == "__main__":
    sys.exit(_worker_main())
