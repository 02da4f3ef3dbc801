"""VID against a float64 numpy reference (1×1 regressor, softplus variance, pooling), hand-worked values,
tap selection, adapter shapes and errors."""

import math

import numpy as np
import pytest
import torch

from kdscene.losses import Features, TapInfo, VIDLoss, VIDRegressor
from tests.losses import nn_reference as ref
from tests.losses.conv_reference import adaptive_pool


def _taps(*shapes):
    return [TapInfo(f"m{i}", c, 1, (h, w)) for i, (c, h, w) in enumerate(shapes)]


def _feats(*maps):
    return Features(logits=torch.zeros(maps[0].shape[0], 2), maps=tuple(maps))


def _ref_nll(reg: VIDRegressor, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pool the larger map, μ = W3 relu(W2 relu(W1 s)), σ² = log(1 + e^α) + ε, ½(log σ² + (t − μ)²/σ²)."""
    if s.shape[-2] > t.shape[-2]:
        s = adaptive_pool(s, t.shape[-2:])
    elif s.shape[-2] < t.shape[-2]:
        t = adaptive_pool(t, s.shape[-2:])
    mu = ref.conv1x1(ref.relu(ref.conv1x1(ref.relu(ref.conv1x1(s, reg.mean[0])), reg.mean[2])), reg.mean[4])
    var = np.array([math.log(1 + math.exp(a)) + reg.eps for a in ref.arr(reg.log_scale)])[None, :, None, None]
    return 0.5 * (np.log(var) + (t - mu) ** 2 / var)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_vid_matches_numpy_reference_with_mismatched_channels_and_sizes(reduction):
    torch.manual_seed(0)
    s_taps, t_taps = _taps((3, 4, 4), (2, 2, 2), (5, 2, 2)), _taps((4, 2, 2), (6, 4, 4), (3, 2, 2))
    loss = VIDLoss(s_taps, t_taps, weight=2.0, select=[0, 1, -1], reduction=reduction).double()
    for reg in loss.regressors:  # move σ² away from its initial value, differently per channel
        reg.log_scale.data = torch.randn_like(reg.log_scale)
    s = [torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in [(3, 4, 4), (2, 2, 2), (5, 2, 2)]]
    t = [torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in [(4, 2, 2), (6, 4, 4), (3, 2, 2)]]
    got = loss(_feats(*s), _feats(*t), None)["vid"].item()
    nlls = [_ref_nll(r, ref.arr(a), ref.arr(b)) for r, a, b in zip(loss.regressors, s, t)]
    per_pair = [n.mean() if reduction == "mean" else n.sum() / 2 for n in nlls]
    assert got == pytest.approx(2.0 * sum(per_pair), rel=1e-10)


def test_vid_hand_worked_with_a_zero_mean_regressor():
    # μ = 0 and σ² = init_pred_var = 5: NLL = ½(log 5 + t²/5), averaged over the elements
    loss = VIDLoss(_taps((2, 2, 2)), _taps((1, 2, 2)), init_pred_var=5.0).double()
    for conv in loss.regressors[0].mean[::2]:
        conv.weight.data.zero_()
    t = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]]], dtype=torch.float64)
    got = loss(_feats(torch.randn(1, 2, 2, 2, dtype=torch.float64)), _feats(t), None)["vid"].item()
    # α is stored in float32 at construction: σ² = 5 to float32 precision
    assert got == pytest.approx(0.5 * (math.log(5.0) + (1 + 4 + 0 + 1) / 4 / 5.0), rel=1e-7)


def test_initial_variance_equals_init_pred_var():
    reg = VIDRegressor(3, 4, 5, init_pred_var=2.5, eps=1e-3).double()
    torch.testing.assert_close(reg.variance(), torch.full((5,), 2.5, dtype=torch.float64))


def test_select_picks_pairs_and_adapters_follow_the_probed_channels():
    s_taps, t_taps = (
        _taps((8, 8, 8), (16, 4, 4), (32, 2, 2), (64, 1, 1)),
        _taps((24, 8, 8), (48, 4, 4), (96, 2, 2), (192, 1, 1)),
    )
    loss = VIDLoss(s_taps, t_taps, select=[-3, -2, -1])
    assert loss.select == (1, 2, 3) and len(loss.regressors) == 3
    first = loss.regressors[0].mean
    assert (first[0].in_channels, first[0].out_channels, first[4].out_channels) == (16, 48, 48)
    assert VIDLoss(s_taps, t_taps, mid_channels=7).regressors[3].mean[2].weight.shape == (7, 7, 1, 1)
    assert len(VIDLoss(s_taps, t_taps).regressors) == 4


def test_vid_bad_configuration_explains():
    with pytest.raises(ValueError, match=r"select \[4\] out of range for 4 tapped maps"):
        VIDLoss(_taps((2, 2, 2)) * 4, _taps((2, 2, 2)) * 4, select=[4])
    with pytest.raises(ValueError, match="pair up one to one"):
        VIDLoss(_taps((2, 2, 2)), _taps((2, 2, 2), (2, 1, 1)))
    with pytest.raises(ValueError, match="reduction must be"):
        VIDLoss(_taps((2, 2, 2)), _taps((2, 2, 2)), reduction="none")
    loss = VIDLoss(_taps((2, 2, 2)), _taps((3, 2, 2)))
    with pytest.raises(
        ValueError, match=r"teacher map 'm0' was probed as \(B, 3, H, W\) but is \(1, 4, 2, 2\)"
    ):
        loss(_feats(torch.randn(1, 2, 2, 2)), _feats(torch.randn(1, 4, 2, 2)), None)


def test_vid_gradient_check_on_student_map_and_variance():
    loss = VIDLoss(_taps((2, 3, 3)), _taps((3, 3, 3))).double()
    t = torch.randn(2, 3, 3, 3, dtype=torch.float64)

    def f(s, alpha):
        args = (_feats(s), _feats(t), None)
        return torch.func.functional_call(loss, {"regressors.0.log_scale": alpha}, args)["vid"]

    s = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (s, alpha))
