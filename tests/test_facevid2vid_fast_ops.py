"""The fast renderer's rewritten operators against the plain torch operators they replace:
FFT-over-(H, W) convolutions, Winograd 3x3x3 convolutions, translated-grid sampling and the
instance norm (see sadtalker_ext/render/facevid2vid/{spectral,winograd,fast}.py)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sadtalker_ext.render.facevid2vid.blocks import coordinate_grid_3d  # noqa: E402
from sadtalker_ext.render.facevid2vid.fast import _inorm_, _sample_translated  # noqa: E402
from sadtalker_ext.render.facevid2vid.spectral import SpectralConvHW  # noqa: E402
from sadtalker_ext.render.facevid2vid.winograd import WinogradConv3d  # noqa: E402


def _rel(a, ref):
    return float((a.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("shape,fft_size", [
    ((1, 6, 5, 16, 16), 24),      # one window per plane
    ((2, 5, 4, 20, 27), 12),      # several overlap-save windows, ragged edges, batch of two
])
def test_spectral_conv_equals_conv3d_and_conv2d(shape, fft_size):
    g = torch.Generator().manual_seed(0)
    b, ci, d, h, w = shape
    x = torch.relu(torch.randn(*shape, generator=g))
    w3 = torch.randn(3, ci, 7, 7, 7, generator=g) * 0.05
    b3 = torch.randn(3, generator=g)
    w2 = torch.randn(2, ci * d, 7, 7, generator=g) * 0.05
    b2 = torch.randn(2, generator=g)
    y3, y2 = SpectralConvHW(w3, b3, w2, b2, fft_size=fft_size)(x)
    ref3 = F.conv3d(x.double(), w3.double(), b3.double(), padding=3)
    ref2 = F.conv2d(x.reshape(b, ci * d, h, w).double(), w2.double(), b2.double(), padding=3)
    assert y3.shape == ref3.shape and y2.shape == ref2.shape
    assert _rel(y3, ref3) < 1e-5 and _rel(y2, ref2) < 1e-5
    # a wrong kernel (no flip) would not match: the check above can fail
    bad, _ = SpectralConvHW(w3.flip(-1), b3, fft_size=fft_size)(x)
    assert _rel(bad, ref3) > 1e-2


def test_spectral_conv_rejects_bad_shapes():
    with pytest.raises(ValueError):
        SpectralConvHW(torch.zeros(2, 3, 7, 6, 6), None)
    s = SpectralConvHW(torch.zeros(2, 3, 3, 3, 3), None, torch.zeros(1, 3 * 4, 3, 3), None,
                       fft_size=8)
    with pytest.raises(ValueError):
        s(torch.zeros(1, 3, 5, 8, 8))   # depth 5, built for 4
    with pytest.raises(ValueError):
        s(torch.zeros(1, 2, 4, 8, 8))   # 2 channels, built for 3


@pytest.mark.parametrize("shape", [(2, 5, 4, 9, 6), (1, 16, 6, 8, 8)])
def test_winograd_conv3d_equals_conv3d(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(7, shape[1], 3, 3, 3, generator=g) * 0.1
    b = torch.randn(7, generator=g)
    y = WinogradConv3d(w, b)(x)
    ref = F.conv3d(x.double(), w.double(), b.double(), padding=1)
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert _rel(y, ref) < 2e-5


def test_sample_translated_equals_grid_sample():
    g = torch.Generator().manual_seed(2)
    vol = torch.randn(1, 3, 5, 7, 9, generator=g)
    grid = coordinate_grid_3d(5, 7, 9)
    axes = (grid[0, 0, :, 0], grid[0, :, 0, 1], grid[:, 0, 0, 2])
    kp_s = torch.rand(2, 4, 3, generator=g) * 1.2 - 0.6
    # large motions too: samples fall outside the volume (zero padding)
    kp_d = kp_s + torch.randn(2, 4, 3, generator=g) * 0.6
    ours = _sample_translated(vol, axes, kp_d, kp_s)
    shifted = (grid[None, None] - kp_d.view(2, 4, 1, 1, 1, 3)) + kp_s.view(2, 4, 1, 1, 1, 3)
    ref = F.grid_sample(vol.expand(8, -1, -1, -1, -1), shifted.view(8, 5, 7, 9, 3),
                        mode="bilinear", padding_mode="zeros", align_corners=False)
    assert ours.shape == (2, 4, 3, 5, 7, 9)
    assert torch.allclose(ours.reshape(8, 3, 5, 7, 9), ref, atol=1e-5)
    assert float(ref.abs().sum()) > 0 and (ref == 0).any()   # both regimes exercised


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inorm_equals_instance_norm(memory_format):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 8, 12, 10, generator=g) * 3 + 1).contiguous(memory_format=memory_format)
    ref = F.instance_norm(x.double(), eps=1e-5)
    assert _rel(_inorm_(x.clone()), ref) < 1e-6
