"""Text-to-speech interface: engines, registry, text checks and sentence splitting.

An engine turns text into speech *and* the timing of every phoneme in it, so the lite engine
can shape the mouth from the phonemes instead of guessing them from the sound:

    clip, events = synthesize("Hello there.", lang="en")        # AudioClip, list[PhonemeEvent]
    for chunk in get_engine().stream(long_text, lang="ru"):     # one SpeechChunk per sentence
        ...

Languages are the ISO codes ``en``, ``ru`` and ``zh`` (Mandarin, Chinese characters). ``rate`` is in
words per minute (80..450, espeak's scale; 175 is normal) and ``pitch`` is 0..100 (50 normal);
engines without such controls map them as well as they can. ``voice`` is engine-specific (an
espeak-ng voice name such as ``en-gb`` or ``en-us+f3``, a Piper ``.onnx`` file) and None picks
the language's default.

Long text is synthesised one sentence at a time (:func:`split_sentences`; sentences longer than
``MAX_CHUNK_CHARS`` are cut at commas or spaces), so the engine never holds more than one
sentence's audio; :meth:`TTSEngine.synthesize` concatenates the chunks (float32, ~5 MB per
minute at 22.05 kHz) and stops with an InputError past ``MAX_SPEECH_SECONDS``.

Other engines plug in with :func:`register_engine`; espeak-ng (``espeak.py``) is the default.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ...errors import InputError, OptionError
from ..events import PhonemeEvent
from ..decode import MAX_AUDIO_SECONDS, AudioClip

LANGUAGES = ("en", "ru", "zh")
LANGUAGE_NAMES = {"en": "English", "ru": "Russian", "zh": "Chinese (Mandarin)"}
_LANG_ALIASES = {"en": "en", "eng": "en", "english": "en", "en-us": "en", "en_us": "en",
                 "ru": "ru", "rus": "ru", "russian": "ru", "ru-ru": "ru", "ru_ru": "ru",
                 "zh": "zh", "cmn": "zh", "chinese": "zh", "mandarin": "zh", "zh-cn": "zh", "zh_cn": "zh",
                 "zh-hans": "zh"}
RATE_RANGE = (80, 450)      # words per minute
PITCH_RANGE = (0, 100)
DEFAULT_RATE = 175
DEFAULT_PITCH = 50
MAX_CHUNK_CHARS = 400       # longest piece handed to an engine at once
MAX_TEXT_CHARS = 200_000    # ~ 4 hours of speech: refused before any work
MAX_SPEECH_SECONDS = MAX_AUDIO_SECONDS

# sentence ends: . ! ? … and their CJK forms, followed by space/quotes/brackets (or nothing for CJK)
_SENT_END = re.compile(r"(?<=[.!?…])[\"'»”’)\]]*\s+|(?<=[。！？；])[\"'»”’)\]」』]*\s*|\n\s*\n")
_SOFT_BREAK = re.compile(r"(?<=[,;:，、；：—–])\s*")


@dataclass
class SpeechChunk:
    """Speech for one piece of text (usually a sentence).

    samples: float32 [n] mono in [-1, 1] at ``sample_rate`` Hz.
    events: phonemes with times in seconds from the start of the whole text's speech (not of the
        chunk), end of one = start of the next; pauses are phonemes too (espeak: names starting "_").
    offset: seconds from the start of the whole speech to this chunk's first sample.
    text: the piece of text spoken.
    engine_seconds: the engine's own report of the chunk's length (espeak: its end event's
        millisecond time), None when the engine gives none.
    words: how many words the engine counted (espeak: its word events; Chinese: ~1 per character).
    """

    samples: np.ndarray
    sample_rate: int
    events: list[PhonemeEvent] = field(default_factory=list)
    offset: float = 0.0
    text: str = ""
    engine_seconds: float | None = None
    words: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def normalize_language(lang: str | None) -> str:
    """``en`` / ``ru`` / ``zh`` from a language code or name; OptionError for anything else."""
    key = str(lang or "").strip().lower()
    if key in _LANG_ALIASES:
        return _LANG_ALIASES[key]
    raise OptionError(f"text-to-speech language {lang!r} is not supported; use one of "
                      + ", ".join(f"{c} ({n})" for c, n in LANGUAGE_NAMES.items()))


def check_text(text) -> str:
    """The text with surrounding whitespace removed; InputError when empty or without any letter."""
    if text is None or not isinstance(text, str):
        raise InputError("text to speak must be a string; give --text \"...\"")
    t = text.strip()
    if not t or not any(ch.isalnum() for ch in t):
        raise InputError("the text to speak is empty; write at least one word")
    if len(t) > MAX_TEXT_CHARS:
        raise InputError(f"the text is too long ({len(t)} characters, at most {MAX_TEXT_CHARS}); "
                         "split it into several videos")
    return t


def check_rate_pitch(rate, pitch) -> tuple[int, int]:
    """Validated (rate words/min, pitch 0..100), defaults for None; OptionError when out of range."""
    r = DEFAULT_RATE if rate is None else rate
    p = DEFAULT_PITCH if pitch is None else pitch
    try:
        r, p = float(r), float(p)
    except (TypeError, ValueError):
        raise OptionError("--rate and --pitch must be numbers") from None
    if not (RATE_RANGE[0] <= r <= RATE_RANGE[1]):
        raise OptionError(f"--rate {r:g} is out of range; give {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute "
                          f"(normal {DEFAULT_RATE})")
    if not (PITCH_RANGE[0] <= p <= PITCH_RANGE[1]):
        raise OptionError(f"--pitch {p:g} is out of range; give {PITCH_RANGE[0]}..{PITCH_RANGE[1]} "
                          f"(normal {DEFAULT_PITCH})")
    return int(round(r)), int(round(p))


def _cut_long(piece: str, max_chars: int) -> list[str]:
    """Cut one over-long sentence at commas/semicolons, then at spaces, then hard (CJK)."""
    if len(piece) <= max_chars:
        return [piece]
    out: list[str] = []
    for part in (p for p in _SOFT_BREAK.split(piece) if p.strip()):
        while len(part) > max_chars:
            cut = part.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 4 else max_chars
            out.append(part[:cut])
            part = part[cut:].lstrip()
        if out and len(out[-1]) + len(part) + 1 <= max_chars:
            out[-1] = out[-1] + " " + part
        elif part:
            out.append(part)
    return [p.strip() for p in out if p.strip()]


def split_sentences(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Sentences of ``text`` in order, each at most ``max_chars`` characters.

    Splits after . ! ? … (followed by whitespace) and after 。！？； (CJK, no space needed), and at
    blank lines; a longer sentence is cut at , ; : ， 、 then at spaces. Pieces without any letter
    or digit are dropped (nothing to say).
    """
    out: list[str] = []
    for sent in _SENT_END.split(text):
        sent = " ".join(sent.split())
        if not sent or not any(ch.isalnum() for ch in sent):
            continue
        out.extend(p for p in _cut_long(sent, max_chars) if any(ch.isalnum() for ch in p))
    return out


