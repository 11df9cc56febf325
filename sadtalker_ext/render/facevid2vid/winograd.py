"""Winograd F(4x4, 3x3) convolution for CPU inference (stride 1, padding 1, no groups).

A 3x3 convolution computes each 4x4 output tile from a 6x6 input tile with 36 element-wise products
per channel pair instead of 144 multiply-adds (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016). Here the 36 products become 36 matrix products ``[N, Cin] x
[Cin, Cout]`` (N = number of tiles), done by oneDNN (``torch.ops.mkldnn._linear_pointwise``) when
available, else ``torch.matmul``; the input and output transforms are a handful of vectorised
element-wise passes. That is 4x fewer multiply-adds than a direct convolution; it pays off on the
CPU for layers with many input channels at moderate resolution (the SPADE decoder's 64x64 layers),
while oneDNN's direct kernels stay faster for few input channels at large resolution.

Accuracy: with the standard interpolation points (0, +-1, +-2, inf) the float32 result differs from
a direct convolution by a few 1e-5 relative; through the whole SadTalker renderer this stays below
3e-5 on the output image (the golden tolerance is 1.1e-4). GPUs do not use this module (cuDNN picks
its own algorithms).

Transform matrices: ``B^T`` (6x6), ``G`` (6x3), ``A^T`` (4x6) of F(4x4, 3x3) from the paper above.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]


def _linear_backend():
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:  # probe once: some builds register the op without a CPU kernel
        a = torch.ones(2, 3)
        w = torch.ones(4, 3)
        if not torch.equal(op(a, w, None, "none", [], ""), torch.full((2, 4), 3.0)):
            return None
    except (RuntimeError, NotImplementedError):  # this torch build/backend lacks the op: plain conv is used
        return None
    return op


_LINEAR = None
_LINEAR_CHECKED = False


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for ``x [N, K]``, ``w [M, K]`` -> ``[N, M]`` (oneDNN when available)."""
    global _LINEAR, _LINEAR_CHECKED
    if not _LINEAR_CHECKED:
        _LINEAR = _linear_backend()
        _LINEAR_CHECKED = True
    if _LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32:
        return _LINEAR(x, w, None, "none", [], "")
    return torch.matmul(x, w.t())


def _in_transform(d: List[torch.Tensor], out: torch.Tensor, tmp: torch.Tensor) -> None:
    """``out[i] = sum_k B^T[i, k] d[k]`` for the six rows of B^T (with shared sub-expressions)."""
    t1, t2 = tmp[0], tmp[1]
    torch.add(d[4], d[2], alpha=-5, out=out[0]).add_(d[0], alpha=4)           # 4d0 - 5d2 + d4
    torch.add(d[4], d[2], alpha=-4, out=t1)                                    # d4 - 4d2
    torch.add(d[3], d[1], alpha=-4, out=t2)                                    # d3 - 4d1
    torch.add(t1, t2, out=out[1])
    torch.sub(t1, t2, out=out[2])
    torch.sub(d[4], d[2], out=t1)                                              # d4 - d2
    torch.sub(d[3], d[1], out=t2)                                              # d3 - d1
    torch.add(t1, t2, alpha=2, out=out[3])
    torch.add(t1, t2, alpha=-2, out=out[4])
    torch.add(d[5], d[3], alpha=-5, out=out[5]).add_(d[1], alpha=4)           # 4d1 - 5d3 + d5


def _out_transform(m: List[torch.Tensor], out: List[torch.Tensor], tmp: torch.Tensor) -> None:
    """``out[u] = sum_i A^T[u, i] m[i]`` for the four rows of A^T (shared sub-expressions)."""
    a, b, c, d = tmp[0], tmp[1], tmp[2], tmp[3]
    torch.add(m[1], m[2], out=a)
    torch.sub(m[1], m[2], out=b)
    torch.add(m[3], m[4], out=c)
    torch.sub(m[3], m[4], out=d)
    torch.add(a, c, out=out[0]).add_(m[0])                                     # m0 + a + c
    torch.add(b, d, alpha=2, out=out[1])                                       # b + 2d
    torch.add(a, c, alpha=4, out=out[2])                                       # a + 4c
    torch.add(b, d, alpha=8, out=out[3]).add_(m[5])                            # b + 8d + m5


