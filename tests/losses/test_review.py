"""ReviewKD against float64 references: loop adaptive pooling for HCL, hand-written ABF levels in train
and eval mode, and the whole loss over a pooled level and two taps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdscene.losses import ABF, Features, ReviewKDLoss, TapInfo, hcl_loss
from tests.losses import nn_reference as ref


def _adaptive_pool(x: np.ndarray, n: int) -> np.ndarray:
    """Bin i covers [floor(i·H/n), ceil((i+1)·H/n)) on each axis (PyTorch's adaptive pooling rule)."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:2], n, n))
    for i in range(n):
        for j in range(n):
            r0, r1 = (i * h) // n, math.ceil((i + 1) * h / n)
            c0, c1 = (j * w) // n, math.ceil((j + 1) * w / n)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def ref_hcl(s: np.ndarray, t: np.ndarray) -> float:
    """(MSE + Σ 2^-k MSE of the 4, 2, 1 pooled grids smaller than the map) / Σ weights."""
    terms, weights = [((s - t) ** 2).mean()], [1.0]
    for n in (4, 2, 1):
        if n < s.shape[-2]:
            weights.append(weights[-1] / 2)
            terms.append(((_adaptive_pool(s, n) - _adaptive_pool(t, n)) ** 2).mean())
    return sum(w * v for w, v in zip(weights, terms)) / sum(weights)


def ref_abf(abf: ABF, x: np.ndarray, residual, out_size, train: bool):
    x = ref.batch_norm(ref.conv1x1(x, abf.conv1[0]), abf.conv1[1], train)
    if abf.att_conv is not None:
        r = ref.nearest(residual, x.shape[-2:])
        logits = ref.conv1x1(np.concatenate([x, r], axis=1), abf.att_conv)
        att = 1.0 / (1.0 + np.exp(-logits))
        x = x * att[:, :1] + r * att[:, 1:]
    if x.shape[-2:] != tuple(out_size):
        x = ref.nearest(x, out_size)
    return ref.batch_norm(ref.conv3x3(x, abf.conv2[0]), abf.conv2[1], train), x


# -- HCL -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(7, 7), (5, 3), (2, 2), (1, 1), (8, 8)])
def test_hcl_matches_loop_reference(size):
    s = torch.randn(2, 3, *size, dtype=torch.float64)
    t = torch.randn(2, 3, *size, dtype=torch.float64)
    assert hcl_loss(s, t).item() == pytest.approx(ref_hcl(ref.arr(s), ref.arr(t)), rel=1e-12)


def test_hcl_weights_by_hand_on_a_2x2_map():
    """A 2×2 map uses only the 1×1 grid: (MSE + ½·MSE of the means) / 1.5."""
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    t = torch.zeros_like(s)
    assert hcl_loss(s, t).item() == pytest.approx((7.5 + 0.5 * 2.5**2) / 1.5)


def test_hcl_gradcheck():
    s = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: hcl_loss(x, t), (s,))


# -- ABF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("out_size", [(4, 4), (6, 6)])
def test_abf_matches_reference_in_train_and_eval(train, out_size):
    abf = ABF(3, 4, 5, fuse=True).double()
    ref.randomise_batch_norms(abf, torch.Generator().manual_seed(3))
    abf.train(train)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    residual = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    out, fused = abf(x, residual, out_size)
    want_out, want_fused = ref_abf(abf, ref.arr(x), ref.arr(residual), out_size, train)
    np.testing.assert_allclose(ref.arr(out), want_out, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ref.arr(fused), want_fused, rtol=1e-9, atol=1e-11)


def test_abf_gradcheck_and_missing_residual():
    abf = ABF(2, 2, 3, fuse=True).double().eval()
    ref.randomise_batch_norms(abf, torch.Generator().manual_seed(4))
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: abf(a, b, (3, 3))[0], (x, r))
    with pytest.raises(ValueError, match="residual"):
        abf(x)


