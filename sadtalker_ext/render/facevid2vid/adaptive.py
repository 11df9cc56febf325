"""The renderer that picks its path per machine and per run: the fast path or the plain forward.

:class:`~.fast.FaceRenderer` (source encoded once, folded / Winograd / FFT weights) is about 2x
faster than the plain per-frame generator forward on a quiet CPU, but its 2.3 GB of prepared
weights make it memory-bandwidth bound, and on a machine shared with other busy processes it was
measured up to 2x *slower* than the plain forward (issue 16: 26.8-38.7 vs 17.1-17.8 s/frame at
256 px on 2 cores). Which one wins depends on the machine and on what else runs, and that changes
during a run, so :class:`AdaptiveRenderer` measures both on the frames it renders:

1. The first frames of a run go one at a time to each path in turn: the first frame of a path is
   its warm-up (oneDNN kernel choice, lazily made Winograd transforms) and is not counted; the
   second gives its wall time per frame.
2. After that every batch goes to the path with the lower per-frame estimate (an exponential moving
   average of wall seconds per frame, ``smoothing``), except that the other path gets one frame
   again after ``probe_interval`` frames, so a change of load is noticed. While the same path
   keeps winning, the interval doubles up to ``max_probe_interval``; a change of winner resets it.

So a run costs at most a few frames more than the better path alone (two warm-up and two
measurement frames, then one frame per interval), and is never much slower than the plain forward,
quiet or loaded. Both paths render the same frame within ~2e-5 (see ``tests/test_e2e_goldens.py``:
both are held to the official golden), so switching between them inside a video is invisible.

Only for the CPU at float32: on other devices / dtypes :func:`make_renderer` returns the
:class:`~.fast.FaceRenderer` alone (GPUs need the batched path).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

log = logging.getLogger(__name__)

PATHS = ("fast", "plain")


class PlainRenderer:
    """The straightforward generator forward (as the official ``make_animation`` calls it) with the
    :class:`~.fast.FaceRenderer` interface: ``prepare_source`` keeps the source, ``render`` runs
    ``generator(source, kp_driving, kp_source)`` for the batch.

    Args:
        generator: a loaded :class:`~.generator.OcclusionAwareSPADEGenerator` (eval mode).
        device: where to run. dtype: kept for the interface (the forward runs in float32).
    """

    def __init__(self, generator, device: torch.device, dtype: torch.dtype = torch.float32):
        self.generator = generator.to(device)
        self.device = device
        self.dtype = dtype
        self._src: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def prepare_source(self, image: torch.Tensor, kp_source: torch.Tensor) -> None:
        """image ``[1, 3, H, W]`` float RGB in [0, 1]; kp_source ``[1, K, 3]``."""
        self._src = (image.to(self.device), kp_source.to(self.device))

    def render(self, kp_driving: torch.Tensor) -> torch.Tensor:
        """kp_driving ``[B, K, 3]`` -> ``[B, 3, H, W]`` float32 RGB in [0, 1] on the CPU."""
        img, kps = self._src
        b = kp_driving.shape[0]
        with torch.inference_mode():
            out = self.generator(img.expand(b, -1, -1, -1), kp_driving.to(self.device),
                                 kps.expand(b, -1, -1))
        return out["prediction"].float().cpu()

    def close(self) -> None:
        self._src = None


class AdaptiveRenderer:
    """Renders each batch on whichever of two renderers is faster now (see the module docstring).

    Args:
        paths: ``{"fast": renderer, "plain": renderer}`` (any two objects with ``prepare_source`` and
            ``render``; :func:`make_renderer` builds them from a generator).
        probe_interval: frames between two probes of the losing path (default 8, a third of a second of
            video at 25 fps); doubles while the winner stays, up to ``max_probe_interval`` (200), so a
            mistaken first estimate costs little and a 10 s run probes about 5 times.
        smoothing: weight of a new measurement in the moving average (0..1, default 0.5).
        clock: the wall clock (``time.perf_counter``; tests pass their own).

    Attributes:
        pinned: None (default: adaptive) or ``"fast"`` / ``"plain"``: every frame on that path, no
            probes (bit-for-bit repeatable runs: the two paths differ by ~2e-5 per pixel, so an
            adaptive run repeated may differ by 1/255 in a few pixels of its uint8 frames).
        estimates: ``{path: seconds per frame or None}``. frames: ``{path: frames rendered}``.
        choices: the path of every ``render`` call's batches, in order (``[(path, frames), ...]``,
            the last 1000).
    """

    def __init__(self, paths: Dict[str, object], *, probe_interval: int = 8,
                 max_probe_interval: int = 200, smoothing: float = 0.5,
                 clock: Callable[[], float] = time.perf_counter):
        if set(paths) != set(PATHS):
            raise ValueError(f"AdaptiveRenderer needs the paths {PATHS}; got {sorted(paths)}")
        if probe_interval < 1 or max_probe_interval < probe_interval or not 0 < smoothing <= 1:
            raise ValueError("probe_interval >= 1, max_probe_interval >= probe_interval and "
                             "0 < smoothing <= 1 are required")
        self.paths = dict(paths)
        self.base_interval = int(probe_interval)
        self.max_interval = int(max_probe_interval)
        self.smoothing = float(smoothing)
        self.clock = clock
        self.estimates: Dict[str, Optional[float]] = {p: None for p in PATHS}
        self.frames: Dict[str, int] = {p: 0 for p in PATHS}
        self.choices: List[Tuple[str, int]] = []
        self._interval = self.base_interval
        self._since_probe = 0
        self._winner: Optional[str] = None
        self.pinned: Optional[str] = None

    # the FaceRenderer interface ------------------------------------------------------------------
    def prepare_source(self, source_image: torch.Tensor, kp_source: torch.Tensor) -> None:
        """Encode the source on both paths (see :meth:`.fast.FaceRenderer.prepare_source`)."""
        for r in self.paths.values():
            r.prepare_source(source_image, kp_source)

    def render(self, kp_driving: torch.Tensor) -> torch.Tensor:
        """``[B, K, 3]`` driving keypoints -> ``[B, 3, H, W]`` float32 RGB in [0, 1] on the CPU,
        frames in order, each rendered whole by one of the two paths."""
        outs = []
        i, n = 0, kp_driving.shape[0]
        while i < n:
            path, take = self._next(n - i)
            t0 = self.clock()
            out = self.paths[path].render(kp_driving[i:i + take])
            self._record(path, take, self.clock() - t0)
            outs.append(out)
            i += take
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)

    def close(self) -> None:
        for r in self.paths.values():
            close = getattr(r, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "AdaptiveRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def winner(self) -> Optional[str]:
        """The path that takes the batches now (None until both are measured)."""
        return self._winner

    # the choice ----------------------------------------------------------------------------------
    def _next(self, remaining: int) -> Tuple[str, int]:
        if self.pinned is not None:
            if self.pinned not in PATHS:
                raise ValueError(f"pinned must be None, 'fast' or 'plain'; got {self.pinned!r}")
            return self.pinned, remaining
        for p in PATHS:  # warm-up and first measurement: one frame each, fast first
            if self.frames[p] < 2:
                return p, 1
        winner = min(PATHS, key=lambda p: self.estimates[p])
        if winner != self._winner:
            if self._winner is not None:
                log.info("face renderer: the %s path is faster now (%.2f vs %.2f s/frame)", winner,
                         self.estimates[winner], self.estimates[_other(winner)])
                self._interval = self.base_interval
            self._winner = winner
            self._since_probe = 0
        if self._since_probe >= self._interval:
            self._since_probe = 0
            self._interval = min(self.max_interval, 2 * self._interval)
            return _other(winner), 1
        return winner, min(remaining, max(1, self._interval - self._since_probe))

    def _record(self, path: str, frames: int, seconds: float) -> None:
        self.frames[path] += frames
        self.choices.append((path, frames))
        del self.choices[:-1000]
        if path == self._winner:
            self._since_probe += frames
        if self.frames[path] <= 1:  # the warm-up frame is not counted
            return
        per = seconds / frames
        old = self.estimates[path]
        self.estimates[path] = per if old is None else old + self.smoothing * (per - old)


def _other(path: str) -> str:
    return PATHS[1 - PATHS.index(path)]


def make_renderer(generator, device: torch.device, dtype: torch.dtype = torch.float32,
                  path: str = "auto"):
    """The renderer for a run: ``"auto"`` (default) an :class:`AdaptiveRenderer` over
    :class:`~.fast.FaceRenderer` and :class:`PlainRenderer` on the CPU at float32, else the
    :class:`~.fast.FaceRenderer`; ``"fast"`` / ``"plain"`` force one path.

    The plain path keeps the generator's original weights (about 0.25 GB for the 256 model)
    beside the fast path's prepared copies.

    Raises:
        ValueError: an unknown ``path``. OptionError: as :class:`~.fast.FaceRenderer`.
    """
    from .fast import FaceRenderer

    if path not in ("auto",) + PATHS:
        raise ValueError(f"renderer path must be auto, fast or plain; got {path!r}")
    device = torch.device(device)
    if path == "plain":
        return PlainRenderer(generator, device, dtype)
    if path == "fast" or device.type != "cpu" or dtype != torch.float32:
        return FaceRenderer(generator, device=device, dtype=dtype)
    fast = FaceRenderer(generator, device=device, dtype=dtype)
    return AdaptiveRenderer({"fast": fast, "plain": PlainRenderer(generator, device, dtype)})
