"""Reading videos back: stream facts and decoded frames (PyAV). Used by tests, benches and re-talking."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """Facts of a media file. Durations in seconds; fps in frames/s; sample_rate in Hz."""

    video_codec: str | None
    pix_fmt: str | None
    width: int
    height: int
    fps: float
    num_frames: int
    video_duration: float
    audio_codec: str | None
    sample_rate: int | None
    audio_duration: float | None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Stream facts of ``path``; frames are counted by demuxing (exact)."""
    import av

    with av.open(str(path)) as c:
        v = next((s for s in c.streams if s.type == "video"), None)
        a = next((s for s in c.streams if s.type == "audio"), None)
        vcodec = v.codec_context.name if v else None
        pix = v.codec_context.pix_fmt if v else None
        w, h = (v.codec_context.width, v.codec_context.height) if v else (0, 0)
        fps = float(v.average_rate) if v and v.average_rate else 0.0
        adur = float(a.duration * a.time_base) if a is not None and a.duration else None
        acodec = a.codec_context.name if a else None
        rate = a.codec_context.sample_rate if a else None
        n = 0
        if v is not None:
            for pkt in c.demux(v):
                if pkt.size:
                    n += 1
    return VideoInfo(video_codec=vcodec, pix_fmt=pix, width=w, height=h, fps=fps, num_frames=n,
                     video_duration=n / fps if fps else 0.0, audio_codec=acodec, sample_rate=rate,
                     audio_duration=adur)


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decoded video frames, uint8 RGB [H, W, 3], one at a time."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
