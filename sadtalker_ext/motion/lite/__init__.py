"""Weights-free motion: viseme track from phonemes or acoustics, head pose, blinks (no torch)."""
from .track import MotionTrack, make_motion  # noqa: F401
from .visemes import PhonemeEvent, VisemeTrack, visemes_from_acoustics, visemes_from_phonemes  # noqa: F401
