"""DKD against an explicit float64 loop reference, the KD decomposition, hand-worked cases, errors."""

import math

import pytest
import torch

from kdscene.losses import DKDLoss, Features, dkd_parts, kd_divergence


def _feats(logits):
    return Features(logits=logits, maps=())


def _softmax(row, temp):
    e = [math.exp(v / temp) for v in row]
    return [v / sum(e) for v in e]


def _ref_dkd(s, t, labels, temp, alpha, beta):
    """Per sample: binary [p_t, 1 − p_t] KL and the KL among the renormalised non-target classes."""
    tckd = nckd = 0.0
    for zs, zt, y in zip(s, t, labels):
        ps, pt = _softmax(zs, temp), _softmax(zt, temp)
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        tckd += sum(q * math.log(q / p) for q, p in zip(bt, bs))
        rest_s = [p for k, p in enumerate(ps) if k != y]
        rest_t = [p for k, p in enumerate(pt) if k != y]
        hs = [p / sum(rest_s) for p in rest_s]
        ht = [p / sum(rest_t) for p in rest_t]
        nckd += sum(q * math.log(q / p) for q, p in zip(ht, hs))
    b = len(s)
    return temp**2 * (alpha * tckd + beta * nckd) / b


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dkd_matches_loop_reference(temp):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 6, generator=g, dtype=torch.float64) * 3
    t = torch.randn(5, 6, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 5, 2, 2, 3])
    got = DKDLoss(weight=2.0, alpha=1.5, beta=8.0, temperature=temp)(_feats(s), _feats(t), y)["dkd"]
    want = 2.0 * _ref_dkd(s.tolist(), t.tolist(), y.tolist(), temp, 1.5, 8.0)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_kd_equals_tckd_plus_coupled_nckd():
    # the paper's decomposition: KD = TCKD + (1 − p_t^T) · NCKD, per sample (batch of one)
    g = torch.Generator().manual_seed(1)
    for k in range(4):
        s = torch.randn(1, 7, generator=g, dtype=torch.float64)
        t = torch.randn(1, 7, generator=g, dtype=torch.float64)
        y = torch.tensor([k])
        tckd, nckd = dkd_parts(s, t, y, temperature=2.0)
        p_t = torch.softmax(t / 2.0, dim=1)[0, k]
        kd = kd_divergence(s, t, temperature=2.0)
        torch.testing.assert_close(tckd + (1 - p_t) * nckd, kd)


def test_dkd_hand_worked_three_classes():
    # T = 1, label 0. Teacher logits (0, 0, 0): b^T = (1/3, 2/3), p̂^T = (½, ½).
    # Student logits (0, log 2, 0): p^S = (¼, ½, ¼), b^S = (¼, ¾), p̂^S = (2/3, 1/3).
    s = torch.tensor([[0.0, math.log(2.0), 0.0]], dtype=torch.float64)
    t = torch.zeros(1, 3, dtype=torch.float64)
    tckd, nckd = dkd_parts(s, t, torch.tensor([0]), temperature=1.0)
    want_t = (1 / 3) * math.log((1 / 3) / (1 / 4)) + (2 / 3) * math.log((2 / 3) / (3 / 4))
    want_n = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
    assert tckd.item() == pytest.approx(want_t, rel=1e-12)
    assert nckd.item() == pytest.approx(want_n, rel=1e-12)


def test_identical_logits_give_zero_and_confident_teacher_is_stable():
    x = torch.randn(4, 10, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])
    assert DKDLoss()(_feats(x), _feats(x), y)["dkd"].item() == pytest.approx(0.0, abs=1e-12)
    # the student's p_t underflows to 0 in float32 (log 0 = -inf if summed from softmax); the teacher
    # is sure of the label: TCKD ≈ log p_t^T − log p_t^S ≈ 0 − (−200) per sample, times T² = 1
    s, t = torch.zeros(2, 5), torch.zeros(2, 5)
    s[:, 1], t[:, 0] = 200.0, 200.0
    tckd, _ = dkd_parts(s, t, torch.tensor([0, 0]), temperature=1.0)
    assert tckd.item() == pytest.approx(200.0, rel=1e-4)


def test_dkd_gradient_check():
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2])
    loss = DKDLoss(temperature=2.0)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), y)["dkd"], (s,))


def test_dkd_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DKDLoss(temperature=0.0)
    with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
        DKDLoss(beta=-1.0)
    with pytest.raises(ValueError, match="logits .* differ"):
        DKDLoss()(_feats(torch.randn(2, 3)), _feats(torch.randn(2, 4)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one label per sample"):
        DKDLoss()(_feats(torch.randn(2, 3)), _feats(torch.randn(2, 3)), torch.tensor([0]))


def test_dkd_half_precision_is_computed_in_float32():
    s, t, y = torch.randn(4, 6).half(), torch.randn(4, 6).half(), torch.tensor([0, 1, 2, 3])
    out = DKDLoss()(_feats(s), _feats(t), y)["dkd"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, DKDLoss()(_feats(s.float()), _feats(t.float()), y)["dkd"])
