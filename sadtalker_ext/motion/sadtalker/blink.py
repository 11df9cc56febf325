"""Random eye-blink schedule for SadTalker's ExpNet (numpy only).

Source followed: OpenTalker/SadTalker ``src/generate_batch.py`` ``generate_blink_seq_randomly``.
"""
from __future__ import annotations

import random
from typing import Optional

import numpy as np

BLINK_SHAPE = (0.5, 0.9, 1.0, 0.9, 0.5)


def random_blink_ratio(num_frames: int, rng: Optional[random.Random] = None) -> np.ndarray:
    """Blink ratio per frame ``[num_frames, 1]`` float64 in [0, 1] (1 = eyes closed).

    Sequences of 20 frames or fewer get no blink. Otherwise, repeatedly: wait a random gap drawn
    uniformly from ``range(min(10, T), min(T // 2, 70))`` frames, then blink over 5 frames with
    the profile 0.5, 0.9, 1.0, 0.9, 0.5, while the blink still ends before the last frame.
    ``rng`` is a ``random.Random``; ``random.Random(0)`` reproduces the official code run after
    ``random.seed(0)``. Default: a fresh unseeded ``random.Random()``.
    """
    rng = rng if rng is not None else random.Random()
    ratio = np.zeros((num_frames, 1))
    if num_frames <= 20:
        return ratio
    frame = 0
    while 0 <= frame < num_frames:
        gap = rng.choice(range(min(10, num_frames), min(int(num_frames / 2), 70)))
        if frame + gap + len(BLINK_SHAPE) <= num_frames - 1:
            ratio[frame + gap:frame + gap + len(BLINK_SHAPE), 0] = BLINK_SHAPE
            frame += gap + len(BLINK_SHAPE)
        else:
            break
    return ratio
