"""Fault injection (slow): SIGKILL and resume, full disks, diverging runs, DDP with every logger.

Every run here is a real ``kdscene-train`` subprocess on tiny synthetic scenes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
KILLER = "+callbacks.killer={_target_:tests.faults.KillAtStep,where:%s}"
pytestmark = pytest.mark.slow


def _train(args: list[str], root: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDSCENE_ROOT": str(root), "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("KDSCENE_KILL_AT_STEP", None)
    if kill_at is not None:
        env["KDSCENE_KILL_AT_STEP"] = str(kill_at)
    cmd = [sys.executable, "-m", "kdscene.cli.train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root, timeout=1200)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def _kill_and_resume(args: list[str], root: Path, kill_at: int, where: str = "") -> tuple[Path, Path]:
    """Run once uninterrupted and once killed at ``kill_at`` then resumed; return both run folders."""
    args = [*args, KILLER % (where or "runs")]
    full, cut = root / "runs" / "full", root / "runs" / "cut"
    result = _train([*args, f"hydra.run.dir={full}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    killed = _train([*args, f"hydra.run.dir={cut}"], root, kill_at=kill_at)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    resumed = _train([*args, f"hydra.run.dir={cut}", "ckpt_path=last"], root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return full, cut


@pytest.fixture
def run_args(synthetic_root) -> list[str]:
    return [
        f"data.root={synthetic_root}",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=8",
        "data.reader.test_per_class=4",
        "data.batch_size=8",
        "teacher.name=resnet10",
        "student.name=resnet10",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


@pytest.mark.parametrize("distill", ["kd", "fam"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_rows(distill, run_args, tmp_path):
    # 4 steps per epoch: killed after step 6, i.e. in the middle of the second epoch
    full, cut = _kill_and_resume([*run_args, f"distill={distill}"], tmp_path, kill_at=6)
    assert (cut / "csv" / "metrics.csv").read_text() == (full / "csv" / "metrics.csv").read_text()
    _assert_same_weights(full / "checkpoints" / "last.ckpt", cut / "checkpoints" / "last.ckpt")
    best_full, best_cut = (sorted((d / "checkpoints").glob("epoch*.ckpt")) for d in (full, cut))
    assert [p.name for p in best_full] == [p.name for p in best_cut]


def test_srm_killed_inside_a_stage_skips_the_finished_one_and_resumes_inside(run_args, tmp_path):
    stages = ["distill=srm", "distill.stages.dictionary.max_epochs=1", "distill.stages.kd.max_epochs=2"]
    full, cut = _kill_and_resume([*run_args, *stages], tmp_path, kill_at=6, where="predict")
    for stage in ("dictionary", "predict", "kd"):
        assert (cut / stage / "csv" / "metrics.csv").read_text() == (
            full / stage / "csv" / "metrics.csv"
        ).read_text(), stage
    _assert_same_weights(full / "kd" / "checkpoints" / "last.ckpt", cut / "kd" / "checkpoints" / "last.ckpt")
