"""DistillationModule: teacher hygiene, checkpoints without the teacher, term naming, clear errors."""

import copy
from functools import partial

import lightning as L
import pytest
import torch

from kdscene.losses import CrossEntropyLoss, KDLoss
from kdscene.models import BackboneSpec, build_backbone
from kdscene.module import DistillationModule
from tests.helpers import TinyDataModule, make_module, tiny_trainer


@pytest.fixture
def teacher_ckpt(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save(build_backbone(BackboneSpec("cifar_resnet14", 3)).state_dict(), path)
    return str(path)


def test_teacher_frozen_through_fit_and_absent_from_checkpoint(tmp_path, teacher_ckpt):
    module = make_module(teacher_ckpt=teacher_ckpt)
    before = copy.deepcopy(module.teacher.state_dict())
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, datamodule=TinyDataModule())
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running stats included
    assert not module.teacher.training and module.student.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert ckpt["state_dict"] and not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["teacher"].checkpoint == teacher_ckpt
    reloaded = DistillationModule.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, weights_only=False
    )
    torch.testing.assert_close(reloaded.student.fc.weight, module.student.fc.weight)
    torch.testing.assert_close(reloaded.teacher.fc.weight, before["fc.weight"])


def test_teacher_stays_in_eval_after_train_call_and_validation(tmp_path):
    module = make_module()
    module.train()
    assert not module.teacher.training and module.student.training
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=TinyDataModule())
    trainer.validate(module, datamodule=TinyDataModule())
    assert not module.teacher.training


def test_optimizer_gets_student_and_distiller_params_never_teacher():
    module = make_module()
    module.distill["extra"] = torch.nn.Linear(2, 2)  # stands in for an adapter owned by a loss
    ids = {id(p) for p in module.trainable_parameters()}
    assert ids == {id(p) for p in module.student.parameters()} | {id(p) for p in module.distill.parameters()}
    assert not ids & {id(p) for p in module.teacher.parameters()}


def test_logged_metric_names_follow_the_style_guide(tmp_path):
    module = make_module("at_kd")
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, datamodule=TinyDataModule())
    names = set(trainer.callback_metrics)
    for name in [
        "train/loss",
        "train/loss_ce",
        "train/loss_kd",
        "train/loss_at",
        "train/acc_top1",
        "val/acc_top1",
        "val/acc_mean_class",
        "val/acc_best",
        "teacher/val_acc_top1",
    ]:
        assert name in names, (name, names)


def test_student_learns_without_a_teacher(tmp_path):
    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        distill={"ce": partial(CrossEntropyLoss)},
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        image_size=32,
    )
    assert module.teacher is None
    trainer = tiny_trainer(tmp_path, max_epochs=6)
    trainer.fit(module, datamodule=TinyDataModule())
    assert trainer.callback_metrics["val/acc_best"] > 0.6  # chance is 1/3


def test_errors_for_missing_teacher_and_class_mismatch():
    kd = {"kd": partial(KDLoss)}
    opt = partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match=r"\['kd'\] need a teacher"):
        DistillationModule(student=BackboneSpec("cifar_resnet8", 3), distill=kd, optimizer=opt, image_size=32)
    with pytest.raises(ValueError, match="10 classes but student 'cifar_resnet8' has 3"):
        DistillationModule(
            student=BackboneSpec("cifar_resnet8", 3),
            teacher=BackboneSpec("cifar_resnet8", 10),
            distill=kd,
            optimizer=opt,
            image_size=32,
        )
    with pytest.raises(ValueError, match="distill is empty"):
        DistillationModule(student=BackboneSpec("cifar_resnet8", 3), distill={}, optimizer=opt, image_size=32)


def test_terms_with_several_outputs_are_prefixed_by_their_key():
    class Two(torch.nn.Module):
        needs_teacher = False

        def forward(self, s, t, y):
            return {"a": s.logits.sum() * 0, "b": s.logits.sum() * 0}

    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        distill={"ce": CrossEntropyLoss(), "two": Two()},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=32,
    )
    s, t = module.features(torch.randn(2, 3, 32, 32))
    assert set(module.loss_terms(s, t, torch.tensor([0, 1]))) == {"ce", "two_a", "two_b"}


