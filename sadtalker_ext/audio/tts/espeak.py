"""espeak-ng through its C library (ctypes): speech plus sample-exact phoneme events.

Why the C library: espeak-ng's command line (and wrappers around it) give either the sound or a
phoneme string, never *when* each phoneme is spoken. The library, initialised with
``AUDIO_OUTPUT_SYNCHRONOUS`` and ``espeakINITIALIZE_PHONEME_EVENTS``, calls back with each block of
16-bit samples together with an ``espeak_EVENT`` list; every ``espeakEVENT_PHONEME`` event carries
the phoneme's mnemonic (``id.string``, espeak's ASCII phoneme names, e.g. ``'oU``, ``tS``, ``_:``)
and ``sample``, the index of its first sample counted from the start of the ``espeak_Synth`` call
(``audio_position`` is the same instant in whole milliseconds). A phoneme lasts until the next
one starts. Declarations follow ``speak_lib.h`` (API revision 12, espeak-ng 1.49-1.52).

Which build: the pip package ``espeakng-loader`` (first choice). Its wheels (Linux x86-64/arm64,
Windows, macOS; ~10 MB) bundle ``libespeak-ng`` 1.52 together with the matching
``espeak-ng-data`` (ru and cmn dictionaries included), so ``pip install`` is all any machine
needs: no root, no apt-get, same version everywhere (CI included), and it installs inside the
WebUI's venv like any other requirement. Debian's ``libespeak-ng1`` + ``espeak-ng-data`` is used
when the wheel is absent (``ctypes.util.find_library("espeak-ng")``, its compiled-in data path);
``SD_TALKING_HEAD_ESPEAK_LIB`` / ``SD_TALKING_HEAD_ESPEAK_DATA`` point at any other build.
espeak-ng is GPL-3.0: it is loaded at run time from its own package and never shipped here.

Languages: ``en`` -> voice ``en-us+klatt4``, ``ru`` -> ``ru``, ``zh`` -> ``cmn``. English uses the
Klatt-synthesiser variant because it is markedly more intelligible: pocketsphinx recognises 68 %
of the words of six test sentences spoken with it against 19 % with plain ``en-us`` (same
phonemes and timings, pauses equally silent). The ``cmn`` voice reads
Chinese characters through espeak's Mandarin dictionary (e.g. 你好 -> ``n i X 'Au``, the same
phonemes that ``cmn-latn-pinyin`` gives for "ni3 hao3"); pass ``voice="cmn-latn-pinyin"`` for
pinyin input. Any installed espeak voice of the language may be chosen, with a variant suffix
(``en-us+f3``). Each sentence is one ``espeak_Synth`` call (with ``espeakENDPAUSE``), so native
buffers never hold more than a sentence. The library is process-global: calls are serialised.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import threading
from typing import Iterator

import numpy as np

from ...errors import DependencyError, InputError, OptionError
from ..events import PhonemeEvent
from .base import TTSEngine, SpeechChunk, check_rate_pitch, check_text, split_sentences

log = logging.getLogger(__name__)

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
INIT_PHONEME_EVENTS = 0x0001
INIT_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
POS_CHARACTER = 1
CHARS_UTF8 = 1
ENDPAUSE = 0x1000
PARAM_RATE = 1
PARAM_PITCH = 3
EE_OK = 0

DEFAULT_VOICES = {"en": "en-us+klatt4", "ru": "ru", "zh": "cmn"}
# language tags (espeak's voice "languages") accepted for each of our languages
_LANG_TAGS = {"en": ("en",), "ru": ("ru",), "zh": ("cmn", "zh")}
_VOICE_RE = re.compile(r"^[A-Za-z0-9_\-/]+(\+[A-Za-z0-9_\-]+)?$")


def _base(voice: str) -> str:
    return voice.split("+", 1)[0]


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _locate() -> tuple[str, str | None, str]:
    """(library path, data path or None for the compiled-in one, description)."""
    lib = os.environ.get("SD_TALKING_HEAD_ESPEAK_LIB")
    if lib:
        return lib, os.environ.get("SD_TALKING_HEAD_ESPEAK_DATA"), "SD_TALKING_HEAD_ESPEAK_LIB"
    try:
        import espeakng_loader
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path(), "espeakng-loader"
    except (ImportError, RuntimeError):  # not installed / its data folder missing
        pass
    found = ctypes.util.find_library("espeak-ng")
    if found:
        return found, os.environ.get("SD_TALKING_HEAD_ESPEAK_DATA"), "system libespeak-ng"
    raise DependencyError("espeak-ng is not installed; pip install espeakng-loader "
                          "(or apt-get install libespeak-ng1 espeak-ng-data)")


class _Native:
    """The loaded library, initialised once per process (espeak keeps global state)."""

    def __init__(self):
        path, data, how = _locate()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise DependencyError(f"cannot load the espeak-ng library from {how} ({exc}); "
                                  "reinstall it: pip install --force-reinstall espeakng-loader") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data) if data else None,
                                     INIT_PHONEME_EVENTS | INIT_DONT_EXIT)
        if rate <= 0:
            raise DependencyError(f"espeak-ng ({how}) could not start: its data folder {data or '(default)'} "
                                  "is missing or broken; reinstall espeakng-loader")
        self.lib = lib
        self.sample_rate = int(rate)
        self.source = how
        self._sink: _Collector | None = None
        self._cb = _CALLBACK(self._on_audio)  # kept referenced for the library's lifetime
        lib.espeak_SetSynthCallback(self._cb)
        self.voices = self._list_voices()

    def _list_voices(self) -> dict[str, tuple[str, ...]]:
        """{identifier lower-case (e.g. 'gmw/en-us'): language tags}."""
        out: dict[str, tuple[str, ...]] = {}
        arr = self.lib.espeak_ListVoices(None)
        i = 0
        while arr and arr[i]:
            v = arr[i].contents
            langs = []
            p = v.languages
            while p:
                prio = ctypes.string_at(p, 1)
                if prio == b"\0":
                    break
                s = ctypes.string_at(p + 1)
                langs.append(s.decode("ascii", "replace").lower())
                p += 2 + len(s)
            ident = (v.identifier or b"").decode("ascii", "replace").lower()
            if ident:
                out[ident] = tuple(langs)
            i += 1
        return out

    def _on_audio(self, wav, n, events) -> int:
        sink = self._sink
        if sink is None:
            return 1
        try:
            if wav and n > 0:
                sink.parts.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events and events[i].type != EVENT_LIST_TERMINATED:
                ev = events[i]
                if ev.type == EVENT_PHONEME:
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    sink.phonemes.append((int(ev.sample), name))
                elif ev.type == EVENT_WORD:
                    sink.words += 1
                if ev.type in (EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME):
                    sink.last_ms = max(sink.last_ms, int(ev.audio_position))
                i += 1
        except Exception as exc:  # noqa: BLE001 - an exception must not cross the C boundary; re-raised later
            sink.error = exc
            return 1
        return 0


class _Collector:
    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.phonemes: list[tuple[int, str]] = []
        self.last_ms = 0
        self.words = 0
        self.error: Exception | None = None


_LOCK = threading.RLock()
_NATIVE: _Native | None = None


def _native() -> _Native:
    global _NATIVE
    with _LOCK:
        if _NATIVE is None:
            _NATIVE = _Native()
        return _NATIVE


def is_available() -> bool:
    """True when the espeak-ng library and its data load."""
    try:
        _native()
        return True
    except DependencyError:
        return False


class EspeakEngine(TTSEngine):
    """espeak-ng (see module docstring). Phoneme names are espeak mnemonics, pauses start with ``_``."""

    name = "espeak-ng"
    gives_phonemes = True

    @property
    def sample_rate(self) -> int:
        return _native().sample_rate

    def voices(self, lang: str | None = None) -> list[str]:
        """Installed voice identifiers (e.g. ``gmw/en-us``), only those of ``lang`` when given."""
        voices = _native().voices
        if lang is None:
            return sorted(voices)
        tags = _LANG_TAGS[self.check_language(lang)]
        return sorted(v for v, langs in voices.items() if any(t.split("-")[0] in tags for t in langs))

    def resolve_voice(self, lang: str, voice: str | None) -> str:
        """The espeak voice name for ``lang``; OptionError when ``voice`` is unknown or of another language."""
        code = self.check_language(lang)
        if voice is None or str(voice).strip() == "":
            return DEFAULT_VOICES[code]
        v = str(voice).strip()
        if not _VOICE_RE.match(v):
            raise OptionError(f"--voice {v!r} is not an espeak-ng voice name; use e.g. "
                              f"{_base(DEFAULT_VOICES[code])} or {_base(DEFAULT_VOICES[code])}+f3")
        base, _, variant = v.partition("+")
        base = base.lower()
        tags = _LANG_TAGS[code]
        voices = _native().voices
        # by file name first (en-us, gmw/en-us), then by a language tag the voice lists (en-gb -> en)
        hits = [i for i in voices if base in (i, i.rsplit("/", 1)[-1])] or [i for i in voices if base in voices[i]]
        for ident in hits:
            langs = voices[ident]
            if any(t.split("-")[0] in tags for t in langs):
                return ident.rsplit("/", 1)[-1] + (f"+{variant}" if variant else "")
        if hits:
            langs = voices[hits[0]]
            raise OptionError(f"--voice {v} speaks {langs[0] if langs else 'another language'}, "
                              f"not {code}; pick a voice of that language such as {_base(DEFAULT_VOICES[code])}")
        raise OptionError(f"espeak-ng has no voice {v!r}; {code} voices: "
                          + ", ".join(x.rsplit('/', 1)[-1] for x in self.voices(code)))

    def stream(self, text: str, lang: str = "en", voice: str | None = None, rate: float | None = None,
               pitch: float | None = None) -> Iterator[SpeechChunk]:
        text = check_text(text)
        code = self.check_language(lang)
        rate_i, pitch_i = check_rate_pitch(rate, pitch)
        voice_name = self.resolve_voice(code, voice)
        sentences = split_sentences(text)
        if not sentences:
            raise InputError("the text to speak is empty; write at least one word")
        offset = 0  # samples before the current sentence
        for sent in sentences:
            chunk = self._speak(sent, voice_name, rate_i, pitch_i, offset)
            offset += len(chunk.samples)
            yield chunk

    def _speak(self, sentence: str, voice: str, rate: int, pitch: int, offset: int) -> SpeechChunk:
        nat = _native()
        with _LOCK:
            lib = nat.lib
            if lib.espeak_SetVoiceByName(voice.encode("ascii")) != EE_OK:
                raise OptionError(f"espeak-ng could not load voice {voice!r}; pick another --voice")
            lib.espeak_SetParameter(PARAM_RATE, rate, 0)
            lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
            sink = _Collector()
            nat._sink = sink
            try:
                data = sentence.encode("utf-8") + b"\0"
                err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None)
            finally:
                nat._sink = None
        if sink.error is not None:
            raise sink.error
        if err != EE_OK:
            raise InputError(f"espeak-ng failed on the sentence {sentence[:40]!r} (error {err}); "
                             "simplify or rephrase it")
        samples = (np.concatenate(sink.parts) if sink.parts else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
        sr = nat.sample_rate
        return SpeechChunk(samples=samples, sample_rate=sr, offset=offset / sr, text=sentence,
                           events=_phoneme_spans(sink.phonemes, len(samples), offset, sr),
                           engine_seconds=sink.last_ms / 1000.0, words=sink.words)


def _phoneme_spans(marks: list[tuple[int, str]], n: int, offset: int, sr: int) -> list[PhonemeEvent]:
    """Phoneme start marks (sample, name) -> spans in seconds, end = next start (last: end of audio).

    Zero-length phonemes (espeak reports e.g. a syllable break and a pause at one sample) are dropped.
    """
    marks = sorted(((min(max(s, 0), n), name) for s, name in marks), key=lambda m: m[0])
    out = []
    for i, (s, name) in enumerate(marks):
        e = marks[i + 1][0] if i + 1 < len(marks) else n
        if e > s:
            out.append(PhonemeEvent(phoneme=name, start=(offset + s) / sr, end=(offset + e) / sr, alphabet="espeak"))
    return out