class WinogradConv3x3:
    """Callable ``x [B, Cin, H, W] -> conv2d(x, weight, bias, padding=1)`` by Winograd F(4x4, 3x3).

    Args:
        weight: ``[Cout, Cin, 3, 3]``; bias: ``[Cout]`` or None. Transformed once (float64 maths,
            stored float32 as ``[36, Cout, Cin]``, 4x the weight's memory).

    The input may have any memory format (channels_last avoids a copy); the output is
    ``channels_last``. CPU float32 only.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]):
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
            raise ValueError("WinogradConv3x3 needs a [Cout, Cin, 3, 3] weight")
        g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
        self.cout, self.cin = weight.shape[0], weight.shape[1]
        # U[i, j] = G w G^T in float64, one row i at a time: the float64 temporaries stay at 1/6
        # of the transformed weights (the 3D hourglass's would otherwise take ~0.5 GB at once)
        self.u = torch.empty(6, 6, self.cout, self.cin, dtype=weight.dtype, device=weight.device)
        for o in range(0, self.cout, 128):
            wd = weight[o:o + 128].detach().double()
            for i in range(6):
                self.u[i, :, o:o + 128] = torch.einsum("k,ockl,jl->joc", g[i], wd, g)
        self.u = self.u.view(36, self.cout, self.cin)
        self.bias = None if bias is None else bias.detach().clone()

    @property
    def weight_bytes(self) -> int:
        return self.u.numel() * self.u.element_size()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        th, tw = -(-h // 4), -(-w // 4)
        hp, wp = 4 * th + 2, 4 * tw + 2
        xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, wp - w - 1, 1, hp - h - 1))  # [B, Hp, Wp, C]
        dev, dt = x.device, x.dtype
        # rows: tile row r reads padded rows 4r .. 4r+5
        rows = torch.empty(6, b, th, wp, c, device=dev, dtype=dt)
        tmp = torch.empty(2, b, th, wp, c, device=dev, dtype=dt)
        _in_transform([xp[:, k:k + 4 * th:4] for k in range(6)], rows, tmp)
        del tmp, xp
        # columns: V[i, j] = [B, th, tw, C]
        v = torch.empty(6, 6, b, th, tw, c, device=dev, dtype=dt)
        tmp = torch.empty(2, 6, b, th, tw, c, device=dev, dtype=dt)
        _in_transform([rows[:, :, :, k:k + 4 * tw:4] for k in range(6)],
                      v.permute(1, 0, 2, 3, 4, 5), tmp)
        del tmp, rows
        n = b * th * tw
        v = v.view(36, n, c)
        prods = [_linear(v[p], self.u[p]) for p in range(36)]                  # 36 x [N, Cout]
        del v
        # output rows (over i) for each column j, then columns (over j) into the 4x4 tile
        co = self.cout
        srow = torch.empty(4, 6, n, co, device=dev, dtype=dt)
        tmp = torch.empty(4, n, co, device=dev, dtype=dt)
        for j in range(6):
            _out_transform([prods[6 * i + j] for i in range(6)], [srow[u, j] for u in range(4)],
                           tmp)
        del prods
        out = torch.empty(b, 4 * th, 4 * tw, co, device=dev, dtype=dt)
        ov = out.view(b, th, 4, tw, 4, co).permute(4, 2, 0, 1, 3, 5)          # [v, u, B, th, tw, C]
        cols = srow.view(4, 6, b, th, tw, co)
        tmp = torch.empty(4, 4, b, th, tw, co, device=dev, dtype=dt)
        _out_transform([cols[:, j] for j in range(6)], [ov[v_] for v_ in range(4)], tmp)
        del srow, cols, tmp
        if self.bias is not None:
            out.add_(self.bias)
        if 4 * th != h or 4 * tw != w:
            out = out[:, :h, :w].contiguous()
        return out.permute(0, 3, 1, 2)


class WinogradConv3d:
    """Callable ``x [B, Cin, D, H, W] -> conv3d(x, weight, bias, padding=1)`` for 3x3x3 kernels:
    the three depth taps become input channels (``[B*D, 3*Cin, H, W]``, zero at the depth edges)
    of a :class:`WinogradConv3x3` over (H, W).

    The depth stacking costs one copy of 3x the input, so this pays where the input is small next
    to the weights: the 3D hourglass's levels of 16x16 pixels and below (1.3-2.3x faster than
    oneDNN's direct conv3d there, measured on AVX-512). Output: ``[B, Cout, D, H, W]`` in the
    ``channels_last_3d`` memory format. CPU float32 only.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]):
        if weight.dim() != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
            raise ValueError("WinogradConv3d needs a [Cout, Cin, 3, 3, 3] weight")
        self.cout, self.cin = weight.shape[0], weight.shape[1]
        # input channel kd * Cin + c of the 2D conv reads depth d + kd - 1
        w2 = weight.detach().permute(0, 2, 1, 3, 4).reshape(self.cout, 3 * self.cin, 3, 3)
        self.conv = WinogradConv3x3(w2, bias)

    @property
    def weight_bytes(self) -> int:
        return self.conv.weight_bytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        cols = torch.empty(b, d, h, w, 3, c, device=x.device, dtype=x.dtype)
        xl = x.permute(0, 2, 3, 4, 1)                                         # [B, D, H, W, C]
        cols[:, 1:, ..., 0, :].copy_(xl[:, :-1])
        cols[:, :1, ..., 0, :].zero_()
        cols[:, :, ..., 1, :].copy_(xl)
        cols[:, :-1, ..., 2, :].copy_(xl[:, 1:])
        cols[:, -1:, ..., 2, :].zero_()
        y = self.conv(cols.view(b * d, h, w, 3 * c).permute(0, 3, 1, 2))  # [B*D, Cout, H, W] (NHWC)
        return y.permute(0, 2, 3, 1).view(b, d, h, w, self.cout).permute(0, 4, 1, 2, 3)


__all__ = ["WinogradConv3x3", "WinogradConv3d"]
