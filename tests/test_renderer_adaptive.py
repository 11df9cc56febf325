"""The face renderer picks its path per run (render/facevid2vid/adaptive.py): issue 16.

Stand-in paths with a simulated clock: each returns frames whose value is the frame's index (read from the
driving keypoints), so order and completeness are checked against the indices themselves, and each costs a
known number of simulated seconds per frame, so the cost of the choice is checked against the closed-form
cost of the better path alone."""
import pytest
import torch

from sadtalker_ext.render.facevid2vid.adaptive import AdaptiveRenderer, PlainRenderer, make_renderer


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class StandIn:
    """Costs ``cost[0]`` simulated seconds per frame; frame i renders as a 1x1 image of value i."""

    def __init__(self, clock, cost):
        self.clock, self.cost, self.sources, self.frames = clock, cost, [], 0

    def prepare_source(self, image, kp):
        self.sources.append((image, kp))

    def render(self, kp):
        b = kp.shape[0]
        self.clock.t += self.cost[0] * b
        self.frames += b
        return kp[:, 0, 0].reshape(b, 1, 1, 1).expand(b, 3, 1, 1).clone()


def _kp(start, n):
    kp = torch.zeros(n, 15, 3)
    kp[:, 0, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return kp


def _setup(fast_cost, plain_cost, **kw):
    clock = Clock()
    fast, plain = StandIn(clock, [fast_cost]), StandIn(clock, [plain_cost])
    return clock, fast, plain, AdaptiveRenderer({"fast": fast, "plain": plain}, clock=clock, **kw)


def _run(r, frames, batch):
    got = []
    for b0 in range(0, frames, batch):
        out = r.render(_kp(b0, min(batch, frames - b0)))
        assert out.shape == (min(batch, frames - b0), 3, 1, 1)
        got += out[:, 0, 0, 0].tolist()
    return got


@pytest.mark.parametrize("fast_cost,plain_cost", [(1.0, 2.0), (2.0, 1.0)])
def test_frames_complete_in_order_and_the_faster_path_takes_them(fast_cost, plain_cost):
    clock, fast, plain, r = _setup(fast_cost, plain_cost)
    image, kp_s = torch.zeros(1, 3, 4, 4), torch.zeros(1, 15, 3)
    r.prepare_source(image, kp_s)
    assert len(fast.sources) == len(plain.sources) == 1  # both paths know the source
    got = _run(r, 250, 4)
    assert got == list(range(250))
    better = min(fast_cost, plain_cost)
    assert r.winner == ("fast" if fast_cost < plain_cost else "plain")
    # the better path alone: 250 * better; the choice costs the warm-up / probe frames on the slower path
    assert clock.t <= 1.10 * 250 * better, clock.t
    assert min(fast.frames, plain.frames) <= 14  # 2 warm-up + measurement, then probes after 8, 16, 32, 64, 128 more frames


def test_a_change_of_load_moves_the_batches_to_the_other_path():
    clock, fast, plain, r = _setup(1.0, 2.0)
    r.prepare_source(torch.zeros(1, 3, 4, 4), torch.zeros(1, 15, 3))
    _run(r, 100, 4)
    assert r.winner == "fast"
    fast.cost[0] = 4.0   # the machine got busy: the fast path is now 2x slower than the plain forward
    before_f, before_p = fast.frames, plain.frames
    t0 = clock.t
    got = _run(r, 400, 4)
    assert got == [float(i % 400) for i in range(400)]
    assert r.winner == "plain"
    # noticed within one probe interval (at most 200 frames after the change), then the plain path keeps them
    assert fast.frames - before_f <= 200 + 10
    assert clock.t - t0 <= 400 * 2.0 + (200 + 10) * 4.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        AdaptiveRenderer({"fast": object()})
    with pytest.raises(ValueError):
        AdaptiveRenderer({"fast": object(), "plain": object()}, probe_interval=0)
    with pytest.raises(ValueError):
        make_renderer(object(), torch.device("cpu"), path="quick")


def test_make_renderer_on_the_cpu_measures_both_paths_of_the_real_generator(synthetic_checkpoints):
    """With the synthetic official weights: the engine's CPU renderer is adaptive over the fast renderer and the
    plain forward of the same generator, and its frames are the plain forward's within the golden tolerance
    (each frame by whichever path rendered it)."""
    from conftest import golden_tol
    from sadtalker_ext.render.facevid2vid.checkpoint import load_generator
    from sadtalker_ext.render.facevid2vid.fast import FaceRenderer

    ckpt = synthetic_checkpoints / "SadTalker_V0.0.2_256.safetensors"
    r = make_renderer(load_generator(ckpt), torch.device("cpu"), torch.float32)
    assert isinstance(r, AdaptiveRenderer)
    assert isinstance(r.paths["fast"], FaceRenderer) and isinstance(r.paths["plain"], PlainRenderer)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 256, 256, generator=g)
    kp_s = torch.rand(1, 15, 3, generator=g) * 1.2 - 0.6
    kp_d = kp_s + 0.05 * torch.randn(4, 15, 3, generator=g)
    r.prepare_source(img, kp_s)
    with torch.no_grad():
        got = r.render(kp_d)
    assert r.frames == {"fast": 2, "plain": 2}
    ref = PlainRenderer(load_generator(ckpt), torch.device("cpu"))
    ref.prepare_source(img, kp_s)
    want = ref.render(kp_d)
    err = (got - want).abs().amax(dim=(1, 2, 3))
    assert float(err[2:].max()) <= 1e-5            # the plain path's frames: the same forward (one frame at a time vs 4)
    assert float(err[:2].max()) <= golden_tol(want.numpy()), err  # the fast path's frames
    r.close()


def test_pinned_path_takes_every_frame_without_probes():
    clock, fast, plain, r = _setup(1.0, 2.0)
    r.pinned = "plain"
    assert _run(r, 60, 4) == list(range(60))
    assert (fast.frames, plain.frames) == (0, 60)
    r.pinned = "slow"
    with pytest.raises(ValueError):
        r.render(_kp(0, 1))