def test_teacher_accuracy_comes_from_the_validation_step_and_equals_a_direct_count(tmp_path, teacher_ckpt):
    module = make_module(teacher_ckpt=teacher_ckpt)
    data = TinyDataModule()
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(module, datamodule=data)
    images, labels = data.dataset.tensors
    with torch.no_grad():
        predicted = module.teacher(images).argmax(1)
    correct = (predicted == labels).float()
    per_class = torch.stack([correct[labels == c].mean() for c in range(3)])
    metrics = trainer.callback_metrics
    assert metrics["teacher/val_acc_top1"].item() == pytest.approx(correct.mean().item())
    assert metrics["teacher/val_acc_mean_class"].item() == pytest.approx(per_class.mean().item())
    assert not hasattr(module, "evaluate_teacher")  # no second pass over the validation data


def test_factories_get_the_context_they_name_and_a_missing_one_is_named():
    from kdscene.module import build_term

    class Bank(torch.nn.Module):
        needs_indices = True

        def __init__(self, num_samples: int, teacher_network: torch.nn.Module | None = None) -> None:
            super().__init__()
            self.num_samples, self.teacher_network = num_samples, teacher_network

    net = torch.nn.Linear(2, 2)
    built = build_term(Bank, [], [], num_samples=7, teacher_network=net, unrelated=1)
    assert built.num_samples == 7 and built.teacher_network is net
    with pytest.raises(ValueError, match=r"Bank needs \['num_samples'\]"):
        build_term(Bank, [], [], num_samples=None)


def test_a_third_batch_element_reaches_the_losses_as_indices():
    seen = {}

    class Probe(torch.nn.Module):
        needs_teacher = False
        needs_indices = True

        def forward(self, s, t, y):
            seen["indices"] = s.indices
            return {"p": s.logits.sum() * 0}

    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        distill={"ce": CrossEntropyLoss(), "probe": Probe()},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=32,
    )
    assert module.needs_indices
    batch = (torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), torch.tensor([5, 9]))
    module._shared_step(batch, "val", module.val_metrics)
    assert seen["indices"].tolist() == [5, 9]


class _NaNOnBatch(torch.nn.Module):
    """A loss term that is NaN on one chosen batch of every epoch and 0 elsewhere."""

    needs_teacher = False

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch, self.calls = batch, 0

    def forward(self, s, t, y):
        bad = self.training and self.calls % 3 == self.batch
        self.calls += int(self.training)
        return {"spike": s.logits.sum() * (float("nan") if bad else 0.0)}


def _module_with(term, **kw):
    return DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        distill={"ce": CrossEntropyLoss(), "spike": term},
        optimizer=partial(torch.optim.SGD, lr=0.05),
        image_size=32,
        **kw,
    )


def test_a_nonfinite_term_stops_the_run_naming_it_before_any_checkpoint(tmp_path):
    from kdscene.nonfinite import NonFiniteError

    trainer = tiny_trainer(tmp_path, max_epochs=2)  # 24 images, batch 8: 3 batches per epoch
    with pytest.raises(NonFiniteError, match=r"spike=nan at epoch 0, batch 1"):
        trainer.fit(_module_with(_NaNOnBatch(1)), datamodule=TinyDataModule())
    assert not list(tmp_path.rglob("*.ckpt"))


def test_skip_mode_skips_and_counts_the_nonfinite_steps(tmp_path):
    changed = {}

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = pl_module.student.fc.weight.detach().clone()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            changed[(trainer.current_epoch, batch_idx)] = not torch.equal(
                self.before, pl_module.student.fc.weight
            )

    module = _module_with(_NaNOnBatch(1), nonfinite="skip")
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[Watch()])
    trainer.fit(module, datamodule=TinyDataModule())
    assert module.nonfinite_skips == 2
    assert [k for k, v in changed.items() if not v] == [(0, 1), (1, 1)]  # only the NaN steps left no trace
    assert all(torch.isfinite(p).all() for p in module.student.parameters())
    assert trainer.callback_metrics["train/nonfinite_skips"] == 2


def test_nonfinite_weights_are_never_written_to_a_checkpoint(tmp_path):
    from kdscene.nonfinite import NonFiniteError

    class Poison(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            with torch.no_grad():
                pl_module.student.fc.weight[0, 0] = float("inf")

    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[Poison()], num_sanity_val_steps=0)
    with pytest.raises(NonFiniteError, match=r"non-finite by the end of epoch 0 \(student.fc.weight\)"):
        trainer.fit(make_module(), datamodule=TinyDataModule())
    assert not list(tmp_path.rglob("*.ckpt"))


def test_an_empty_batch_of_dropped_corrupt_images_is_skipped():
    module = make_module()
    empty = (torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    assert module.validation_step(empty, 0) is None
