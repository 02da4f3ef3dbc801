"""NST against a float64 loop reference of the polynomial-kernel MMD² (with pooling of mismatched sizes),
hand-worked values, tap selection, gradient check and errors."""

import math

import numpy as np
import pytest
import torch

from kdscene.losses import Features, NSTLoss, nst_mmd
from tests.losses.conv_reference import adaptive_pool


def _feats(*maps):
    return Features(maps=tuple(maps))


def _ref_mmd(s: np.ndarray, t: np.ndarray) -> float:
    """Per sample: unit channel patterns, k(x, y) = (x·y)², the three kernel means; then the batch mean."""
    if s.shape[-2] > t.shape[-2]:
        s = adaptive_pool(s, t.shape[-2:])
    elif s.shape[-2] < t.shape[-2]:
        t = adaptive_pool(t, s.shape[-2:])

    def patterns(x):
        flat = [c.reshape(-1) for c in x]
        return [v / math.sqrt(sum(e * e for e in v)) for v in flat]

    def kernel_mean(a, b):
        return sum(float(np.dot(x, y)) ** 2 for x in a for y in b) / (len(a) * len(b))

    values = []
    for b in range(s.shape[0]):
        fs, ft = patterns(s[b]), patterns(t[b])
        values.append(kernel_mean(ft, ft) + kernel_mean(fs, fs) - 2 * kernel_mean(fs, ft))
    return sum(values) / len(values)


def test_nst_matches_loop_reference_with_other_channel_counts_and_sizes():
    g = torch.Generator().manual_seed(0)
    shapes_s, shapes_t = [(3, 4, 4), (5, 2, 2), (2, 3, 3)], [(6, 2, 2), (4, 4, 4), (2, 3, 3)]
    s = [torch.randn(2, *shape, generator=g, dtype=torch.float64) for shape in shapes_s]
    t = [torch.randn(2, *shape, generator=g, dtype=torch.float64) for shape in shapes_t]
    got = NSTLoss(weight=3.0)(_feats(*s), _feats(*t), None)["nst"].item()
    want = 3.0 * sum(_ref_mmd(a.numpy(), b.numpy()) for a, b in zip(s, t))
    assert got == pytest.approx(want, rel=1e-10)


def test_nst_hand_worked_patterns():
    e1 = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)  # unit pattern (1, 0, 0, 0)
    e2 = torch.tensor([[[[0.0, 0.0], [0.0, -3.0]]]], dtype=torch.float64)  # unit pattern (0, 0, 0, −1)
    # one channel each: k(s,s) = k(t,t) = 1, k(s,t) = 0 -> 2; equal patterns -> 0
    assert nst_mmd(e1, e2).item() == pytest.approx(2.0, abs=1e-15)
    assert nst_mmd(e1, 5 * e1).item() == pytest.approx(0.0, abs=1e-15)
    # teacher channels {e1, e2}: k(t,t) mean ½, k(s,s) 1, k(s,t) mean ½ -> ½ + 1 − 1 = ½
    assert nst_mmd(e1, torch.cat([e1, e2], dim=1)).item() == pytest.approx(0.5, abs=1e-15)


def test_select_picks_the_pairs_and_the_default_uses_all():
    g = torch.Generator().manual_seed(1)
    s = [torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    t = [torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    parts = [nst_mmd(a, b).item() for a, b in zip(s, t)]
    assert NSTLoss()(_feats(*s), _feats(*t), None)["nst"].item() == pytest.approx(50 * sum(parts), rel=1e-12)
    got = NSTLoss(weight=1.0, select=[-1, 0])(_feats(*s), _feats(*t), None)["nst"].item()
    assert got == pytest.approx(parts[2] + parts[0], rel=1e-12)


def test_nst_gradient_check_and_the_teacher_term_is_detached():
    t = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: nst_mmd(x, t.detach()), (s,))
    (got,) = torch.autograd.grad(nst_mmd(s.detach(), t), t)
    # only the cross term −2·mean((f_S · f_T)²) depends on t with a gradient
    fs = s.detach().flatten(2) / s.detach().flatten(2).norm(dim=2, keepdim=True)
    ft = t.flatten(2) / t.flatten(2).norm(dim=2, keepdim=True)
    (want,) = torch.autograd.grad(-2 * torch.einsum("bin,bjn->bij", fs, ft).pow(2).mean(), t)
    torch.testing.assert_close(got, want)


def test_nst_errors_explain():
    one, two = _feats(torch.ones(1, 1, 2, 2)), _feats(*[torch.ones(1, 1, 2, 2)] * 2)
    with pytest.raises(ValueError, match=r"select \[3\] out of range for 2 tapped maps"):
        NSTLoss(select=[3])(two, two, None)
    with pytest.raises(ValueError, match="must pair up one to one"):
        NSTLoss()(one, two, None)
    with pytest.raises(ValueError, match="select is empty"):
        NSTLoss(select=[])