def concat_chunks(chunks: Iterable[SpeechChunk], *, max_seconds: float = MAX_SPEECH_SECONDS,
                  source: str = "tts") -> tuple[AudioClip, list[PhonemeEvent]]:
    """One AudioClip + all events from streamed chunks; InputError past ``max_seconds``."""
    parts: list[np.ndarray] = []
    events: list[PhonemeEvent] = []
    rate = None
    total = 0
    for ch in chunks:
        if rate is None:
            rate = ch.sample_rate
        elif ch.sample_rate != rate:
            raise InputError("the speech engine changed its sample rate mid-text; use one voice")
        total += len(ch.samples)
        if total > max_seconds * rate:
            raise InputError(f"the text makes more than {max_seconds / 60:.0f} minutes of speech; "
                             "split it into several videos")
        parts.append(np.asarray(ch.samples, np.float32))
        events.extend(ch.events)
    if rate is None or total == 0:
        raise InputError("the text produced no speech; write at least one word in the chosen language")
    return AudioClip(samples=np.concatenate(parts), sample_rate=int(rate), source=source), events


class TTSEngine(ABC):
    """A speech synthesiser. Subclasses implement :meth:`stream`; everything else is shared.

    Attributes: ``name`` (registry key), ``languages`` (subset of LANGUAGES it speaks),
    ``gives_phonemes`` (True when events carry phoneme timings; False: events are empty and the
    caller should align the audio itself).
    """

    name: str = ""
    languages: tuple[str, ...] = LANGUAGES
    gives_phonemes: bool = True

    @abstractmethod
    def stream(self, text: str, lang: str = "en", voice: str | None = None, rate: float | None = None,
               pitch: float | None = None) -> Iterator[SpeechChunk]:
        """Speech one sentence at a time; event times count from the start of the whole text.

        Raises InputError (empty text), OptionError (language, voice, rate or pitch),
        DependencyError (engine not installed).
        """

    def synthesize(self, text: str, lang: str = "en", voice: str | None = None, rate: float | None = None,
                   pitch: float | None = None) -> tuple[AudioClip, list[PhonemeEvent]]:
        """(AudioClip float32 mono, phoneme events in seconds) for the whole text."""
        return concat_chunks(self.stream(text, lang, voice, rate, pitch), source=f"{self.name}:{lang}")

    def check_language(self, lang) -> str:
        code = normalize_language(lang)
        if code not in self.languages:
            raise OptionError(f"the {self.name} speech engine does not speak {LANGUAGE_NAMES[code]}; "
                              f"use one of {', '.join(self.languages)} or another engine")
        return code


_REGISTRY: dict[str, Callable[[], TTSEngine]] = {}
_INSTANCES: dict[str, TTSEngine] = {}
DEFAULT_ENGINE = "espeak-ng"


def register_engine(name: str, factory: Callable[[], TTSEngine]) -> None:
    """Make ``get_engine(name)`` build an engine with ``factory()`` (called once, then cached)."""
    _REGISTRY[name] = factory
    _INSTANCES.pop(name, None)


def available_engines() -> list[str]:
    """Registered engine names (installed or not; :func:`get_engine` says which work)."""
    return sorted(_REGISTRY)


def get_engine(name: str | None = None) -> TTSEngine:
    """The engine registered as ``name`` (default espeak-ng); OptionError for an unknown name.

    Building it may raise DependencyError when its package is missing.
    """
    key = name or DEFAULT_ENGINE
    if key not in _REGISTRY:
        raise OptionError(f"unknown speech engine {key!r}; use one of {', '.join(available_engines())}")
    if key not in _INSTANCES:
        _INSTANCES[key] = _REGISTRY[key]()
    return _INSTANCES[key]


def synthesize(text: str, lang: str = "en", voice: str | None = None, rate: float | None = None,
               pitch: float | None = None, *, engine: str | None = None) -> tuple[AudioClip, list[PhonemeEvent]]:
    """Speak ``text`` with ``engine`` (default espeak-ng): (AudioClip, list[PhonemeEvent]).

    See the module docstring for the arguments; errors as :meth:`TTSEngine.stream`.
    """
    return get_engine(engine).synthesize(text, lang, voice, rate, pitch)
