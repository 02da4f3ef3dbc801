"""SemCKD against a float64 numpy reference of the whole loss (similarity MLPs, attention, projections in
training-mode BatchNorm, pooling), hand-worked invariants, the batch-size rule, shapes and errors."""

import math

import numpy as np
import pytest
import torch

from kdscene.losses import Features, SemCKDLoss, TapInfo
from tests.losses import nn_reference as ref
from tests.losses.conv_reference import adaptive_pool, linear

S_SHAPES = [(3, 4, 4), (5, 2, 2)]
T_SHAPES = [(4, 4, 4), (6, 2, 2), (2, 1, 1)]


def _taps(shapes):
    return [TapInfo(f"m{i}", c, 1, (h, w)) for i, (c, h, w) in enumerate(shapes)]


def _feats(maps):
    return Features(logits=torch.zeros(maps[0].shape[0], 2), maps=tuple(maps))


def _maps(shapes, b, gen):
    return [torch.randn(b, c, h, w, generator=gen, dtype=torch.float64) for c, h, w in shapes]


def _ref_embed(mlp, x):
    y = linear(ref.relu(linear(x, mlp.linear1)), mlp.linear2)
    return y / np.sqrt((y**2).sum(axis=1, keepdims=True))


def _ref_project(proj, x):
    y = ref.relu(ref.batch_norm(ref.conv1x1(x, proj[0]), proj[1], train=True))
    y = ref.relu(ref.batch_norm(ref.conv3x3(y, proj[3]), proj[4], train=True))
    return ref.conv1x1(y, proj[6])


def _ref_loss(loss, s_maps, t_maps):
    b = s_maps[0].shape[0]
    q = [_ref_embed(m, x.reshape(b, -1) @ x.reshape(b, -1).T) for m, x in zip(loss.queries, s_maps)]
    k = [_ref_embed(m, x.reshape(b, -1) @ x.reshape(b, -1).T) for m, x in zip(loss.keys, t_maps)]
    total = 0.0
    for n in range(b):
        for i, s in enumerate(s_maps):
            energy = [float(q[i][n] @ k[j][n]) for j in range(len(t_maps))]
            alpha = [math.exp(e) / sum(math.exp(v) for v in energy) for e in energy]
            for j, t in enumerate(t_maps):
                if s.shape[-2] > t.shape[-2]:
                    s_in, target = adaptive_pool(s, t.shape[-2:]), t
                else:
                    s_in, target = s, adaptive_pool(t, s.shape[-2:])
                diff = _ref_project(loss.projectors[i][j], s_in)[n] - target[n]
                total += alpha[j] * (diff**2).mean()
    return total / (b * len(s_maps))


def _build(batch=4, factor=2, **kw):
    torch.manual_seed(0)
    loss = SemCKDLoss(_taps(S_SHAPES), _taps(T_SHAPES), batch_size=batch, factor=factor, **kw).double()
    ref.randomise_batch_norms(loss, torch.Generator().manual_seed(1))
    return loss


def test_semckd_matches_numpy_reference_across_unequal_layer_counts_and_sizes():
    loss = _build(weight=3.0)
    gen = torch.Generator().manual_seed(2)
    s, t = _maps(S_SHAPES, 4, gen), _maps(T_SHAPES, 4, gen)
    got = loss(_feats(s), _feats(t), None)["semckd"].item()
    want = 3.0 * _ref_loss(loss, [ref.arr(x) for x in s], [ref.arr(x) for x in t])
    assert got == pytest.approx(want, rel=1e-10)


def test_attention_is_a_distribution_over_teacher_layers_per_sample_and_student_layer():
    loss = _build()
    gen = torch.Generator().manual_seed(3)
    alpha = loss.attention(_maps(S_SHAPES, 4, gen), _maps(T_SHAPES, 4, gen))
    assert alpha.shape == (4, 2, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(4, 2, dtype=torch.float64))


