"""Teacher-cache runs under DDP and across a kill (slow): each rank replays the rows of its own samples,
and a run killed mid-epoch resumes to the weights of the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from kdscene.cache import VERIFY_RTOL
from kdscene.cache.record import LiveTeacher
from kdscene.cli.cache import record
from kdscene.cli.config import compose_config
from kdscene.cli.train import train
from kdscene.models import BackboneSpec
from tests.cache.conftest import run_overrides
from tests.test_faults import _assert_same_weights, _kill_and_resume

pytestmark = pytest.mark.slow


class ReplayCheck(L.Callback):
    """On each rank: the replayed teacher logits of every batch against the live teacher on its images."""

    def __init__(self, out: str, teacher_file: str) -> None:
        self.out, self.teacher_file = out, teacher_file
        self.seen: list[tuple[int, list[int]]] = []
        self.worst = 0.0
        self._live: LiveTeacher | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._live = self._live or LiveTeacher.build(
            BackboneSpec("resnet10", 4, checkpoint=self.teacher_file), "cpu"
        )
        replayed = pl_module._replayed_teacher(batch).logits
        live, _ = self._live(batch[0])
        scale = live.abs().amax(dim=1, keepdim=True)
        self.worst = max(self.worst, float(((replayed - live).abs() / scale).max()))
        self.seen.append((trainer.current_epoch, batch[2].tolist()))

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save({"seen": self.seen, "worst": self.worst}, Path(self.out) / f"rank{trainer.global_rank}.pt")


def _record(synthetic_root, teacher_file, root: Path, *extra: str) -> Path:
    overrides = [*run_overrides(synthetic_root, teacher_file, root), *extra, f"cache.path={root / 'cache'}"]
    return record(compose_config("train", overrides, root / "record")).path


def test_under_ddp_each_rank_replays_the_teacher_outputs_of_its_own_views(
    synthetic_root, teacher_file, tmp_path
):
    cache = _record(synthetic_root, teacher_file, tmp_path, "trainer.max_epochs=3", "cache.views=2")
    target = "tests.cache.test_cache_runs.ReplayCheck"
    check = f"+callbacks.replay={{_target_:{target},out:'{tmp_path}',teacher_file:'{teacher_file}'}}"
    overrides = [
        *run_overrides(synthetic_root, teacher_file, tmp_path),
        "trainer=ddp_sim",
        "trainer.max_epochs=3",
    ]
    train(
        compose_config("train", [*overrides, f"teacher_cache={cache}", check, "test=false"], tmp_path / "run")
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for epoch in range(3):  # the epoch's 32 images split between the ranks (2 batches of 8 each)
        shards = [{i for e, batch in rank["seen"] if e == epoch for i in batch} for rank in ranks]
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(32)), epoch
    # epoch 2 replays draw 0: the rows read are those of the views the loader built, on every rank
    assert all(rank["worst"] < VERIFY_RTOL for rank in ranks), [rank["worst"] for rank in ranks]


@pytest.fixture
def cache_args(synthetic_root, teacher_file, tmp_path) -> list[str]:
    cache = _record(
        synthetic_root, teacher_file, tmp_path / "rec", "trainer.max_epochs=3", "cache.views=2", "distill=kd"
    )
    return [
        f"data.root={synthetic_root}",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=8",
        "data.reader.test_per_class=4",
        "data.batch_size=8",
        "teacher.name=resnet10",
        f"teacher.checkpoint={teacher_file}",
        "student.name=resnet10",
        "distill=kd",
        f"teacher_cache={cache}",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


def test_a_cache_run_killed_mid_epoch_resumes_to_the_same_weights(cache_args, tmp_path):
    # 4 steps per epoch: killed after step 6, in the second epoch; the third epoch replays draw 0 again
    (tmp_path / "jobs").mkdir()
    full, cut = _kill_and_resume(cache_args, tmp_path / "jobs", kill_at=6)
    assert (cut / "csv" / "metrics.csv").read_text() == (full / "csv" / "metrics.csv").read_text()
    _assert_same_weights(full / "checkpoints" / "last.ckpt", cut / "checkpoints" / "last.ckpt")
