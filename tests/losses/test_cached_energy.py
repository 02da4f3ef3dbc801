"""AT and DCT from a teacher cache: the teacher's channel energy in place of its maps gives the same loss
(exactly in float64, within float16 rounding from a float16 cache); losses that need more are named."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from kdscene.cache import check_cacheable, live_teacher_reason
from kdscene.features import Features, TapInfo
from kdscene.losses import (
    ATLoss,
    CRDLoss,
    CrossEntropyLoss,
    DCTAttentionLoss,
    DKDLoss,
    FAMKDLoss,
    FitNetLoss,
    KDLoss,
    OFDLoss,
    ReviewKDLoss,
    SRMLoss,
    VIDLoss,
)
from tests.losses.test_at import _ref_loss


def _energy_loop(f: torch.Tensor) -> torch.Tensor:
    """(1/C)·Σ_c F_c², one channel at a time."""
    out = torch.zeros(f.shape[0], *f.shape[2:], dtype=f.dtype)
    for c in range(f.shape[1]):
        out += f[:, c] ** 2
    return out / f.shape[1]


def _pair(dtype=torch.float64, sizes=(8, 4, 2)):
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(4, 3, h, h, generator=g, dtype=dtype) for h in sizes]
    t = [torch.randn(4, 5, h, h, generator=g, dtype=dtype).relu() + 0.1 for h in sizes]
    logits = torch.randn(4, 6, generator=g, dtype=dtype)
    return s, t, logits


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_at_from_energy_equals_the_float64_loop_reference(mode):
    s, t, _ = _pair()
    cached = Features(energy=tuple(_energy_loop(x) for x in t))
    got = ATLoss(weight=3.0, mode=mode)(Features(maps=tuple(s)), cached, None)["at"].item()
    want = 3.0 * _ref_loss([x.numpy() for x in s], [x.numpy() for x in t], 2.0, mode)
    assert got == pytest.approx(want, rel=1e-10)


def test_at_from_energy_pools_a_larger_student_map_as_the_code_does():
    s, t, _ = _pair()
    big = [torch.nn.functional.interpolate(x, scale_factor=2) for x in s]  # student maps twice the size
    live = ATLoss()(Features(maps=tuple(big)), Features(maps=tuple(t)), None)["at"]
    cached = ATLoss()(Features(maps=tuple(big)), Features(energy=tuple(_energy_loop(x) for x in t)), None)[
        "at"
    ]
    torch.testing.assert_close(cached, live, rtol=1e-12, atol=0)


def test_at_refuses_a_cached_teacher_map_larger_than_the_students():
    s, t, _ = _pair()
    small = [torch.nn.functional.avg_pool2d(x, 2) for x in s]
    with pytest.raises(ValueError, match="larger than the student's.*live teacher"):
        ATLoss()(Features(maps=tuple(small)), Features(energy=tuple(_energy_loop(x) for x in t)), None)


def test_at_with_p_other_than_2_needs_the_live_teacher():
    s, t, _ = _pair()
    assert live_teacher_reason(ATLoss(p=2.0)) is None
    assert "p = 2 only" in live_teacher_reason(ATLoss(p=1.0))
    with pytest.raises(ValueError, match="ATLoss\\(p=1.0\\)"):
        ATLoss(p=1.0)(Features(maps=tuple(s)), Features(energy=tuple(_energy_loop(x) for x in t)), None)


@pytest.mark.parametrize("variant", ["submission", "final", "dct2"])
def test_dct_from_energy_equals_dct_from_maps(variant):
    s, t, logits = _pair(sizes=(8, 4, 3))
    labels = logits.argmax(1)
    labels[0] = (labels[0] + 1) % 6  # the guidance masks one sample
    loss = DCTAttentionLoss(variant=variant)
    live = loss(Features(maps=tuple(s)), Features(logits=logits, maps=tuple(t)), labels)["dct"]
    cached = Features(logits=logits, energy=tuple(_energy_loop(x) for x in t))
    torch.testing.assert_close(loss(Features(maps=tuple(s)), cached, labels)["dct"], live, rtol=1e-10, atol=0)


def test_a_float16_cache_changes_at_and_dct_only_by_its_rounding():
    s, t, logits = _pair(dtype=torch.float32, sizes=(12, 6, 3))
    labels = logits.argmax(1)
    rounded = Features(logits=logits.half().float(), energy=tuple(_energy_loop(x).half().float() for x in t))
    live = Features(logits=logits, maps=tuple(t))
    student = Features(maps=tuple(s))
    for loss in (ATLoss(weight=1000.0), DCTAttentionLoss()):
        want, got = (next(iter(loss(student, f, labels).values())).item() for f in (live, rounded))
        # float16 keeps 11 significant bits (relative error <= 2^-11 = 4.9e-4 per value); the losses
        # are smooth functions of the normalised maps, so the loss moves by the same order
        assert got == pytest.approx(want, rel=1e-3), type(loss).__name__


def test_features_carry_energy_in_place_of_maps():
    energy = (torch.zeros(2, 4, 4), torch.zeros(2, 2, 2))
    feats = Features(energy=energy, names=("a", "b"))
    assert feats.maps == () and len(feats.energy) == 2
    with pytest.raises(ValueError, match="2 maps but 1 energy maps"):
        Features(maps=(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2)), energy=energy[:1])
    with pytest.raises(ValueError, match="1 names"):
        Features(energy=energy, names=("a",))


TAPS = [TapInfo(f"layer{i + 1}", 8 * 2**i, 4 * 2**i, (8 // 2**i, 8 // 2**i)) for i in range(4)]


def test_logit_and_energy_losses_can_use_a_cache_and_the_others_are_named():
    fine = {
        "ce": partial(CrossEntropyLoss),
        "kd": partial(KDLoss),
        "dkd": DKDLoss(),
        "at": partial(ATLoss, weight=1000.0),
        "dct": DCTAttentionLoss(),
    }
    check_cacheable(fine)
    live = {
        "fam": partial(FAMKDLoss),
        "review": partial(ReviewKDLoss),
        "srm": partial(SRMLoss),
        "vid": VIDLoss(TAPS, TAPS),
        "crd": partial(CRDLoss),
        "fitnet": partial(FitNetLoss),
        "ofd": partial(OFDLoss),
    }
    with pytest.raises(ValueError, match="need the live teacher") as err:
        check_cacheable({**fine, **live})
    for key in live:
        assert f"'{key}'" in str(err.value)
    assert "'kd'" not in str(err.value) and "'at'" not in str(err.value)
