"""SceneDataModule under Lightning's loops: epochs set by the Trainer, exact batches after a resume."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from kdscene.data import MITIndoor67
from tests.data.layouts import make_mit_indoor
from tests.data.tiny import tiny_datamodule


class RecordBatches(L.LightningModule):
    """A linear classifier on 8×8 crops that records each training batch (epoch, indices, checksum)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 3)
        self.batches: list[tuple[int, list[int], float]] = []

    def training_step(self, batch, batch_idx):
        images, labels, indices = batch
        self.batches.append((self.current_epoch, indices.tolist(), images.double().sum().item()))
        return torch.nn.functional.cross_entropy(self.fc(images.flatten(1)), labels)

    def validation_step(self, batch, batch_idx):
        assert len(batch) == 2  # evaluation batches carry no indices

    def predict_step(self, batch, batch_idx):
        return batch[1]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


@pytest.fixture
def root(tmp_path):
    make_mit_indoor(tmp_path / "data", n_train=4, size=20)
    return tmp_path / "data"


def _dm(root):
    return tiny_datamodule(MITIndoor67(root), resize=14, sampling_seed=3, return_index=True)


def _trainer(tmp_path, max_epochs, **options):
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, **{**args, **options})


def test_a_resumed_run_sees_the_batches_and_ends_with_the_weights_of_the_uninterrupted_one(root, tmp_path):
    full = RecordBatches()
    _trainer(tmp_path / "full", 3, enable_checkpointing=False).fit(full, datamodule=_dm(root))
    cut = _trainer(tmp_path / "cut", 1, enable_checkpointing=False)
    torch.manual_seed(0)
    cut.fit(RecordBatches(), datamodule=_dm(root))
    cut.save_checkpoint(tmp_path / "epoch0.ckpt")
    torch.rand(123)  # the resumed process has drawn other numbers
    resumed = RecordBatches()
    trainer = _trainer(tmp_path / "cut", 3, enable_checkpointing=False)
    trainer.fit(resumed, datamodule=_dm(root), ckpt_path=tmp_path / "epoch0.ckpt")
    assert [b for b in full.batches if b[0] >= 1] == resumed.batches
    assert [b[0] for b in resumed.batches] == [1, 1, 1, 2, 2, 2]
    assert torch.equal(full.fc.weight, resumed.fc.weight)
    orders = {e: sum((b[1] for b in full.batches if b[0] == e), []) for e in range(3)}
    assert (
        all(sorted(o) == list(range(12)) for o in orders.values())
        and len({tuple(o) for o in orders.values()}) == 3
    )


def test_predict_visits_each_validation_sample_once_in_order(root, tmp_path):
    dm = _dm(root)
    predictions = _trainer(tmp_path, 1).predict(RecordBatches(), datamodule=dm)
    assert torch.cat(predictions).tolist() == [y for _, y in dm.datasets["val"].samples]


def test_overfit_batches_replaces_the_sampler_and_keeps_the_epoch_0_views(root, tmp_path):
    module = RecordBatches()
    _trainer(tmp_path, 2, overfit_batches=2, enable_checkpointing=False).fit(module, datamodule=_dm(root))
    assert [b[1] for b in module.batches] == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2
    assert module.batches[0][2] == module.batches[2][2]


def test_a_distributed_trainer_that_would_shard_the_loaders_again_is_refused(root):
    dm = _dm(root)
    dm.trainer = SimpleNamespace(
        world_size=2, _accelerator_connector=SimpleNamespace(use_distributed_sampler=True)
    )
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        dm.train_dataloader()
    dm.trainer = SimpleNamespace(
        world_size=2, _accelerator_connector=SimpleNamespace(use_distributed_sampler=False)
    )
    assert len(dm.val_dataloader().sampler) == 6  # the sampler shards by the process group (none here)
