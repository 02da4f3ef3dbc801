"""DDP (ddp_spawn, 2 CPU processes, gloo): Lightning's distributed sampler splits a scene DataModule's
validation set into disjoint halves that together cover it."""

import lightning as L
import pytest
import torch

from kdscene.data import MITIndoor67, SceneDataModule
from tests.data.layouts import make_mit_indoor


def fingerprint(image: torch.Tensor) -> tuple[float, ...]:
    """A key for one (deterministically transformed) image: its first pixels, rounded."""
    return tuple(round(v, 4) for v in image.flatten()[:24].tolist())


class RecordSeenImages(L.LightningModule):
    """Validates nothing; each rank saves the fingerprints of the images its loader gave it."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.out_dir = out_dir
        self.seen: list[tuple[float, ...]] = []

    def validation_step(self, batch, batch_idx):
        self.seen += [fingerprint(x) for x in batch[0]]

    def on_validation_epoch_end(self) -> None:
        sampler = type(self.trainer.val_dataloaders.sampler).__name__
        record = {"seen": self.seen, "sampler": sampler, "world": self.trainer.world_size}
        torch.save(record, f"{self.out_dir}/rank{self.global_rank}.pt")


def _dm(root):
    return SceneDataModule(MITIndoor67, root, image_size=8, resize=10, batch_size=2, num_workers=0)


@pytest.mark.slow
def test_each_rank_validates_a_disjoint_half_of_the_split(tmp_path):
    make_mit_indoor(tmp_path / "data", n_test=4)  # 12 validation images: divisible by 2 ranks
    reference = _dm(tmp_path / "data")
    reference.setup("validate")
    val = reference.datasets["val"]
    index = {fingerprint(val[i][0]): i for i in range(len(val))}
    assert len(index) == len(val) == 12

    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp_spawn",
        devices=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(RecordSeenImages(str(tmp_path)), datamodule=_dm(tmp_path / "data"))

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(r["world"] == 2 and r["sampler"] == "DistributedSampler" for r in ranks)
    halves = [[index[key] for key in r["seen"]] for r in ranks]
    assert [len(h) for h in halves] == [6, 6]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == list(range(12))
