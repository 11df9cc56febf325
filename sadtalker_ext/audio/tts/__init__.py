"""Text to speech with phoneme timings (offline; espeak-ng by default). See :mod:`.base`.

Importing this package is cheap and needs no native library; the engine loads on first use and
raises DependencyError when espeak-ng is missing (:func:`is_available` tells beforehand).
"""
from __future__ import annotations

from .base import (DEFAULT_ENGINE, LANGUAGE_NAMES, LANGUAGES, SpeechChunk, TTSEngine, available_engines,
                   check_rate_pitch, check_text, concat_chunks, get_engine, normalize_language, register_engine,
                   split_sentences, synthesize)


def _espeak():
    from .espeak import EspeakEngine
    return EspeakEngine()


def _piper():
    from .piper import PiperEngine
    return PiperEngine()


register_engine("espeak-ng", _espeak)
register_engine("piper", _piper)


def is_available(engine: str | None = None) -> bool:
    """True when ``engine`` (default espeak-ng) can synthesise on this machine."""
    from ...errors import TalkingHeadError
    try:
        eng = get_engine(engine)
        check = getattr(eng, "check_installed", None)
        if check is not None:
            check()
        elif (engine or DEFAULT_ENGINE) == "espeak-ng":
            from .espeak import is_available as espeak_ok
            return espeak_ok()
        return True
    except TalkingHeadError:
        return False


__all__ = ["DEFAULT_ENGINE", "LANGUAGES", "LANGUAGE_NAMES", "SpeechChunk", "TTSEngine", "available_engines",
           "check_rate_pitch", "check_text", "concat_chunks", "get_engine", "is_available", "normalize_language",
           "register_engine", "split_sentences", "synthesize"]
