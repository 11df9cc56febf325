"""Command-line glue for ``generate --text``: the options and turning them into speech.

Kept here so the shared CLI module only adds two calls: :func:`add_arguments` on the ``generate``
parser and :func:`speech_from_args` when ``--text`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses

from .base import DEFAULT_ENGINE, DEFAULT_PITCH, DEFAULT_RATE, LANGUAGES, PITCH_RANGE, RATE_RANGE


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --lang/--voice/--rate/--pitch/--tts-engine (``--text`` itself sits beside ``--audio``)."""
    g = parser.add_argument_group("text to speech (with --text)")
    g.add_argument("--lang", default="en",
                   help=f"language of the speech: for --text one of {', '.join(LANGUAGES)}; for --audio any code, "
                        "non-English gets acoustic mouth shapes (default: %(default)s)")
    g.add_argument("--voice", default=None,
                   help="espeak-ng voice (e.g. en-gb, en-us+f3, cmn-latn-pinyin for pinyin input) "
                        "or a Piper .onnx file with --tts-engine piper")
    g.add_argument("--rate", type=float, default=DEFAULT_RATE,
                   help=f"speaking rate, words per minute {RATE_RANGE[0]}..{RATE_RANGE[1]} (default: %(default)s)")
    g.add_argument("--pitch", type=float, default=DEFAULT_PITCH,
                   help=f"voice pitch {PITCH_RANGE[0]}..{PITCH_RANGE[1]} (default: %(default)s)")
    g.add_argument("--tts-engine", default=DEFAULT_ENGINE,
                   help="speech engine: espeak-ng or piper (default: %(default)s)")
    return parser


def speech_from_args(args, options):
    """(AudioClip, phoneme events or None, options) for ``args.text``.

    With an engine that gives no phoneme timings (Piper) the events are None and, for English,
    the text becomes the transcript that pocketsphinx aligns. Raises InputError/OptionError/
    DependencyError like :func:`sadtalker_ext.audio.tts.synthesize`.
    """
    from . import get_engine, normalize_language
    engine = get_engine(getattr(args, "tts_engine", None))
    lang = normalize_language(getattr(args, "lang", "en"))
    clip, events = engine.synthesize(args.text, lang, getattr(args, "voice", None),
                                     getattr(args, "rate", None), getattr(args, "pitch", None))
    if not events:
        events = None
        if lang == "en" and not options.transcript:
            options = dataclasses.replace(options, transcript=args.text).validate()
    return clip, events, options