def test_equal_pair_losses_give_that_loss_whatever_the_attention():
    # zero last projection conv -> P_ij(s) = 0; teacher maps constant v -> every pair's MSE is v²,
    # and Σ_j α = 1 makes the loss v² (· weight) for any queries and keys
    loss = _build(weight=2.0)
    for row in loss.projectors:
        for proj in row:
            torch.nn.init.zeros_(proj[6].weight)
    gen = torch.Generator().manual_seed(4)
    t = [torch.full((4, c, h, w), 1.5, dtype=torch.float64) for c, h, w in T_SHAPES]
    out = loss(_feats(_maps(S_SHAPES, 4, gen)), _feats(t), None)["semckd"]
    assert out.item() == pytest.approx(2.0 * 1.5**2, rel=1e-12)


def test_adapters_follow_the_probed_channels_and_select():
    s_taps = _taps([(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)])
    t_taps = _taps([(24, 16, 16), (48, 8, 8), (96, 4, 4), (192, 2, 2)])
    loss = SemCKDLoss(s_taps, t_taps, batch_size=8, select=[-3, -2, -1], teacher_select=[2, 3])
    assert loss.select == (1, 2, 3) and loss.teacher_select == (2, 3)
    assert len(loss.queries) == 3 and len(loss.keys) == 2
    p = loss.projectors[0][1]  # student layer2 (16 ch) -> teacher layer4 (192 ch), M = 384
    assert (p[0].in_channels, p[0].out_channels, p[6].out_channels) == (16, 384, 192)
    assert loss.queries[0].linear1.in_features == 8 and loss.queries[0].linear2.out_features == 2
    small = SemCKDLoss(s_taps, t_taps, batch_size=8, mid_channels=5)
    assert small.projectors[3][3][3].weight.shape == (5, 5, 3, 3)


def test_a_batch_of_another_size_gives_a_zero_term_that_still_reaches_every_parameter():
    loss = _build(batch=4)
    gen = torch.Generator().manual_seed(5)
    out = loss(_feats(_maps(S_SHAPES, 3, gen)), _feats(_maps(T_SHAPES, 3, gen)), None)["semckd"]
    assert out.item() == 0.0
    out.backward()
    assert all(p.grad is not None and not p.grad.any() for p in loss.parameters())


def test_semckd_bad_configuration_explains():
    with pytest.raises(ValueError, match=r"batch_size // factor must be >= 1, got 3 // 4"):
        SemCKDLoss(_taps(S_SHAPES), _taps(T_SHAPES), batch_size=3)
    with pytest.raises(ValueError, match=r"teacher_select \[3\] out of range for 3 tapped maps"):
        SemCKDLoss(_taps(S_SHAPES), _taps(T_SHAPES), batch_size=8, teacher_select=[3])
    loss = SemCKDLoss(_taps(S_SHAPES), _taps(T_SHAPES), batch_size=4)
    bad = [torch.randn(4, 7, 4, 4), torch.randn(4, 5, 2, 2)]
    with pytest.raises(
        ValueError, match=r"student map 'm0' was probed as \(B, 3, H, W\) but is \(4, 7, 4, 4\)"
    ):
        loss(_feats(bad), _feats([torch.randn(4, c, h, w) for c, h, w in T_SHAPES]), None)


def test_semckd_gradient_check_through_queries_and_projections():
    loss = _build(batch=4)
    gen = torch.Generator().manual_seed(6)
    s0, s1 = (x.requires_grad_(True) for x in _maps(S_SHAPES, 4, gen))
    t = _maps(T_SHAPES, 4, gen)
    assert torch.autograd.gradcheck(
        lambda a, b: loss(_feats([a, b]), _feats(t), None)["semckd"], (s0, s1), fast_mode=True
    )


def test_teacher_select_defaults_to_the_student_indices():
    s_taps = _taps([(8, 8, 8), (16, 4, 4), (32, 2, 2), (64, 1, 1)])
    t_taps = _taps([(24, 8, 8), (48, 4, 4), (96, 2, 2)])
    assert SemCKDLoss(s_taps, t_taps, batch_size=8, select=[-2, -1]).teacher_select == (1, 2)
    assert SemCKDLoss(s_taps, t_taps, batch_size=8).teacher_select == (0, 1, 2)  # None: every teacher tap
    with pytest.raises(ValueError, match=r"select \(teacher_select=None uses it for the teacher too\) \[3\]"):
        SemCKDLoss(s_taps, t_taps, batch_size=8, select=[3])
