"""OFD: the margin against scipy's numerical integration of E[x | x < 0], the partial L2 distance and the
whole loss against float64 loop references, the teacher BatchNorm lookup (BasicBlock, Bottleneck, kdscene's
CIFAR block), gradients and errors."""

import math

import numpy as np
import pytest
import torch
import torchvision
from scipy import integrate, stats
from torchvision.models.resnet import BasicBlock, Bottleneck

from kdscene.features import FeatureTap, probe
from kdscene.losses import Features, OFDLoss, TapInfo, ofd_margin, partial_l2
from kdscene.losses.ofd import gaussian_margin
from kdscene.models.cifar_resnet import BasicBlock as CifarBlock
from tests.losses import nn_reference as ref
from tests.losses.conv_reference import adaptive_pool


def _integrated_margin(mu: float, sigma: float) -> float:
    """∫_{−∞}^0 x p(x) dx / ∫_{−∞}^0 p(x) dx for x ~ N(mu, sigma²), by quadrature."""
    pdf = stats.norm(mu, abs(sigma)).pdf
    mass = integrate.quad(pdf, -np.inf, 0.0, epsabs=1e-14, epsrel=1e-12)[0]
    first = integrate.quad(lambda x: x * pdf(x), -np.inf, 0.0, epsabs=1e-14, epsrel=1e-12)[0]
    return first / mass


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (1.5, 0.7), (-2.0, 1.0), (0.3, -0.5), (2.5, 0.9)])
def test_margin_is_the_mean_of_the_negative_responses_by_numerical_integration(mu, sigma):
    assert gaussian_margin(mu, sigma) == pytest.approx(_integrated_margin(mu, sigma), rel=1e-8)


def test_margin_of_a_negligible_negative_tail_and_of_zero_spread():
    # Φ(−4) ≈ 3e-5 ≤ 0.001: the code's −3σ
    assert gaussian_margin(4.0, 1.0) == -3.0
    assert gaussian_margin(7.0, -2.0) == -6.0  # Φ(−3.5) ≈ 2e-4; Φ(−3) ≈ 0.0013 would not be
    assert gaussian_margin(-0.4, 0.0) == -0.4 and gaussian_margin(0.7, 0.0) == 0.0


def test_margins_are_read_per_channel_from_the_batchnorm_affine_parameters():
    bn = torch.nn.BatchNorm2d(3)
    bn.bias.data = torch.tensor([0.0, 1.5, -2.0])
    bn.weight.data = torch.tensor([1.0, 0.7, -1.0])
    want = [_integrated_margin(m, s) for m, s in [(0.0, 1.0), (1.5, 0.7), (-2.0, 1.0)]]
    assert ofd_margin(bn).tolist() == pytest.approx(want, rel=1e-6)  # stored in float32


def _ref_partial_l2(s: np.ndarray, t: np.ndarray, m: np.ndarray) -> float:
    """Element by element: T = max(t, m); nothing where s ≤ T ≤ 0, (s − T)² elsewhere; summed, / B."""
    total = 0.0
    for idx in np.ndindex(*s.shape):
        target = max(t[idx], m[idx[1]])
        if not (s[idx] <= target <= 0):
            total += (s[idx] - target) ** 2
    return total / s.shape[0]


def test_partial_l2_hand_worked():
    s = torch.tensor([-2.0, -0.5, 1.0, 0.5], dtype=torch.float64).view(1, 1, 2, 2)
    t = torch.tensor([-1.0, -1.0, -1.0, 2.0], dtype=torch.float64).view(1, 1, 2, 2)
    # T = (−0.8, −0.8, −0.8, 2): 0 (S below a negative T) + 0.3² + 1.8² + 1.5²
    got = partial_l2(s, t, torch.tensor([-0.8], dtype=torch.float64)).item()
    assert got == pytest.approx(0.09 + 3.24 + 2.25, rel=1e-12)


def test_partial_l2_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(3, 4, 2, 3, generator=g, dtype=torch.float64) for _ in range(2))
    m = -torch.rand(4, generator=g, dtype=torch.float64)
    assert partial_l2(s, t, m).item() == pytest.approx(
        _ref_partial_l2(s.numpy(), t.numpy(), m.numpy()), rel=1e-12
    )


def _teacher(blocks):
    """A module whose stages layer1.. each end in the given block (only the BatchNorms are read)."""
    net = torch.nn.Module()
    for i, block in enumerate(blocks):
        net.add_module(f"layer{i + 1}", torch.nn.Sequential(block))
    ref.randomise_batch_norms(net, torch.Generator().manual_seed(1))
    return net


def _taps(shapes, suffix=""):
    return [TapInfo(f"layer{i + 1}{suffix}", c, 1, (h, w)) for i, (c, h, w) in enumerate(shapes)]


