"""CRD under DDP with two CPU processes (spawn, gloo): both ranks end with the same memory bank, label table,
Z and draw state, although each rank sees only its half of the data and rank 1 starts from other buffers."""

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from kdscene.losses import CRDLoss, CrossEntropyLoss
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule
from tests.helpers import tiny_trainer

N = 16


class IndexedData(L.LightningDataModule):
    """Random images; training batches are (images, labels, indices), evaluation batches have no indices."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(N, 3, 32, 32, generator=g)
        self.labels = torch.arange(N) % 3

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.images, self.labels, torch.arange(N)), batch_size=4, shuffle=True
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=4)


class DivergeThenRecord(L.Callback):
    """Rank 1 starts from other banks and another draw seed; at the end every rank's CRD state is gathered."""

    def __init__(self, out) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        crd = pl_module.distill["crd"]
        if trainer.global_rank == 1:
            crd.store.student.add_(1.0)
            crd.store.teacher.mul_(-1.0)
            crd.draws[0] += 12345

    def on_train_end(self, trainer, pl_module) -> None:
        crd = pl_module.distill["crd"]
        state = torch.cat(
            [
                crd.store.student.flatten(),
                crd.store.teacher.flatten(),
                crd.store.labels.double(),
                crd.normaliser.double(),
                crd.draws.double(),
            ]
        )
        gathered = pl_module.all_gather(state)
        if trainer.is_global_zero:
            torch.save({"state": gathered.cpu(), "bank": crd.store.student.cpu()}, self.out)


@pytest.mark.slow
def test_two_ranks_hold_identical_banks_after_training(tmp_path):
    out = tmp_path / "crd.pt"
    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        teacher=BackboneSpec("cifar_resnet14", 3),
        distill={"ce": CrossEntropyLoss(), "crd": partial(CRDLoss, num_negatives=64)},
        optimizer=partial(torch.optim.SGD, lr=0.05),
        image_size=32,
        num_samples=N,
    )
    # DDP's own per-step buffer broadcast is off: agreement must come from the loss's gathered updates
    strategy = DDPStrategy(start_method="spawn", broadcast_buffers=False)
    trainer = tiny_trainer(
        tmp_path, strategy=strategy, devices=2, max_epochs=2, callbacks=[DivergeThenRecord(out)]
    )
    trainer.fit(module, datamodule=IndexedData())
    result = torch.load(out)
    state = result["state"]
    assert state.shape[0] == 2
    assert torch.equal(state[0], state[1])
    # every row was updated (unit norm), also those of the samples the other rank trained on
    torch.testing.assert_close(result["bank"].norm(dim=1), torch.ones(N))
    labels = state[0][2 * N * 128 : 2 * N * 128 + N]
    assert labels.tolist() == (torch.arange(N) % 3).double().tolist()
