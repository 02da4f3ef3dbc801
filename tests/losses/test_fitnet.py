"""FitNet hint loss: RepDistiller's regressor cases against loop convolutions, the paper's Eq. 3, shapes,
gradients and errors."""

import pytest
import torch

from kdscene.losses import Features, FitNetLoss, TapInfo, hint_regressor
from tests.losses import nn_reference as ref
from tests.losses.conv_reference import conv2d, conv_transpose2d


def _tap(c, h, w=None, name="x"):
    return TapInfo(name, c, 1, (h, h if w is None else w))


def _feats(*maps):
    return Features(logits=torch.zeros(maps[0].shape[0], 2), maps=tuple(maps))


@pytest.mark.parametrize(
    ("s_size", "t_size", "kind", "kernel"),
    [
        (8, 4, torch.nn.Conv2d, (3, 3)),  # twice the hint: stride-2 3×3
        (4, 8, torch.nn.ConvTranspose2d, (4, 4)),  # half the hint: transposed 4×4, stride 2
        (4, 4, torch.nn.Conv2d, (1, 1)),  # equal: valid 1×1
        (7, 5, torch.nn.Conv2d, (3, 3)),  # larger, not twice: valid (7 − 5 + 1)²
    ],
)
def test_code_regressor_cases_map_to_the_hint_shape(s_size, t_size, kind, kernel):
    reg = hint_regressor(_tap(3, s_size), _tap(5, t_size), "code")
    assert isinstance(reg[0], kind) and reg[0].kernel_size == kernel
    assert isinstance(reg[1], torch.nn.BatchNorm2d) and isinstance(reg[2], torch.nn.ReLU)
    assert reg(torch.randn(2, 3, s_size, s_size)).shape == (2, 5, t_size, t_size)


def test_paper_regressor_is_a_valid_convolution_with_relu():
    reg = hint_regressor(_tap(3, 8), _tap(5, 4), "paper")
    assert reg[0].kernel_size == (5, 5) and reg[0].stride == (1, 1) and len(reg) == 2
    assert reg(torch.randn(1, 3, 8, 8)).shape == (1, 5, 4, 4)


@pytest.mark.parametrize(("s", "t", "mode"), [(3, 8, "code"), (4, 8, "paper"), (4, 5, "code")])
def test_a_guided_map_smaller_than_the_hint_is_refused(s, t, mode):
    with pytest.raises(ValueError, match=rf"guided map 'g' is \({s}, {s}\) but the hint 'h' is \({t}, {t}\)"):
        hint_regressor(_tap(3, s, name="g"), _tap(5, t, name="h"), mode)


def _ref_code(loss, s, t):
    conv, bn = loss.regressor[0], loss.regressor[1]
    y = conv_transpose2d(s, conv) if isinstance(conv, torch.nn.ConvTranspose2d) else conv2d(s, conv)
    return ((ref.relu(ref.batch_norm(y, bn, train=True)) - t) ** 2).mean()


@pytest.mark.parametrize(("s_size", "t_size"), [(6, 3), (3, 6), (5, 3)])
def test_code_mode_matches_loop_reference(s_size, t_size):
    torch.manual_seed(0)
    s_taps = [_tap(2, 9), _tap(3, s_size)]
    t_taps = [_tap(4, 9), _tap(4, t_size)]
    loss = FitNetLoss(s_taps, t_taps, weight=100.0).double()
    ref.randomise_batch_norms(loss, torch.Generator().manual_seed(1))
    s = torch.randn(3, 3, s_size, s_size, dtype=torch.float64)
    t = torch.randn(3, 4, t_size, t_size, dtype=torch.float64).relu()
    other_s, other_t = torch.randn(3, 2, 9, 9), torch.randn(3, 4, 9, 9)
    got = loss(_feats(other_s, s), _feats(other_t, t), None)["hint"].item()
    assert got == pytest.approx(100.0 * _ref_code(loss, ref.arr(s), ref.arr(t)), rel=1e-10)


def test_paper_mode_is_half_the_squared_error_summed_per_sample():
    torch.manual_seed(0)
    loss = FitNetLoss([_tap(2, 5)], [_tap(3, 3)], weight=1.0, select=0, mode="paper").double()
    s, t = torch.randn(2, 2, 5, 5, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    pred = ref.relu(conv2d(ref.arr(s), loss.regressor[0]))
    want = 0.5 * sum(((pred[b] - ref.arr(t)[b]) ** 2).sum() for b in range(2)) / 2
    assert loss(_feats(s), _feats(t), None)["hint"].item() == pytest.approx(want, rel=1e-12)


def test_hand_worked_zero_regressor_gives_the_mean_square_of_the_hint():
    loss = FitNetLoss([_tap(1, 2)], [_tap(1, 2)], weight=2.0, select=0).double().eval()
    torch.nn.init.zeros_(loss.regressor[0].weight)
    torch.nn.init.zeros_(loss.regressor[0].bias)  # BN(0) in eval mode = its bias 0 -> ReLU 0
    t = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    out = loss(_feats(torch.randn(1, 1, 2, 2, dtype=torch.float64)), _feats(t), None)["hint"]
    assert out.item() == pytest.approx(2.0 * (1 + 4 + 9 + 16) / 4)


def test_indices_pick_the_taps_and_adapters_follow_their_channels():
    s_taps = [_tap(8, 16, name="s1"), _tap(16, 8, name="s2"), _tap(32, 4, name="s3")]
    t_taps = [_tap(64, 16, name="t1"), _tap(128, 8, name="t2"), _tap(256, 4, name="t3")]
    loss = FitNetLoss(s_taps, t_taps)
    assert (loss.guided.name, loss.hint.name) == ("s2", "t2")
    assert loss.regressor[0].in_channels == 16 and loss.regressor[0].out_channels == 128
    loss = FitNetLoss(s_taps, t_taps, select=-1, teacher_select=1)
    assert (loss.guided.name, loss.hint.name) == ("s3", "t2")
    assert isinstance(loss.regressor[0], torch.nn.ConvTranspose2d)
    with pytest.raises(ValueError, match=r"teacher_select \[5\] out of range for 3 tapped maps"):
        FitNetLoss(s_taps, t_taps, teacher_select=5)
    with pytest.raises(ValueError, match="mode must be"):
        FitNetLoss(s_taps, t_taps, mode="two_stage")


def test_a_map_of_another_shape_than_probed_explains():
    loss = FitNetLoss([_tap(2, 4, name="g")], [_tap(3, 4, name="h")], select=0)
    msg = r"student map 'g' was probed as \(B, 2, 4, 4\) but is \(1, 2, 8, 8\)"
    with pytest.raises(ValueError, match=msg):
        loss(_feats(torch.randn(1, 2, 8, 8)), _feats(torch.randn(1, 3, 4, 4)), None)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_fitnet_gradient_check(mode):
    loss = FitNetLoss([_tap(2, 4)], [_tap(3, 2)], select=0, mode=mode).double()
    t = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    s = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["hint"], (s,))


def test_only_the_regressor_is_owned():
    loss = FitNetLoss([_tap(2, 4)], [_tap(3, 4)], select=0)
    n = sum(p.numel() for p in loss.parameters())
    assert n == 2 * 3 + 3 + 2 * 3  # 1×1 conv weight + bias, BN affine
