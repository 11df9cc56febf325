"""Piper (neural, offline) as a plug-in engine: ``--tts-engine piper --voice path/to/voice.onnx``.

Piper is not a dependency: it is used only when ``piper-tts`` (>= 1.3, ``piper.PiperVoice``) is
installed and the user gives a voice file (``.onnx`` with its ``.onnx.json`` beside it; voices are
downloaded by the user, nothing is fetched here). Piper reports no phoneme times, so chunks carry
no events (``gives_phonemes = False``): the caller aligns the audio itself (pocketsphinx for
English, acoustic features otherwise). ``rate`` maps to Piper's ``length_scale = 175 / rate``;
``pitch`` is not supported by Piper and must stay at its default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import DependencyError, InputError, OptionError
from .base import DEFAULT_PITCH, DEFAULT_RATE, SpeechChunk, TTSEngine, check_rate_pitch, check_text, split_sentences


class PiperEngine(TTSEngine):
    """See module docstring. The language is the voice file's; ``lang`` is checked against it when known."""

    name = "piper"
    gives_phonemes = False

    def __init__(self):
        self._voices: dict[str, object] = {}

    def check_installed(self) -> None:
        """DependencyError when piper-tts is missing."""
        try:
            from piper import PiperVoice  # noqa: F401
        except ImportError as exc:
            raise DependencyError("the piper speech engine needs piper-tts: pip install piper-tts, "
                                  "or use the default espeak-ng engine") from exc

    def _voice(self, voice: str | None):
        self.check_installed()
        if not voice:
            raise OptionError("the piper engine needs --voice path/to/voice.onnx (a Piper voice file)")
        path = Path(voice).expanduser()
        if path.suffix != ".onnx" or not path.is_file():
            raise OptionError(f"Piper voice file {path} not found; give the .onnx file (with its .onnx.json beside it)")
        key = str(path.resolve())
        if key not in self._voices:
            from piper import PiperVoice
            try:
                self._voices[key] = PiperVoice.load(key)
            except (OSError, ValueError, RuntimeError) as exc:
                raise OptionError(f"cannot load Piper voice {path.name} ({type(exc).__name__}); "
                                  "check the .onnx and .onnx.json files") from exc
        return self._voices[key]

    def stream(self, text: str, lang: str = "en", voice: str | None = None, rate: float | None = None,
               pitch: float | None = None) -> Iterator[SpeechChunk]:
        text = check_text(text)
        code = self.check_language(lang)
        rate_i, pitch_i = check_rate_pitch(rate, pitch)
        if pitch_i != DEFAULT_PITCH:
            raise OptionError("the piper engine cannot change the pitch; leave --pitch at 50 or use espeak-ng")
        pv = self._voice(voice)
        voice_lang = str(getattr(getattr(pv, "config", None), "espeak_voice", "") or "").lower()
        if voice_lang and not voice_lang.startswith({"en": "en", "ru": "ru", "zh": "cmn"}[code]) \
                and not voice_lang.startswith(code):
            raise OptionError(f"the Piper voice speaks {voice_lang}, not {code}; pick a matching voice file")
        from piper import SynthesisConfig
        cfg = SynthesisConfig(length_scale=DEFAULT_RATE / float(rate_i))
        offset = 0
        for sent in split_sentences(text):
            parts, sr = [], None
            for audio in pv.synthesize(sent, syn_config=cfg):
                sr = int(audio.sample_rate)
                parts.append(np.asarray(audio.audio_float_array, np.float32).reshape(-1))
            if sr is None:
                raise InputError(f"Piper produced no speech for {sent[:40]!r}; check the text's language")
            samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            yield SpeechChunk(samples=samples, sample_rate=sr, offset=offset / sr, text=sent)
            offset += len(samples)
