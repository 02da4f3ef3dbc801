"""LinearWarmup without Lightning: hand-worked factors and the weights it sets."""

import pytest
import torch

from kdscene.losses import ATLoss, CrossEntropyLoss, KDLoss, LinearWarmup


def test_factor_is_epoch_plus_one_over_warmup_epochs_capped_at_one():
    assert [LinearWarmup(4).factor(e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [LinearWarmup(1).factor(e) for e in range(2)] == [1.0, 1.0]
    assert LinearWarmup(0).factor(0) == 1.0 and LinearWarmup(-3).factor(5) == 1.0


def test_apply_scales_the_configured_weights_and_returns_the_factor():
    kd, at = KDLoss(weight=2.0), ATLoss(weight=1000.0)
    warmup = LinearWarmup(4)
    assert warmup.apply({"kd": kd, "at": at}, epoch=1) == 0.5
    assert (kd.weight, at.weight) == (1.0, 500.0) and (kd.base_weight, at.base_weight) == (2.0, 1000.0)
    assert warmup.apply([kd], epoch=2) == 0.75  # a plain list; the factor is never compounded
    assert kd.weight == 1.5 and at.weight == 500.0
    warmup.apply(torch.nn.ModuleDict({"at": at}), epoch=9)
    assert at.weight == 1000.0


def test_apply_refuses_what_is_not_a_distill_loss():
    with pytest.raises(TypeError, match="LinearWarmup scales DistillLoss weights, got Linear"):
        LinearWarmup(2).apply([CrossEntropyLoss(), torch.nn.Linear(1, 1)], epoch=0)
