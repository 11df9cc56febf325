"""Large-kernel convolutions of the dense-motion network by FFT over (H, W), for CPU inference.

The dense-motion head ends with a 7x7x7 ``Conv3d(112 -> 16)`` (the motion mask) and a 7x7
``Conv2d(112*16 -> 1)`` (the occlusion map) over the same hourglass output. Computed directly they
cost about 40 G multiply-adds per 256-px frame, 10 % of a frame on the CPU. In the frequency domain
of the (H, W) plane each output plane is a sum of element-wise products, so the 7x7 spatial taps cost
nothing; the depth taps (7) stay a direct sum. That is about 20x fewer multiply-adds, and the two
convs share one forward FFT of their input.

How (per batch item and per output tile):

* the input, zero-padded by ``k // 2`` in H and W, is cut into windows of ``n x n`` (``n`` =
  ``fft_size``, 72 by default) that overlap by ``k - 1``; each window gives ``n - k + 1`` rows and
  columns of output (overlap-save), so 64x64 planes (256-px model) are one window and 128x128 planes
  (512 px) four;
* ``X = rfft2(window)`` for every (channel, depth) plane; the kernels' spectra ``G`` are made once
  (``g[(-a) mod n, (-b) mod n] = w[a, b]``, so that the circular convolution is the
  cross-correlation that ``torch.nn.Conv*d`` computes, with no wrap-around in the kept outputs);
* per frequency bin the 3D conv is ``Y[co, d] = sum_kd G_kd[co, ci] X[ci, d + kd - kd//2]``: seven
  batched complex matrix products over the bins; the 2D conv over ``Ci*D`` channels is one batched
  dot product per bin; then ``irfft2`` and the bias.

Accuracy: float32 FFTs with float64-made kernel spectra; about 4e-6 absolute on mask logits of
magnitude ~14 (a few 1e-7 relative), smaller than the Winograd convs' error. Memory: the kernel
spectra take ``Cout * Cin * kd * n * (n // 2 + 1) * 8`` bytes (255 MB for the mask conv of the
released model at n = 72, 38 MB for the occlusion conv), made once per renderer.

Measured (2-core AMD EPYC, 256 px): mask + occlusion convs 180 ms direct (oneDNN) -> about 65 ms.

Source followed: the convolution theorem (overlap-save block convolution); the layer shapes are
those of OpenTalker/SadTalker ``src/facerender/modules/dense_motion.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def _kernel_spectra(weight: torch.Tensor, n: int) -> torch.Tensor:
    """``[..., k, k]`` spatial kernels -> ``[..., n, n // 2 + 1]`` complex64 spectra of the flipped,
    wrapped kernels (cross-correlation as a circular convolution). Made in float64."""
    k = weight.shape[-1]
    g = torch.zeros(*weight.shape[:-2], n, n, dtype=torch.float64, device=weight.device)
    idx = [(-a) % n for a in range(k)]
    w64 = weight.detach().double()
    for a in range(k):
        for b in range(k):
            g[..., idx[a], idx[b]] = w64[..., a, b]
    return torch.fft.rfft2(g).to(torch.complex64)


class SpectralConvHW:
    """``conv3d(x, weight3d, bias3d, padding=(kd//2, k//2, k//2))`` and, optionally,
    ``conv2d(x.view(B, Cin*D, H, W), weight2d, bias2d, padding=k//2)`` by FFT over (H, W).

    Args:
        weight3d: ``[Cout, Cin, kd, k, k]`` float32, odd ``kd`` and ``k``; bias3d ``[Cout]`` or None.
        weight2d: ``[Cout2, Cin*D, k, k]`` (same ``k``) for the 2D conv over the depth-flattened
            input (channel ``c*D + d``, as ``Tensor.view`` gives), or None; bias2d ``[Cout2]``.
        fft_size: FFT side ``n`` (> ``k - 1``); each window yields ``n - k + 1`` output rows and
            columns.

    Call with ``x [B, Cin, D, H, W]`` (float32, CPU; D must be the depth of ``weight2d``): returns
    ``(y3 [B, Cout, D, H, W], y2 [B, Cout2, H, W] or None)``, both contiguous float32.

    Raises:
        ValueError: kernel shapes that this module does not handle, or an input whose channels or
            depth do not match the weights.
    """

    def __init__(self, weight3d: torch.Tensor, bias3d: Optional[torch.Tensor],
                 weight2d: Optional[torch.Tensor] = None, bias2d: Optional[torch.Tensor] = None,
                 fft_size: int = 72):
        if weight3d.dim() != 5 or weight3d.shape[3] != weight3d.shape[4] \
                or weight3d.shape[3] % 2 == 0 or weight3d.shape[2] % 2 == 0:
            raise ValueError("SpectralConvHW needs a [Cout, Cin, kd, k, k] weight with odd kd, k")
        co, ci, kd, k, _ = weight3d.shape
        if fft_size <= k - 1:
            raise ValueError(f"fft_size must exceed k - 1 = {k - 1}")
        self.cout, self.cin, self.kd, self.k = co, ci, kd, k
        self.n = fft_size
        self.tile = fft_size - (k - 1)
        self.nb = fft_size * (fft_size // 2 + 1)
        # [kd, bins, Cout, Cin]; one depth tap at a time to bound the float64 temporaries
        self.w3 = torch.empty(kd, self.nb, co, ci, dtype=torch.complex64, device=weight3d.device)
        for t in range(kd):
            self.w3[t] = _kernel_spectra(weight3d[:, :, t], self.n).permute(2, 3, 0, 1) \
                .reshape(self.nb, co, ci)
        self.b3 = None if bias3d is None else bias3d.detach().float().clone()
        self.w2 = self.b2 = None
        self.depth: Optional[int] = None
        if weight2d is not None:
            if weight2d.dim() != 4 or weight2d.shape[2:] != (k, k) or weight2d.shape[1] % ci:
                raise ValueError(f"weight2d must be [Cout2, Cin*D, {k}, {k}] with Cin = {ci}")
            co2, depth = weight2d.shape[0], weight2d.shape[1] // ci
            self.depth = depth
            pd = kd // 2
            # [bins, Cout2, Cin, D + 2*pd] with zeros at the depth padding, so that it is a plain
            # dot product with the padded input spectra of the 3D conv
            w2 = torch.zeros(self.nb, co2, ci, depth + 2 * pd, dtype=torch.complex64,
                             device=weight2d.device)
            spec = _kernel_spectra(weight2d.reshape(co2, ci, depth, k, k), self.n)
            w2[..., pd:pd + depth] = spec.permute(3, 4, 0, 1, 2).reshape(self.nb, co2, ci, depth)
            self.w2 = w2.view(self.nb, co2, ci * (depth + 2 * pd))
            self.b2 = None if bias2d is None else bias2d.detach().float().clone()

    @property
    def nbytes(self) -> int:
        """Memory of the kernel spectra in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.w3, self.w2) if t is not None)

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if x.dim() != 5 or x.shape[1] != self.cin:
            raise ValueError(f"expected [B, {self.cin}, D, H, W]; got {list(x.shape)}")
        b, ci, d, h, w = x.shape
        if self.depth is not None and d != self.depth:
            raise ValueError(f"the 2D conv was built for depth {self.depth}; got {d}")
        n, t, p, pd = self.n, self.tile, self.k // 2, self.kd // 2
        nh = n // 2 + 1
        co = self.cout
        xpad = F.pad(x, (p, p, p, p))
        y3 = torch.empty(b, co, d, h, w, dtype=x.dtype, device=x.device)
        y2 = None
        if self.w2 is not None:
            y2 = torch.empty(b, self.w2.shape[1], h, w, dtype=x.dtype, device=x.device)
        xp = torch.zeros(self.nb, ci, d + 2 * pd, dtype=torch.complex64, device=x.device)
        for bi in range(b):
            for i0 in range(0, h, t):
                th = min(t, h - i0)
                for j0 in range(0, w, t):
                    tw = min(t, w - j0)
                    win = xpad[bi, :, :, i0:i0 + th + 2 * p, j0:j0 + tw + 2 * p]
                    spec = torch.fft.rfft2(win, s=(n, n))                   # [Cin, D, n, nh]
                    xp[:, :, pd:pd + d].copy_(spec.permute(2, 3, 0, 1).reshape(self.nb, ci, d))
                    del spec
                    acc = torch.matmul(self.w3[0], xp[:, :, 0:d])           # [bins, Cout, D]
                    for k in range(1, self.kd):
                        acc.baddbmm_(self.w3[k], xp[:, :, k:k + d])
                    y = torch.fft.irfft2(acc.view(n, nh, co, d).permute(2, 3, 0, 1), s=(n, n))
                    y3[bi, :, :, i0:i0 + th, j0:j0 + tw] = y[:, :, :th, :tw]
                    del acc, y
                    if y2 is not None:
                        s2 = torch.bmm(self.w2, xp.view(self.nb, -1, 1))       # [bins, Cout2, 1]
                        y = torch.fft.irfft2(s2.view(n, nh, -1).permute(2, 0, 1), s=(n, n))
                        y2[bi, :, i0:i0 + th, j0:j0 + tw] = y[:, :th, :tw]
                        del s2, y
        if self.b3 is not None:
            y3 += self.b3.view(1, co, 1, 1, 1)
        if y2 is not None and self.b2 is not None:
            y2 += self.b2.view(1, -1, 1, 1)
        return y3, y2


__all__ = ["SpectralConvHW"]
