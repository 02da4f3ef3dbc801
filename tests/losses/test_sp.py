"""SP against a float64 loop reference, hand-worked 2-sample cases, invariances, gradients, errors."""

import math

import pytest
import torch

from kdscene.losses import Features, SPLoss, similarity_matrix


def _feats(*maps):
    return Features(logits=torch.zeros(maps[0].shape[0], 2), maps=tuple(maps))


def _ref_sp(s, t):
    """Gram matrices by loops, rows divided by their L2 norm, squared Frobenius distance / b²."""
    b = len(s)

    def gram(x):
        rows = [[sum(p * q for p, q in zip(x[i], x[j])) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in rows]

    gs, gt = gram(s), gram(t)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / (b * b)


def test_sp_matches_loop_reference_on_the_last_tap_by_default():
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, 2, 2, generator=g)
    t1, t2 = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, 6, 1, 1, generator=g)
    s2, t2 = s2.double(), t2.double()
    got = SPLoss(weight=7.0)(_feats(s1, s2), _feats(t1, t2), None)["sp"].item()
    want = _ref_sp(s2.flatten(1).tolist(), t2.flatten(1).tolist())
    assert got == pytest.approx(7.0 * want, rel=1e-10)
    every = SPLoss(weight=1.0, select=None)(_feats(s1, s2), _feats(t1, t2), None)["sp"].item()
    want_all = want + _ref_sp(s1.flatten(1).tolist(), t1.flatten(1).tolist())
    assert every == pytest.approx(want_all, rel=1e-10)
    first = SPLoss(weight=1.0, select=[0])(_feats(s1, s2), _feats(t1, t2), None)["sp"].item()
    assert first == pytest.approx(want_all - want, rel=1e-10)


def test_sp_hand_worked_two_samples():
    # student (1, 0), (0, 1): G̃ = I, rows already unit -> G_S = I.
    # teacher (1, 0), (1, 0): G̃ = all ones, rows (1, 1)/√2 -> G_T = 1/√2 everywhere.
    # ‖G_T − G_S‖_F² = 2·(1 − 1/√2)² (diagonal) + 2·(1/√2)² (off-diagonal), divided by b² = 4
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    want = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 2 * 0.5) / 4
    assert SPLoss(weight=1.0)(_feats(s), _feats(t), None)["sp"].item() == pytest.approx(want, rel=1e-12)


def test_identical_maps_and_global_scale_give_zero():
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    assert SPLoss()(_feats(x * 4.0), _feats(x), None)["sp"].item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(similarity_matrix(x).diagonal() > 0, torch.ones(5, dtype=torch.bool))


def test_sp_gradient_check():
    s = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    loss = SPLoss(weight=1.0)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["sp"], (s,))


def test_sp_errors():
    a, b = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match="student taps 1 maps .* teacher taps 2"):
        SPLoss()(_feats(a), _feats(a, b), None)
    with pytest.raises(ValueError, match=r"select \[2\] out of range for 2 tapped maps"):
        SPLoss(select=[2])(_feats(a, b), _feats(a, b), None)
    with pytest.raises(ValueError, match="at least one tap index"):
        SPLoss(select=[])
    with pytest.raises(ValueError, match="batch sizes differ at tap"):
        SPLoss()(_feats(a), _feats(torch.randn(3, 3, 2, 2)), None)
    empty = Features(logits=torch.zeros(2, 2), maps=())
    with pytest.raises(ValueError, match="needs tapped feature maps"):
        SPLoss()(empty, empty, None)


def test_sp_half_precision_is_computed_in_float32():
    s, t = torch.randn(4, 3, 2, 2).half(), torch.randn(4, 5, 2, 2).half()
    out = SPLoss()(_feats(s), _feats(t), None)["sp"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, SPLoss()(_feats(s.float()), _feats(t.float()), None)["sp"])
