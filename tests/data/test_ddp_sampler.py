"""DDP (ddp_spawn, 2 CPU processes, gloo): the SceneDataModule shards its own loaders.

Training shards are disjoint and cover the training split each epoch; validation counts every sample
exactly once across ranks although its size does not divide by the number of ranks (the ranks then
run a different number of validation batches, which must not hang).
"""

import lightning as L
import pytest
import torch

from kdscene.data import MITIndoor67, SceneDataModule
from tests.data.layouts import make_mit_indoor


def fingerprint(image: torch.Tensor) -> tuple[float, ...]:
    """A key for one (deterministically transformed) image: its first pixels, rounded."""
    return tuple(round(v, 4) for v in image.flatten()[:24].tolist())


class RecordShards(L.LightningModule):
    """A small conv net with batch norm (buffers DDP broadcasts); each rank saves what it was given."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.BatchNorm2d(4),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.out_dir = out_dir
        self.train_seen: dict[int, list[int]] = {}
        self.val_seen: list[tuple[float, ...]] = []

    def training_step(self, batch, batch_idx):
        images, labels, indices = batch
        self.train_seen.setdefault(self.current_epoch, []).extend(indices.tolist())
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def on_validation_epoch_start(self) -> None:
        self.val_seen = []

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.val_seen += [fingerprint(x) for x in images]
        loss = torch.nn.functional.cross_entropy(self.net(images), labels)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))

    def on_train_end(self) -> None:
        loaders = {"train": self.trainer.train_dataloader, "val": self.trainer.val_dataloaders}
        record = {
            "train": self.train_seen,
            "val": self.val_seen,
            "samplers": {k: type(v.sampler).__name__ for k, v in loaders.items()},
            "world": self.trainer.world_size,
        }
        torch.save(record, f"{self.out_dir}/rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _dm(root):
    return SceneDataModule(
        MITIndoor67, root, image_size=8, resize=10, batch_size=2, num_workers=0, return_index=True
    )


@pytest.mark.slow
def test_ranks_train_on_disjoint_shards_and_validate_each_sample_once(tmp_path):
    make_mit_indoor(tmp_path / "data", n_train=4, n_test=3)  # 12 training, 9 validation images
    reference = _dm(tmp_path / "data")
    reference.setup("fit")
    val = reference.datasets["val"]
    index = {fingerprint(val[i][0]): i for i in range(len(val))}
    assert len(index) == len(val) == 9

    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp_spawn",
        devices=2,
        max_epochs=2,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(RecordShards(str(tmp_path)), datamodule=_dm(tmp_path / "data"))

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(r["world"] == 2 and set(r["samplers"].values()) == {"EpochSampler"} for r in ranks)
    for epoch in (0, 1):
        shards = [r["train"][epoch] for r in ranks]
        assert [len(s) for s in shards] == [6, 6] and not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(12))
    assert ranks[0]["train"][0] != ranks[0]["train"][1]  # a new order each epoch
    halves = [[index[key] for key in r["val"]] for r in ranks]
    assert sorted(len(h) for h in halves) == [4, 5]
    assert sorted(halves[0] + halves[1]) == list(range(9))
