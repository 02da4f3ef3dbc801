"""RKD against float64 loop references (both modes), hand-worked cases, invariances, gradients, errors."""

import itertools
import math

import pytest
import torch

from kdscene.losses import Features, RKDLoss, rkd_angle, rkd_distance


def _feats(pooled):
    return Features(logits=torch.zeros(pooled.shape[0], 2), maps=(), pooled=pooled)


def _huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _dist(u, v):
    return math.sqrt(sum((p - q) ** 2 for p, q in zip(u, v)))


def _cos_at(x, a, b, c):
    """cos of the angle at vertex a between x_b and x_c; 0 for a zero edge (as F.normalize gives)."""
    e1 = [p - q for p, q in zip(x[b], x[a])]
    e2 = [p - q for p, q in zip(x[c], x[a])]
    n1, n2 = math.sqrt(sum(v * v for v in e1)), math.sqrt(sum(v * v for v in e2))
    if n1 == 0 or n2 == 0:
        return 0.0
    return sum(p * q for p, q in zip(e1, e2)) / (n1 * n2)


def _ref_rkd(s, t, mode):
    b = len(s)
    pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
    ds = {p: _dist(s[p[0]], s[p[1]]) for p in pairs}
    dt = {p: _dist(t[p[0]], t[p[1]]) for p in pairs}
    mu_s, mu_t = sum(ds.values()) / len(pairs), sum(dt.values()) / len(pairs)
    dist = sum(_huber(ds[p] / mu_s, dt[p] / mu_t) for p in pairs)
    triples = list(itertools.product(range(b), repeat=3))
    if mode == "paper":
        triples = [tr for tr in triples if len(set(tr)) == 3]
    ang = sum(_huber(_cos_at(s, *tr), _cos_at(t, *tr)) for tr in triples)
    if mode == "code":
        return dist / (b * b), ang / (b**3)
    return dist / len(pairs), ang / len(triples)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_rkd_matches_loop_reference(mode):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.randn(5, 6, generator=g, dtype=torch.float64) * 3
    want_d, want_a = _ref_rkd(s.tolist(), t.tolist(), mode)
    assert rkd_distance(s, t, mode=mode).item() == pytest.approx(want_d, rel=1e-9)
    assert rkd_angle(s, t, mode=mode).item() == pytest.approx(want_a, rel=1e-9)
    got = RKDLoss(weight=2.0, distance_weight=25.0, angle_weight=50.0, mode=mode)(_feats(s), _feats(t), None)
    assert got["rkd"].item() == pytest.approx(2.0 * (25 * want_d + 50 * want_a), rel=1e-9)


def test_rkd_hand_worked_two_samples_and_right_triangle():
    # two samples: one distance each side, both normalise to 1 -> distance loss 0
    s = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    t = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    assert rkd_distance(s, t).item() == pytest.approx(0.0, abs=1e-12)
    # right isosceles triangle (0,0), (1,0), (0,1) vs three points on a line 0, 1, 2 (teacher).
    # student distances 1, 1, √2 (μ = (2 + √2)/3), teacher 1, 1, 2 (μ = 4/3)
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    mu_s, mu_t = (2 + math.sqrt(2)) / 3, 4 / 3
    pair = [(1 / mu_s, 1 / mu_t), (1 / mu_s, 2 / mu_t), (math.sqrt(2) / mu_s, 1 / mu_t)]
    # ordered pairs: each unordered pair twice; student (0,1)=1,(0,2)=1,(1,2)=√2; teacher 1, 2, 1
    want = 2 * sum(_huber(a, b) for a, b in pair) / 9
    assert rkd_distance(s, t).item() == pytest.approx(want, rel=1e-12)
    # paper-mode angles, the 6 distinct triplets: student cosines at vertices 0, 1, 2: 0, √½, √½;
    # teacher (collinear): vertex 0 and 2 -> +1, vertex 1 (middle) -> −1
    want_a = 2 * (_huber(0.0, 1.0) + _huber(math.sqrt(0.5), -1.0) + _huber(math.sqrt(0.5), 1.0)) / 6
    assert rkd_angle(s, t, mode="paper").item() == pytest.approx(want_a, rel=1e-12)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_rkd_is_zero_for_similar_geometry(mode):
    # rotated, scaled, translated copies keep every normalised distance and angle
    x = torch.randn(6, 3, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    y = 2.5 * x @ q + 1.0
    out = RKDLoss(mode=mode)(_feats(y), _feats(x), None)["rkd"]
    assert out.item() == pytest.approx(0.0, abs=1e-10)
    assert RKDLoss(mode=mode)(_feats(torch.randn(6, 3)), _feats(x.float()), None)["rkd"].item() > 0


def test_paper_mode_small_batches_give_zero():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    assert rkd_angle(s, t, mode="paper").item() == 0.0
    assert rkd_distance(s[:1], t[:1], mode="paper").item() == 0.0


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_rkd_gradient_check(mode):
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    loss = RKDLoss(mode=mode)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["rkd"], (s,))


def test_teacher_gets_no_gradient():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    RKDLoss()(_feats(s), _feats(t), None)["rkd"].backward()
    assert s.grad is not None and t.grad is None


def test_rkd_errors():
    feats = Features(logits=torch.zeros(2, 2), maps=(torch.randn(2, 3, 2, 2),))
    with pytest.raises(ValueError, match="student's penultimate vector.*Features.pooled.*head"):
        RKDLoss()(feats, _feats(torch.randn(2, 3)), None)
    with pytest.raises(ValueError, match="teacher's penultimate vector"):
        RKDLoss()(_feats(torch.randn(2, 3)), feats, None)
    with pytest.raises(ValueError, match="batch sizes differ"):
        RKDLoss()(_feats(torch.randn(2, 3)), _feats(torch.randn(3, 3)), None)
    with pytest.raises(ValueError, match="mode must be"):
        RKDLoss(mode="exact")
    with pytest.raises(ValueError, match="eps must be > 0"):
        RKDLoss(eps=0.0)


def test_rkd_half_precision_is_computed_in_float32():
    s, t = torch.randn(4, 8).half(), torch.randn(4, 8).half()
    out = RKDLoss()(_feats(s), _feats(t), None)["rkd"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, RKDLoss()(_feats(s.float()), _feats(t.float()), None)["rkd"])
