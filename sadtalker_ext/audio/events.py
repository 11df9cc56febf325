"""Timed phonemes: what a forced alignment or a TTS engine says about the speech.

The type lives with the audio stage (which produces it: :mod:`~sadtalker_ext.audio.phonemes`,
:mod:`~sadtalker_ext.audio.tts`) so that the motion stage, which turns it into mouth shapes
(:mod:`~sadtalker_ext.motion.lite.visemes`), imports it from below.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme with its time span in seconds from the start of the audio.

    alphabet: "" (ARPAbet or IPA-like, the default) or "espeak" (espeak-ng mnemonics, from TTS).
    """

    phoneme: str
    start: float
    end: float
    alphabet: str = ""


__all__ = ["PhonemeEvent"]
