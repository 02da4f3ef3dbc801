"""Attention transfer against a float64 loop reference, in both modes."""

import math

import numpy as np
import pytest
import torch

from kdscene.losses import ATLoss, Features


def _feats(*maps):
    return Features(
        logits=torch.zeros(maps[0].shape[0], 2),
        maps=tuple(maps),
        names=tuple(f"m{i}" for i in range(len(maps))),
    )


def _ref_map(f, p):
    """Loop reference: for each sample, Σ_c |f_c|^p / C, flattened, divided by its L2 norm."""
    b, c, h, w = f.shape
    out = np.zeros((b, h * w))
    for i in range(b):
        am = [sum(abs(f[i, k, y, x]) ** p for k in range(c)) / c for y in range(h) for x in range(w)]
        norm = math.sqrt(sum(v * v for v in am))
        out[i] = np.array(am) / norm
    return out


def _ref_loss(s_maps, t_maps, p, mode):
    total = 0.0
    for s, t in zip(s_maps, t_maps):
        d = _ref_map(s, p) - _ref_map(t, p)
        total += (d**2).mean() if mode == "code" else 0.5 * np.sqrt((d**2).sum(axis=1)).mean()
    return total


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_at_matches_loop_reference(mode, p):
    s = [torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    t = [torch.randn(2, 6, 4, 4, dtype=torch.float64), torch.randn(2, 4, 2, 2, dtype=torch.float64)]
    got = ATLoss(weight=7.0, p=p, mode=mode)(_feats(*s), _feats(*t), None)["at"].item()
    want = 7.0 * _ref_loss([x.numpy() for x in s], [x.numpy() for x in t], p, mode)
    assert got == pytest.approx(want, rel=1e-5)


def test_code_mode_pools_larger_map_and_paper_mode_refuses():
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    pooled = torch.nn.functional.adaptive_avg_pool2d(s, 4)
    a = ATLoss(mode="code")(_feats(s), _feats(t), None)["at"]
    b = ATLoss(mode="code")(_feats(pooled), _feats(t), None)["at"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(4, 4\)"):
        ATLoss(mode="paper")(_feats(s), _feats(t), None)


def test_at_mismatched_tap_counts_raise():
    with pytest.raises(ValueError, match="pair up"):
        ATLoss()(
            _feats(torch.randn(1, 2, 2, 2)), _feats(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 1, 1)), None
        )


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_at_gradient_check(mode):
    s = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    loss = ATLoss(weight=1.0, mode=mode)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["at"], (s,))


def test_select_picks_pairs_and_accepts_negative_indices():
    s = [torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    t = [torch.randn(2, 6, 4, 4, dtype=torch.float64), torch.randn(2, 4, 2, 2, dtype=torch.float64)]
    only_second = ATLoss()(_feats(s[1]), _feats(t[1]), None)["at"]
    for select in ([1], [-1]):
        torch.testing.assert_close(ATLoss(select=select)(_feats(*s), _feats(*t), None)["at"], only_second)
    with pytest.raises(ValueError, match=r"ATLoss: select \[2\] out of range for 2 tapped maps"):
        ATLoss(select=[2])(_feats(*s), _feats(*t), None)
