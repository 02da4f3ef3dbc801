"""PKT against a float64 loop reference (both modes), hand-worked cases, invariances and errors."""

import math

import pytest
import torch

from kdscene.losses import Features, PKTLoss, pkt_divergence


def _feats(pooled):
    return Features(logits=torch.zeros(pooled.shape[0], 2), maps=(), pooled=pooled)


def _ref_pkt(s, t, eps, mode):
    """Loops over pairs: kernel ½(cos + 1), row-normalised (diagonal dropped in paper mode), then KL."""
    b = len(s)

    def probs(x):
        unit = [[v / (math.sqrt(sum(u * u for u in row)) + eps) for v in row] for row in x]
        k = [[(sum(p * q for p, q in zip(unit[i], unit[j])) + 1) / 2 for j in range(b)] for i in range(b)]
        if mode == "paper":
            k = [[0.0 if i == j else k[i][j] for j in range(b)] for i in range(b)]
        return [[k[i][j] / sum(k[i]) for j in range(b)] for i in range(b)]

    ps, pt = probs(s), probs(t)
    terms = [
        pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) if pt[i][j] > 0 else 0.0
        for i in range(b)
        for j in range(b)
    ]
    return sum(terms) / (b * b) if mode == "code" else sum(terms) / b


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("eps", [1e-7, 0.0])
def test_pkt_matches_loop_reference(mode, eps):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64)
    t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = PKTLoss(weight=3.0, eps=eps, mode=mode)(_feats(s), _feats(t), None)["pkt"].item()
    want = 3.0 * _ref_pkt(s.tolist(), t.tolist(), eps, mode)
    assert got == pytest.approx(want, rel=1e-10)


def test_pkt_hand_worked_two_samples():
    # student orthogonal: K = [[1, ½], [½, 1]] -> rows (2/3, 1/3); teacher parallel: rows (½, ½).
    # code: mean of the four entries ½·log(½ / (2/3)), ½·log(½ / (1/3)), twice each = ¼·log(9/8)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert pkt_divergence(s, t, eps=0.0).item() == pytest.approx(0.25 * math.log(9 / 8), rel=1e-12)
    # paper: two samples leave one off-diagonal neighbour each, probability 1 on both sides
    assert pkt_divergence(s, t, eps=0.0, mode="paper").item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_pkt_is_zero_for_equal_geometry_and_invariant_to_per_sample_scale(mode):
    x = torch.randn(6, 4, dtype=torch.float64)
    scaled = x * torch.rand(6, 1, dtype=torch.float64).add(0.5)
    assert pkt_divergence(scaled, x, eps=0.0, mode=mode).item() == pytest.approx(0.0, abs=1e-12)
    y = torch.randn(6, 9, dtype=torch.float64)
    a = pkt_divergence(y, x, eps=0.0, mode=mode)
    b = pkt_divergence(y * 3.0, scaled, eps=0.0, mode=mode)
    torch.testing.assert_close(a, b)
    assert a.item() > 0


def test_paper_mode_gives_zero_for_a_single_sample_and_code_mode_too():
    s, t = torch.randn(1, 3), torch.randn(1, 3)
    assert pkt_divergence(s, t, mode="paper").item() == 0.0
    assert pkt_divergence(s, t, mode="code").item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_pkt_gradient_check(mode):
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    loss = PKTLoss(weight=1.0, mode=mode)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["pkt"], (s,))


def test_pkt_without_pooled_vector_explains():
    feats = Features(logits=torch.zeros(2, 2), maps=(torch.randn(2, 3, 2, 2),))
    with pytest.raises(ValueError, match="student's penultimate vector.*Features.pooled.*head"):
        PKTLoss()(feats, _feats(torch.randn(2, 3)), None)
    with pytest.raises(ValueError, match="teacher's penultimate vector"):
        PKTLoss()(_feats(torch.randn(2, 3)), feats, None)


def test_pkt_bad_options_and_batch_mismatch_raise():
    with pytest.raises(ValueError, match="mode must be"):
        PKTLoss(mode="exact")
    with pytest.raises(ValueError, match="eps must be"):
        PKTLoss(eps=-1.0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        PKTLoss()(_feats(torch.randn(2, 3)), _feats(torch.randn(3, 3)), None)


def test_pkt_half_precision_input_is_computed_in_float32():
    s, t = torch.randn(4, 8).half(), torch.randn(4, 8).half()
    out = PKTLoss()(_feats(s), _feats(t), None)["pkt"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, PKTLoss()(_feats(s.float()), _feats(t.float()), None)["pkt"])
