"""SRM inside DistillationModule: stage 1 trains only the dictionaries; stage 2 under DDP (2 CPU
processes, ddp_spawn, gloo) ends with identical predictors on both ranks and untouched dictionaries."""

import copy
from functools import partial

import lightning as L
import pytest
import torch

from kdscene.losses import CrossEntropyLoss, SRMDictionaryLoss, SRMLoss
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule
from tests.helpers import TinyDataModule, tiny_trainer


def _module(terms, **kw):
    return DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        teacher=BackboneSpec("cifar_resnet14", 3),
        distill=terms,
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        image_size=32,
        **kw,
    )


def _stage1(tmp_path):
    terms = {"srm_dict": partial(SRMDictionaryLoss, codeword_multiplier=2.0, sparsity_multiplier=0.1)}
    module = _module(terms, train_student=False)
    student = copy.deepcopy(module.student.state_dict())
    dicts = copy.deepcopy(module.distill.state_dict())
    trainer = tiny_trainer(tmp_path / "s1", max_epochs=1, limit_val_batches=0)
    trainer.fit(module, datamodule=TinyDataModule(n=16))
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return module, student, dicts, path


def _checksum(params) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in params]).sum()


def test_stage1_trains_the_dictionaries_and_leaves_the_student_alone(tmp_path):
    module, student, dicts, _ = _stage1(tmp_path)
    for key, value in module.student.state_dict().items():
        assert torch.equal(value, student[key]), key  # BN running statistics included
    assert not module.student.training
    changed = [k for k, v in module.distill.state_dict().items() if not torch.equal(v, dicts[k])]
    assert any("codewords" in k for k in changed) and any("intercept" in k for k in changed)


class RankAgreement(L.Callback):
    """Gather checksums of the predictors, the teacher dictionaries and the student from every rank."""

    def __init__(self, out):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        srm = pl_module.distill["srm"]
        sums = torch.stack(
            [
                _checksum(srm.predictors.parameters()),
                _checksum(srm.teacher_dicts.parameters()),
                _checksum(pl_module.student.parameters()),
            ]
        )
        gathered = pl_module.all_gather(sums)
        if trainer.is_global_zero:
            torch.save({"sums": gathered.cpu(), "world": trainer.world_size}, self.out)


@pytest.mark.slow
def test_stage2_ddp_two_processes_agree_on_the_predictors(tmp_path):
    _, _, _, stage1 = _stage1(tmp_path)
    terms = {
        "ce": partial(CrossEntropyLoss, weight=0.0),  # keeps the classifier in the graph for DDP
        "srm": partial(SRMLoss, dictionary=str(stage1)),
    }
    module = _module(terms)
    srm = module.distill["srm"]
    start = (_checksum(srm.predictors.parameters()), _checksum(srm.teacher_dicts.parameters()))
    out = tmp_path / "ranks.pt"
    trainer = tiny_trainer(
        tmp_path / "s2", strategy="ddp_spawn", devices=2, max_epochs=1, callbacks=[RankAgreement(out)]
    )
    trainer.fit(module, datamodule=TinyDataModule(n=32))
    result = torch.load(out)
    sums = result["sums"]
    assert result["world"] == 2 and sums.shape == (2, 3)
    assert torch.equal(sums[0], sums[1])
    assert sums[0, 0] != start[0]  # the predictors trained
    assert sums[0, 1] == start[1]  # the stage-1 dictionaries stayed frozen
