"""DDP with two CPU processes (ddp_spawn, gloo): both ranks train and end with identical weights."""

import lightning as L
import pytest
import torch

from tests.helpers import TinyDataModule, make_module, tiny_trainer


class RankAgreement(L.Callback):
    """Gather a parameter checksum and the teacher's accuracy from every rank at the end of training."""

    def __init__(self, out):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        checksum = torch.stack([p.detach().double().sum() for p in pl_module.trainable_parameters()]).sum()
        gathered = pl_module.all_gather(checksum)
        if trainer.is_global_zero:
            torch.save({"checksums": gathered.cpu(), "world": trainer.world_size}, self.out)


@pytest.mark.slow
def test_ddp_spawn_two_processes_agree(tmp_path):
    out = tmp_path / "ranks.pt"
    module = make_module("at_kd")
    trainer = tiny_trainer(
        tmp_path, strategy="ddp_spawn", devices=2, max_epochs=2, callbacks=[RankAgreement(out)]
    )
    trainer.fit(module, datamodule=TinyDataModule(n=32))
    result = torch.load(out)
    assert result["world"] == 2
    assert result["checksums"].shape == (2,)
    assert torch.equal(result["checksums"][0], result["checksums"][1])
