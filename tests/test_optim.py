"""Separate learning rates for the student's backbone and its classifier (kdscene.optim)."""

from functools import partial

import pytest
import torch

from kdscene.optim import parameter_groups, scheduler_keywords
from tests.helpers import TinyDataModule, make_module, tiny_trainer


def _ids(params):
    return {id(p) for p in params}


def test_scale_one_is_a_single_flat_group_of_every_trainable_parameter():
    module = make_module()
    params = parameter_groups(module.student, module.student_tap.head, [], partial(torch.optim.SGD, lr=0.1))
    assert isinstance(params, list) and all(isinstance(p, torch.nn.Parameter) for p in params)
    assert _ids(params) == _ids(module.student.parameters())


def test_backbone_group_at_the_scaled_lr_and_head_with_loss_parameters_at_lr():
    module = make_module()
    extra = torch.nn.Linear(2, 2)  # stands in for an adapter owned by a loss term
    head = module.student_tap.head
    groups = parameter_groups(
        module.student, head, list(extra.parameters()), partial(torch.optim.SGD, lr=0.2), 0.1
    )
    backbone, top = groups
    assert backbone["lr"] == pytest.approx(0.02) and top["lr"] == pytest.approx(0.2)
    classifier = _ids(module.student.get_submodule(head).parameters())
    assert _ids(top["params"]) == classifier | _ids(extra.parameters())
    assert _ids(backbone["params"]) == _ids(module.student.parameters()) - classifier
    assert not _ids(backbone["params"]) & _ids(top["params"])


def test_default_lr_of_the_optimizer_is_used_when_the_config_gives_none():
    module = make_module()
    groups = parameter_groups(module.student, module.student_tap.head, [], partial(torch.optim.Adam), 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.5e-3, 1e-3])  # Adam's default lr is 1e-3


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_a_non_positive_scale_is_refused(scale):
    module = make_module()
    with pytest.raises(ValueError, match="backbone_lr_scale must be > 0"):
        parameter_groups(module.student, module.student_tap.head, [], partial(torch.optim.SGD, lr=0.1), scale)


def test_one_cycle_keeps_the_ratio_between_groups_over_the_whole_schedule():
    module = make_module()
    opt = partial(torch.optim.SGD, lr=0.1)
    groups = parameter_groups(module.student, module.student_tap.head, [], opt, 0.1)
    sched = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1)
    extra = scheduler_keywords(sched, groups, total_steps=20)
    assert extra == {"total_steps": 20, "max_lr": [pytest.approx(0.01), pytest.approx(0.1)]}
    optimizer = opt(params=groups)
    scheduler = sched(optimizer=optimizer, **extra)
    for _ in range(19):
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert lrs[0] == pytest.approx(0.1 * lrs[1], rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_module_trains_with_two_groups_and_the_backbone_moves_less(tmp_path):
    """Same data and seed, backbone scale 1 vs 1e-3: the classifier moves alike, the backbone far less."""
    moved = {}
    for scale in (1.0, 1e-3):
        torch.manual_seed(0)
        module = make_module(distill="none", backbone_lr_scale=scale)
        before = {k: v.clone() for k, v in module.student.state_dict().items()}
        trainer = tiny_trainer(
            tmp_path / str(scale), max_epochs=1, limit_train_batches=3, limit_val_batches=0
        )
        trainer.fit(module, datamodule=TinyDataModule())
        assert len(trainer.optimizers[0].param_groups) == (1 if scale == 1.0 else 2)
        after = module.student.state_dict()
        moved[scale] = {
            k: (after[k] - before[k]).abs().max().item() for k in before if after[k].is_floating_point()
        }
    conv = next(k for k in moved[1.0] if "conv" in k and k.endswith("weight"))
    assert moved[1e-3][conv] < 0.05 * moved[1.0][conv]
    head = module.student_tap.head
    assert moved[1e-3][f"{head}.weight"] > 0.2 * moved[1.0][f"{head}.weight"]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_configs_multi_tensor_update_equals_the_per_tensor_loop(name):
    """conf/optimizer/* set foreach: true (faster on the CPU); the update must be the same one."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from kdscene.cli.config import CONFIG_DIR

    factory = instantiate(OmegaConf.load(f"{CONFIG_DIR}/optimizer/{name}.yaml"))
    assert factory.keywords["foreach"] is True
    weights = {}
    for foreach in (True, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 2))
        optimizer = factory(params=net.parameters(), foreach=foreach)
        for _ in range(3):
            net(torch.randn(2, 3, 4, 4)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[foreach] = [p.detach().clone() for p in net.parameters()]
    for a, b in zip(weights[True], weights[False]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_one_cycle_head_peaks_at_max_lr_whatever_the_scale():
    """A faster backbone (scale 2) peaks at 2 x max_lr and the head at max_lr, not the other way round."""
    module = make_module()
    opt = partial(torch.optim.SGD, lr=0.1)
    groups = parameter_groups(module.student, module.student_tap.head, [], opt, 2.0)
    sched = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1)
    extra = scheduler_keywords(sched, groups, total_steps=None)
    assert extra == {"max_lr": [pytest.approx(0.2), pytest.approx(0.1)]}
