"""Hinton KD and cross-entropy against independent scipy/numpy references."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from kdscene.losses import CrossEntropyLoss, Features, KDLoss


def _feats(logits):
    return Features(logits=logits, maps=())


def _reference_kd(zs, zt, T):
    p_t = softmax(zt / T, axis=1)
    kl = (p_t * (np.log(p_t) - log_softmax(zs / T, axis=1))).sum(axis=1)
    return T * T * kl.mean()


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_matches_scipy_batchmean_with_t_squared(T):
    zs, zt = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64) * 3
    got = KDLoss(weight=0.5, temperature=T)(_feats(zs), _feats(zt), None)["kd"]
    assert got.item() == pytest.approx(0.5 * _reference_kd(zs.numpy(), zt.numpy(), T), rel=1e-6)


def test_kd_mean_reduction_is_num_classes_smaller():
    zs, zt = torch.randn(4, 10), torch.randn(4, 10)
    a = KDLoss(temperature=2.0)(_feats(zs), _feats(zt), None)["kd"]
    b = KDLoss(temperature=2.0, reduction="mean")(_feats(zs), _feats(zt), None)["kd"]
    assert a.item() == pytest.approx(10 * b.item(), rel=1e-5)


def test_kd_is_zero_for_identical_logits_and_hand_worked_case():
    z = torch.randn(3, 4)
    assert KDLoss()(_feats(z), _feats(z.clone()), None)["kd"].abs().item() < 1e-6
    # two classes, T=1: teacher (1, 0) vs student (0, 0): KL = p log(2p) + (1-p) log(2(1-p)), p = e/(1+e)
    p = np.e / (1 + np.e)
    want = p * np.log(2 * p) + (1 - p) * np.log(2 * (1 - p))
    got = KDLoss(temperature=1.0)(_feats(torch.zeros(1, 2)), _feats(torch.tensor([[1.0, 0.0]])), None)["kd"]
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_kd_gradient_check():
    zs = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64)
    loss = KDLoss(temperature=3.0)
    assert torch.autograd.gradcheck(lambda s: loss(_feats(s), _feats(zt), None)["kd"], (zs,))


def test_kd_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        KDLoss(reduction="sum")


def test_cross_entropy_matches_numpy_and_needs_no_teacher():
    z = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    want = -log_softmax(z.numpy(), axis=1)[np.arange(6), y.numpy()].mean()
    got = CrossEntropyLoss(weight=0.1)(_feats(z), None, y)["ce"]
    assert got.item() == pytest.approx(0.1 * want, rel=1e-9)
    assert CrossEntropyLoss.needs_teacher is False and KDLoss.needs_teacher is True