def test_ofd_matches_float64_reference_over_three_levels():
    blocks = [BasicBlock(4, 4), Bottleneck(8, 2), CifarBlock(6, 6, 1)]  # bn2 (4), bn3 (8), bn2 (6)
    teacher_net = _teacher(blocks).double()
    s_shapes, t_shapes = [(3, 4, 4), (5, 2, 2), (2, 2, 2)], [(4, 4, 4), (8, 4, 4), (6, 2, 2)]
    loss = OFDLoss(_taps(s_shapes), _taps(t_shapes, ":pre"), teacher_net, weight=0.3).double()
    g = torch.Generator().manual_seed(2)
    for conn in loss.connectors:
        conn[1].weight.data = torch.rand(conn[1].num_features, generator=g, dtype=torch.float64) + 0.5
        conn[1].bias.data = torch.randn(conn[1].num_features, generator=g, dtype=torch.float64)
    s = [torch.randn(2, *shape, generator=g, dtype=torch.float64) for shape in s_shapes]
    t = [torch.randn(2, *shape, generator=g, dtype=torch.float64) for shape in t_shapes]
    got = loss(Features(maps=tuple(s)), Features(maps=tuple(t)), None)["ofd"].item()
    bns = [blocks[0].bn2, blocks[1].bn3, blocks[2].bn2]
    want = 0.0
    for level, (x, y, conn, bn) in enumerate(zip(s, t, loss.connectors, bns)):
        out = ref.batch_norm(ref.conv1x1(x.numpy(), conn[0]), conn[1], train=True)
        target = y.numpy() if y.shape[-2:] == x.shape[-2:] else adaptive_pool(y.numpy(), x.shape[-2:])
        margin = np.array([_integrated_margin(m, sd) for m, sd in zip(bn.bias.tolist(), bn.weight.tolist())])
        want += _ref_partial_l2(out, target, margin) / 2 ** (2 - level)  # level weights ¼, ½, 1
    assert got == pytest.approx(0.3 * want, rel=1e-6)  # margins are stored in float32, as the code's


def test_margins_come_from_a_torchvision_resnets_last_blocks_and_are_saved():
    net = torchvision.models.resnet18(num_classes=3)
    ref.randomise_batch_norms(net, torch.Generator().manual_seed(0))
    layers = ["layer2:pre", "layer4:pre"]
    taps = probe(FeatureTap(net, layers), 32)
    loss = OFDLoss(taps, taps, net)
    for margin, layer in zip(loss.margins(), (net.layer2, net.layer4)):
        bn = layer[-1].bn2
        want = [gaussian_margin(m, s) for m, s in zip(bn.bias.tolist(), bn.weight.tolist())]
        assert margin.tolist() == pytest.approx(want, rel=1e-6)
    assert {"margin0", "margin1"} <= set(loss.state_dict())
    assert loss.level_weights == [0.5, 1.0]


def test_the_student_connector_is_a_1x1_conv_and_batchnorm_initialised_as_the_code():
    loss = OFDLoss(_taps([(3, 2, 2)]), _taps([(200, 2, 2)], ":pre"), _teacher([BasicBlock(200, 200)]))
    conv, bn = loss.connectors[0]
    assert (
        conv.kernel_size == (1, 1) and conv.bias is None and (conv.in_channels, conv.out_channels) == (3, 200)
    )
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.15)
    assert bn.weight.eq(1).all() and bn.bias.eq(0).all()


def test_ofd_gradient_check_on_the_student_map_and_the_connector():
    loss = OFDLoss(_taps([(2, 3, 3)]), _taps([(3, 3, 3)], ":pre"), _teacher([BasicBlock(3, 3)])).double()
    t = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    weight = loss.connectors[0][0].weight.detach().clone().requires_grad_()

    def f(s, w):
        args = (Features(maps=(s,)), Features(maps=(t,)), None)
        return torch.func.functional_call(loss, {"connectors.0.0.weight": w}, args)["ofd"]

    s = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (s, weight))


def test_ofd_errors_explain():
    teacher = _teacher([BasicBlock(3, 3)])
    with pytest.raises(ValueError, match=r"'layer1' is not a pre-activation tap.*'layer1:pre'"):
        OFDLoss(_taps([(2, 3, 3)]), _taps([(3, 3, 3)]), teacher)
    with pytest.raises(ValueError, match="needs teacher_network"):
        OFDLoss(_taps([(2, 3, 3)]), _taps([(3, 3, 3)], ":pre"))
    relu_only = torch.nn.Module()
    relu_only.add_module("layer1", torch.nn.Sequential(torch.nn.Sequential()))
    relu_only.layer1[0].add_module("relu", torch.nn.ReLU())
    with pytest.raises(ValueError, match="neither `bn3` .* nor `bn2`"):
        OFDLoss(_taps([(2, 3, 3)]), _taps([(3, 3, 3)], ":pre"), relu_only)
    with pytest.raises(ValueError, match="pair up one to one"):
        OFDLoss(_taps([(2, 3, 3)] * 2), _taps([(3, 3, 3)], ":pre"), teacher)
    with pytest.raises(ValueError, match=r"tap 'layer1:pre' has 5 channels, its BatchNorm 3"):
        OFDLoss(_taps([(2, 3, 3)]), _taps([(5, 3, 3)], ":pre"), teacher)
