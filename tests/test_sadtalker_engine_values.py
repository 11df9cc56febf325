"""Helpers of the SadTalker engine (``sadtalker_ext.engines.sadtalker``) that the end-to-end goldens do not pin:
the paste-back feather mask, the resize rule, the bf16 CPU check and the 512 -> 256 fallback's warning.

References: the feather mask's docstring (1 inside, fading to 0 at box edges inside the image, 1 on the
image border, smoothstep of the edge distance over ``FEATHER`` x the box's shorter side), cv2's own resize
with the interpolation the rule names (area when either side shrinks, bilinear when both grow).
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from sadtalker_ext.engines import sadtalker as E  # noqa: E402


def _smoothstep(u):
    u = np.clip(u, 0, 1)
    return u * u * (3 - 2 * u)


def test_feather_mask_fades_at_inner_edges_only():
    # box 40 x 20 at (10, 5) in a 60 x 40 image: every edge inside; ramp = 0.06 * 20 = 1.2 -> max(2, 1.2) = 2 px
    m = E._feather_mask((10, 5, 50, 25), (60, 40))
    assert m.shape == (20, 40, 1) and m.dtype == np.float32
    d = np.minimum(np.arange(40) + 0.5, 40 - (np.arange(40) + 0.5)) / 2.0
    e = np.minimum(np.arange(20) + 0.5, 20 - (np.arange(20) + 0.5)) / 2.0
    want = _smoothstep(np.minimum(e, 1)[:, None] * np.minimum(d, 1)[None, :])
    np.testing.assert_allclose(m[..., 0], want, atol=1e-6)
    # box on the image's left and top border: those edges stay 1
    b = E._feather_mask((0, 0, 30, 20), (60, 40))[..., 0]
    assert b.shape == (20, 30) and b[0, 0] == 1.0 and b[-1, 0] < 0.2 and b[0, -1] < 0.2
    # the whole image: no fade at all
    np.testing.assert_array_equal(E._feather_mask((0, 0, 60, 40), (60, 40)), np.ones((40, 60, 1), np.float32))


@pytest.mark.parametrize("size,interp", [((120, 80), cv2.INTER_LINEAR), ((50, 25), cv2.INTER_AREA),
                                         ((120, 40), cv2.INTER_AREA), ((80, 60), cv2.INTER_AREA)])
def test_resize_shrinks_by_area_and_enlarges_bilinearly(size, interp):
    img = (np.random.default_rng(0).random((50, 100, 3)) * 255).astype(np.uint8)  # 100 wide, 50 tall
    np.testing.assert_array_equal(E._resize(img, size), cv2.resize(img, size, interpolation=interp))


def test_cpu_bf16_check_reads_the_cpu_capabilities(monkeypatch):
    import torch
    assert isinstance(E.cpu_has_bf16(), bool)
    for avx, amx, want in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert E.cpu_has_bf16() is want


def test_512_without_its_checkpoint_renders_at_256_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SADTALKER_CHECKPOINTS", raising=False)
    (tmp_path / E.CHECKPOINT_256).write_bytes(b"x")
    eng = E.SadTalkerEngine(checkpoints=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=E.__name__):
        path, size = eng._checkpoint_for(512)
    assert (path, size) == (tmp_path / E.CHECKPOINT_256, 256)
    msgs = [r.getMessage() for r in caplog.records if r.name == E.__name__]
    assert len(msgs) == 1 and msgs[0].startswith(f"{E.CHECKPOINT_512} not found: rendering at 256 px and "
                                                 "up-scaling to 512; for true 512 px output, ")
