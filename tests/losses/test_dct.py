"""DCT-driven attention loss against a float64 loop reference, scipy, numpy and torch-dct."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch_dct

from kdscene.losses import DCTAttentionLoss, Features, dct_frequency_map
from kdscene.losses.dct import channel_energy, spectrum_2d

VARIANTS = ["submission", "final", "dct2"]
BACKENDS = {
    "submission": ["matmul", "fft"],
    "final": ["matmul", "fft"],
    "dct2": ["matmul", "fft", "torch_dct"],
}
ALL_CASES = [(v, b) for v in VARIANTS for b in BACKENDS[v]]


def _feats(*maps, logits=None):
    b = maps[0].shape[0]
    return Features(
        logits=torch.zeros(b, 3) if logits is None else logits,
        maps=tuple(maps),
        names=tuple(f"layer{i + 1}" for i in range(len(maps))),
    )


# ---------------- slow float64 reference: explicit loops, scipy for the DCT-II ----------------
def _ref_energy(f):
    c, h, w = f.shape
    return np.array([[sum(f[k, y, x] ** 2 for k in range(c)) / c for x in range(w)] for y in range(h)])


def _ref_norm(x, variant, eps):
    lo, hi = x.min(), x.max()
    return (x - lo) / ((hi if variant == "submission" else hi - lo) + eps)


def _ref_re_dft(z):
    h, w = z.shape
    out = np.zeros((h, w))
    for u in range(h):
        for v in range(w):
            out[u, v] = sum(
                z[y, x] * math.cos(2 * math.pi * (u * y / h + v * x / w)) for y in range(h) for x in range(w)
            )
    return out


def _ref_freq(f, variant, eps=0.0):
    a = _ref_norm(_ref_energy(f), variant, eps)
    z = a - a.mean()
    if variant == "dct2":
        d = scipy.fft.dctn(z, type=2, norm="ortho")
    else:
        d = _ref_re_dft(z)
        d = np.abs(d) if variant == "submission" else d
    return _ref_norm(d, variant, eps)


def _ref_loss(s_maps, t_maps, t_logits, labels, variant, pred_guide, eps):
    b = s_maps[0].shape[0]
    per_sample = np.zeros(b)
    for s, t in zip(s_maps, t_maps):
        for i in range(b):
            diff = _ref_freq(s[i], variant, eps) - _ref_freq(t[i], variant, eps)
            per_sample[i] += math.sqrt((diff**2).sum())
    if pred_guide:
        per_sample *= [float(np.argmax(t_logits[i]) == labels[i]) for i in range(b)]
    return per_sample.sum() / b


def _random_pair(dtype=torch.float64):
    """Three samples, two scales (non-square 4×5 and 3×3), channels 3/2 (student) vs 5/4 (teacher)."""
    s = [torch.randn(3, 3, 4, 5, dtype=dtype), torch.randn(3, 2, 3, 3, dtype=dtype)]
    t = [torch.randn(3, 5, 4, 5, dtype=dtype).relu(), torch.randn(3, 4, 3, 3, dtype=dtype).relu()]
    t_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]], dtype=dtype)
    labels = torch.tensor([0, 2, 2])  # the teacher misclassifies sample 1
    return s, t, t_logits, labels


@pytest.mark.parametrize(("pred_guide", "eps"), [(True, 0.0), (False, 0.0), (True, 0.3)])
@pytest.mark.parametrize(("variant", "backend"), ALL_CASES)
def test_loss_matches_float64_loop_reference(variant, backend, pred_guide, eps):
    # With eps = 0 the activation-map normalisation cancels (offset: centring; scale: spectrum
    # normalisation); a large eps makes its denominator, max vs max − min, visible.
    s, t, t_logits, labels = _random_pair()
    loss = DCTAttentionLoss(weight=2.5, variant=variant, pred_guide=pred_guide, eps=eps, backend=backend)
    got = loss(_feats(*s), _feats(*t, logits=t_logits), labels)["dct"].item()
    want = _ref_loss(
        [x.numpy() for x in s],
        [x.numpy() for x in t],
        t_logits.numpy(),
        labels.numpy(),
        variant,
        pred_guide,
        eps,
    )
    assert got == pytest.approx(2.5 * want, rel=1e-10)


def test_hand_worked_two_by_two_case():
    # Student A = [[1,0],[0,0]], teacher A = [[0,0],[0,4]] (one channel). Centred maps
    # [[.75,-.25],[-.25,-.25]] and [[-.25,-.25],[-.25,.75]]; on 2×2, Re DFT = Hadamard sandwich:
    # student D = [[0,1],[1,1]], teacher D = [[0,-1],[-1,1]]. |D| agree ("submission": 0); "final"
    # maps the teacher to [[.5,0],[0,1]], distance √(.25 + 1 + 1) = 1.5; the orthonormal DCT-II is
    # D/2 here, which the (x−min)/(max−min) normalisation cancels: 1.5 again.
    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]]], dtype=torch.float64)
    want = {"submission": 0.0, "final": 1.5, "dct2": 1.5}
    for variant, backend in ALL_CASES:
        got = DCTAttentionLoss(variant=variant, pred_guide=False, backend=backend)(_feats(s), _feats(t), None)
        assert got["dct"].item() == pytest.approx(want[variant], abs=1e-12), (variant, backend)


def test_teacher_guidance_averages_over_the_whole_batch():
    s, t, t_logits, labels = _random_pair()
    full = DCTAttentionLoss(pred_guide=False)
    per_sample = [
        full(_feats(*(x[i : i + 1] for x in s)), _feats(*(x[i : i + 1] for x in t)), None)["dct"].item()
        for i in range(3)
    ]
    got = DCTAttentionLoss()(_feats(*s), _feats(*t, logits=t_logits), labels)["dct"].item()
    assert got == pytest.approx((per_sample[0] + per_sample[2]) / 3, rel=1e-12)  # sample 1 zeroed, /3
    all_wrong = DCTAttentionLoss()(_feats(*s), _feats(*t, logits=t_logits), labels + 1)["dct"]
    assert all_wrong.item() == 0.0


@pytest.mark.parametrize("backend", ["matmul", "fft", "torch_dct"])
@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 56, 56), (3, 7, 1)])
def test_dct2_transform_matches_scipy_and_torch_dct(shape, backend):
    z = torch.randn(*shape, dtype=torch.float64)
    got = spectrum_2d(z, "dct2", backend)
    want = scipy.fft.dctn(z.numpy(), type=2, norm="ortho", axes=(1, 2))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    torch.testing.assert_close(got, torch_dct.dct_2d(z, norm="ortho"), atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", ["matmul", "fft"])
@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 56, 56), (2, 14, 14)])
def test_re_dft_transform_matches_numpy_and_torch_fft(shape, backend):
    z = torch.randn(*shape, dtype=torch.float64)
    got = spectrum_2d(z, "re_dft", backend)
    np.testing.assert_allclose(got.numpy(), np.fft.fft2(z.numpy()).real, atol=1e-11)
    authors = torch.fft.fft(torch.fft.fft(z, dim=1), dim=2).real  # the code's H-then-W order
    torch.testing.assert_close(got, authors, atol=1e-11, rtol=0)


def test_channel_energy_is_channel_mean_of_squares_in_both_layouts():
    x = torch.randn(2, 130, 3, 4, dtype=torch.float64)  # 130 channels: uneven CPU chunks
    want = x.pow(2).mean(1)
    torch.testing.assert_close(channel_energy(x), want)
    torch.testing.assert_close(channel_energy(x.contiguous(memory_format=torch.channels_last)), want)


def test_channel_energy_gradient_check_including_all_zero_pixels():
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    x[:, :, 0, 0] = 0.0  # dead-ReLU pixel: the norm is 0 there
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.contiguous(memory_format=fmt).requires_grad_()
        assert torch.autograd.gradcheck(channel_energy, (xi,))


@pytest.mark.parametrize(("variant", "backend"), ALL_CASES)
def test_gradient_check_float64(variant, backend):
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 4, 5, dtype=torch.float64)
    loss = DCTAttentionLoss(variant=variant, pred_guide=False, backend=backend)
    assert torch.autograd.gradcheck(lambda x: loss(_feats(x), _feats(t), None)["dct"], (s,))


@pytest.mark.parametrize("variant", VARIANTS)
def test_constant_map_is_nan_with_eps_zero_and_finite_with_eps(variant):
    s = torch.ones(2, 3, 4, 4, requires_grad=True)  # constant activation map: 0/0 in the code
    t = torch.randn(2, 5, 4, 4)
    exact = DCTAttentionLoss(variant=variant, pred_guide=False)(_feats(s), _feats(t), None)["dct"]
    assert torch.isnan(exact)
    guarded = DCTAttentionLoss(variant=variant, pred_guide=False, eps=1e-6)(_feats(s), _feats(t), None)
    assert torch.isfinite(guarded["dct"])
    guarded["dct"].backward()
    assert torch.isfinite(s.grad).all()


def test_spatial_size_mismatch_names_scale_and_both_sizes():
    s = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 3)]
    t = [torch.randn(2, 5, 4, 4), torch.randn(2, 5, 2, 2)]
    with pytest.raises(ValueError, match=r"scale 1 \('layer2'\).*\(2, 3\).*\(2, 2\)"):
        DCTAttentionLoss(pred_guide=False)(_feats(*s), _feats(*t), None)


def test_bad_options_and_missing_inputs_raise():
    with pytest.raises(ValueError, match="torch_dct.*dct2"):
        DCTAttentionLoss(variant="submission", backend="torch_dct")
    with pytest.raises(ValueError, match="variant"):
        DCTAttentionLoss(variant="dct")
    with pytest.raises(ValueError, match="eps"):
        DCTAttentionLoss(eps=-1.0)
    f = _feats(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="teacher"):
        DCTAttentionLoss()(f, None, torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        DCTAttentionLoss()(f, f, None)
    with pytest.raises(ValueError, match=r"select \[2\] out of range"):
        DCTAttentionLoss(select=[2], pred_guide=False)(f, f, None)


def test_select_picks_maps_and_accepts_negative_indices():
    s, t, _, _ = _random_pair()
    only_second = DCTAttentionLoss(pred_guide=False)(_feats(s[1]), _feats(t[1]), None)["dct"]
    for select in ([1], [-1]):
        got = DCTAttentionLoss(pred_guide=False, select=select)(_feats(*s), _feats(*t), None)["dct"]
        torch.testing.assert_close(got, only_second)


def test_bf16_autocast_is_finite_and_close_to_float32():
    s = [torch.randn(4, 16, 14, 14).bfloat16().requires_grad_(), torch.randn(4, 32, 7, 7).bfloat16()]
    t = [torch.randn(4, 64, 14, 14).relu().bfloat16(), torch.randn(4, 128, 7, 7).relu().bfloat16()]
    for variant in VARIANTS:
        loss = DCTAttentionLoss(variant=variant, pred_guide=False)
        want = loss(_feats(*(x.detach().float() for x in s)), _feats(*(x.float() for x in t)), None)["dct"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = loss(_feats(*s), _feats(*t), None)["dct"]
        assert got.dtype == torch.float32 and torch.isfinite(got)
        assert got.item() == pytest.approx(want.item(), rel=2e-2)
        got.backward()
        assert s[0].grad.dtype == torch.bfloat16 and torch.isfinite(s[0].grad).all()
        s[0].grad = None


@pytest.mark.parametrize(("variant", "backend"), ALL_CASES)
def test_channels_last_equals_contiguous_values_and_gradients(variant, backend):
    s = torch.randn(2, 70, 8, 8)
    t = torch.randn(2, 96, 8, 8).relu()
    loss = DCTAttentionLoss(variant=variant, pred_guide=False, backend=backend)
    out = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        si = s.detach().contiguous(memory_format=fmt).requires_grad_()
        value = loss(_feats(si), _feats(t.contiguous(memory_format=fmt)), None)["dct"]
        value.backward()
        out.append((value.detach(), si.grad.contiguous()))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_backends_agree_in_float32(variant):
    s = [torch.randn(2, 8, 28, 28), torch.randn(2, 16, 7, 7)]
    t = [torch.randn(2, 32, 28, 28).relu(), torch.randn(2, 64, 7, 7).relu()]
    values = [
        DCTAttentionLoss(variant=variant, pred_guide=False, backend=b)(_feats(*s), _feats(*t), None)["dct"]
        for b in ["auto", *BACKENDS[variant]]
    ]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-5, atol=1e-5)


def test_frequency_map_is_public_and_normalised():
    f = torch.randn(2, 6, 5, 7)
    for variant in VARIANTS:
        d = dct_frequency_map(f, variant=variant)
        assert d.shape == (2, 5, 7)
        assert torch.allclose(d.flatten(1).amin(1), torch.zeros(2), atol=1e-6)
        if variant != "submission":  # (x − min)/(max − min) spans exactly [0, 1]
            assert torch.allclose(d.flatten(1).amax(1), torch.ones(2))
    ref = _ref_freq(f[0].double().numpy(), "final")
    np.testing.assert_allclose(dct_frequency_map(f.double(), "final")[0].numpy(), ref, atol=1e-12)


def test_without_teacher_guidance_no_logits_are_needed():
    s, t, _, _ = _random_pair()
    with_logits = DCTAttentionLoss(pred_guide=False)(_feats(*s), _feats(*t), None)["dct"]
    bare_s, bare_t = Features(maps=tuple(s)), Features(maps=tuple(t))
    torch.testing.assert_close(DCTAttentionLoss(pred_guide=False)(bare_s, bare_t, None)["dct"], with_logits)
    with pytest.raises(ValueError, match=r"DCTAttentionLoss\(pred_guide=True\) needs the teacher's logits"):
        DCTAttentionLoss()(bare_s, bare_t, torch.zeros(3, dtype=torch.long))


def _taps(*sizes):
    from kdscene.losses import TapInfo

    return [TapInfo(f"layer{i + 1}", 8, 32 // s, (s, s)) for i, s in enumerate(sizes)]


def test_a_1x1_tap_with_eps_0_is_refused_at_construction_with_the_fix_named():
    with pytest.raises(ValueError, match=r"tap 3 \('layer4'\) is 1x1 .* 0/0 = NaN .* distill.terms.dct.eps"):
        DCTAttentionLoss(student_taps=_taps(8, 4, 2, 1), teacher_taps=_taps(8, 4, 2, 1))
    # the same maps are fine with eps > 0, or with the 1x1 tap left out
    DCTAttentionLoss(eps=1e-8, student_taps=_taps(8, 4, 2, 1), teacher_taps=_taps(8, 4, 2, 1))
    DCTAttentionLoss(select=[0, 1, 2], student_taps=_taps(8, 4, 2, 1), teacher_taps=_taps(8, 4, 2, 1))


def test_the_refused_configuration_is_indeed_nan_and_eps_makes_it_finite():
    s, t = torch.rand(2, 8, 1, 1), torch.rand(2, 8, 1, 1)
    feats = [Features(logits=torch.zeros(2, 3), maps=(m,)) for m in (s, t)]
    nan = DCTAttentionLoss(pred_guide=False)(*feats, torch.zeros(2, dtype=torch.long))["dct"]
    ok = DCTAttentionLoss(pred_guide=False, eps=1e-8)(*feats, torch.zeros(2, dtype=torch.long))["dct"]
    assert torch.isnan(nan) and torch.isfinite(ok)


def test_paired_taps_of_different_sizes_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"tap 1 is \(4, 4\) in the student .* \(2, 2\) in the teacher"):
        DCTAttentionLoss(student_taps=_taps(8, 4), teacher_taps=_taps(8, 2))
