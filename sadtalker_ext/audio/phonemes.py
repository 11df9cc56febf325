"""English phoneme timings from pocketsphinx's bundled en-US model: recognition + forced alignment.

pocketsphinx (BSD licence) ships its acoustic model, dictionary and language model inside the
wheel, so this runs offline. Without a transcript the speech is first recognised, then the
recognised (or given) text is force-aligned to get phone-level spans (10 ms resolution).
Returns None when pocketsphinx is not installed or nothing could be aligned, so callers fall back
to acoustic features; with ``required=True`` a DependencyError/AudioError is raised instead.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from ..errors import AudioError, DependencyError
from ..motion.lite.visemes import PhonemeEvent

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


def align_phonemes(x16: np.ndarray, *, transcript: str | None = None,
                   required: bool = False) -> list[PhonemeEvent] | None:
    """Phone spans (ARPAbet, seconds) of English speech ``x16`` (float32 mono 16 kHz).

    transcript: the words spoken (improves alignment); recognised when None. Long audio is
    processed in ~20 s segments (a transcript is then ignored, since it cannot be split reliably).
    """
    try:
        decoder = _decoder()
    except ImportError as exc:
        if required:
            raise DependencyError("pocketsphinx is not installed; pip install pocketsphinx, "
                                  "or use --phonemes acoustic") from exc
        return None
    pcm = (np.clip(x16, -1, 1) * 32767).astype(np.int16)
    segments = _split_points(x16)
    events: list[PhonemeEvent] = []
    for s0, s1 in segments:
        raw = pcm[s0:s1].tobytes()
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
                events.append(PhonemeEvent(phoneme=str(phone.name), start=start,
                                           end=start + phone.duration * FRAME_S))
    if not events:
        if required:
            raise AudioError("no English speech could be aligned; check the audio or use --phonemes acoustic")
        return None
    return events


def align_words(x16: np.ndarray, transcript: str | None = None) -> list[tuple[str, float, float]]:
    """Word spans (word, start s, end s) from the same alignment, silences excluded."""
    decoder = _decoder()
    pcm = (np.clip(x16, -1, 1) * 32767).astype(np.int16).tobytes()
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