# -- the loss --------------------------------------------------------------------------------------

S_TAPS = [TapInfo("layer1:pre", 4, 1, (4, 4)), TapInfo("layer2:pre", 6, 2, (2, 2))]
T_TAPS = [TapInfo("layer1:pre", 3, 1, (5, 5)), TapInfo("layer2:pre", 5, 2, (2, 2))]


def _features(taps, batch=3, pooled=True):
    maps = tuple(torch.randn(batch, t.channels, *t.size, dtype=torch.float64) for t in taps)
    vec = torch.randn(batch, taps[-1].channels, dtype=torch.float64) if pooled else None
    return Features(torch.zeros(batch, 2), maps, tuple(t.name for t in taps), vec)


@pytest.mark.parametrize("train", [True, False])
def test_review_loss_matches_reference(train):
    loss = ReviewKDLoss(S_TAPS, T_TAPS, weight=0.7).double().train(train)
    ref.randomise_batch_norms(loss, torch.Generator().manual_seed(5))
    student, teacher = _features(S_TAPS), _features(T_TAPS)
    xs = [ref.arr(student.pooled)[:, :, None, None], *[ref.arr(m) for m in reversed(student.maps)]]
    ts = [ref.arr(teacher.pooled)[:, :, None, None], *[ref.arr(m) for m in reversed(teacher.maps)]]
    want, residual = 0.0, None
    for x, t, abf in zip(xs, ts, loss.abfs):
        out, residual = ref_abf(abf, x, residual, t.shape[-2:], train)
        want += ref_hcl(out, t)
    assert loss(student, teacher, None)["review"].item() == pytest.approx(0.7 * want, rel=1e-9)


def test_review_mid_width_pooled_modes_and_errors():
    wide = [TapInfo("a", 4, 1, (4, 4)), TapInfo("b", 600, 2, (2, 2))]
    with torch.device("meta"):
        assert ReviewKDLoss(wide, wide).abfs[0].conv1[0].out_channels == 512  # min(512, C)
    assert ReviewKDLoss(S_TAPS, T_TAPS).abfs[0].conv1[0].out_channels == 6
    assert ReviewKDLoss(S_TAPS, T_TAPS, mid_channels=8).abfs[2].conv1[0].out_channels == 8
    residual = ReviewKDLoss(S_TAPS, T_TAPS, pooled="residual")
    assert residual.abfs[0].conv2 is None and residual.abfs[1].att_conv is not None
    off = ReviewKDLoss(S_TAPS, T_TAPS, pooled="off")
    assert len(off.abfs) == 2 and off.abfs[0].att_conv is None
    with pytest.raises(ValueError, match="pooled must be"):
        ReviewKDLoss(S_TAPS, T_TAPS, pooled="yes")
    with pytest.raises(ValueError, match="pair up one to one"):
        ReviewKDLoss(S_TAPS, T_TAPS[:1])
    loss = ReviewKDLoss(S_TAPS, T_TAPS).double()
    with pytest.raises(ValueError, match=r"teacher level 2 map 'layer1:pre' was probed as \(B, 3, 5, 5\)"):
        loss(_features(S_TAPS), _features([TapInfo("a", 3, 1, (4, 4)), T_TAPS[1]]), None)


def test_missing_pooled_vector_is_the_global_average_of_the_deepest_map():
    loss = ReviewKDLoss(S_TAPS, T_TAPS).double()
    student, teacher = _features(S_TAPS, pooled=False), _features(T_TAPS, pooled=False)
    with_vec = [Features(f.logits, f.maps, f.names, f.maps[-1].mean((2, 3))) for f in (student, teacher)]
    torch.testing.assert_close(loss(student, teacher, None), loss(*with_vec, None))


def test_review_loss_trains_its_fusion_parameters():
    loss = ReviewKDLoss(S_TAPS, T_TAPS).double()
    student, teacher = _features(S_TAPS), _features(T_TAPS)
    loss(student, teacher, None)["review"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
