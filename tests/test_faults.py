"""Fault injection (slow): SIGKILL and resume, full disks, diverging runs, DDP with every logger.

Every run here is a real ``kdscene-train`` subprocess on tiny synthetic scenes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_scenes

REPO = Path(__file__).resolve().parents[1]
KILLER = "+callbacks.killer={_target_:tests.faults.KillAtStep,where:%s}"
pytestmark = pytest.mark.slow


def _train(
    args: list[str], root: Path, kill_at: int | None = None, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDSCENE_ROOT": str(root), "WANDB_MODE": "offline", **extra_env}
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
        *tiny_scenes(synthetic_root),
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


# -- DDP with every logger ---------------------------------------------------------------------------


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "many", "wandb", "none"])
def test_ddp_sim_runs_with_every_logger_config(logger, run_args, tmp_path):
    args = [*run_args, "trainer=ddp_sim", f"logger={logger}", "trainer.max_epochs=1", "distill=kd"]
    result = _train([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc_top1" in result.stdout
    if logger in ("csv", "many"):
        rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        assert {"val/acc_top1", "test/acc_top1", "train/loss_kd"} <= set(header) and len(rows) > 5


def test_ddp_test_metrics_equal_a_single_device_evaluation_without_padding(run_args, tmp_path):
    from kdscene.cli.config import compose_config
    from kdscene.cli.evaluate import evaluate

    # 3 classes x 3 test images = 9: two ranks would need one padded duplicate
    uneven = ["data.reader.num_classes=3", "data.reader.test_per_class=3", "data.eval_batch_size=2"]
    args = [*run_args, *uneven, "trainer=ddp_sim", "trainer.max_epochs=1", "distill=none"]
    args = [
        a.replace("data.root=", f"data.root={tmp_path}/uneven#").split("#")[0] if "data.root" in a else a
        for a in args
    ]
    result = _train([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    overrides = [a for a in args if a.startswith("data.")] + [f"ckpt_path={record['best_checkpoint']}"]
    single = evaluate(compose_config("eval", [*overrides, "student.name=resnet10"], tmp_path / "eval"))
    assert single["test/acc_top1"] == pytest.approx(record["metrics"]["test/acc_top1"])
    assert single["test/acc_mean_class"] == pytest.approx(record["metrics"]["test/acc_mean_class"])


# -- faults on disk, on the network, in the data -----------------------------------------------------


def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from kdscene.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, target)
    real_save = torch.save

    def full_disk(obj, file, *args, **kwargs):
        real_save({"partial": torch.zeros(10)}, file)  # some bytes reach the disk, then it is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.full((3,), 2.0)}, "epoch": 1}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=False)["epoch"] == 0  # the good file is still there
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no temporary file is left


_WANDB_FALLBACK = """
import json, sys, warnings
from kdscene.loggers import WandbLogger
logger = WandbLogger(save_dir=sys.argv[1], project="kdscene-test", offline=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    run = logger.experiment
mode = str(run.settings.mode)
offline = bool(run.offline)
run.finish()
messages = [str(w.message) for w in caught]
print(json.dumps({"mode": mode, "offline": offline, "messages": messages}))
"""


def test_wandb_without_a_reachable_server_falls_back_to_offline_with_one_warning(tmp_path):
    """In a fresh interpreter: wandb keeps the settings of its first session in a process, so an earlier
    test's offline session would hide the fallback."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED")}
    env.update(
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there
        HOME=str(tmp_path),  # no ~/.netrc: no key
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _WANDB_FALLBACK, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "offline" in report["mode"] or report["offline"], report
    fallbacks = [m for m in report["messages"] if "logging offline" in m]
    assert len(fallbacks) == 1, report["messages"]


def test_a_corrupt_image_is_found_before_training_by_the_decode_check(run_args, tmp_path):
    from tests.data.layouts import make_mit_indoor, write_corrupt

    root = tmp_path / "mit"
    make_mit_indoor(root, n_train=4, n_test=2, size=40)
    write_corrupt(root / "Images" / "bar" / "bar_Tr3.jpg")
    base = [a for a in run_args if not a.startswith("data.")] + ["data=mit_indoor", f"data.root={root}"]
    base += [
        "data.image_size=32",
        "data.resize=36",
        "data.batch_size=4",
        "data.num_workers=0",
        "distill=none",
    ]
    cache = str(tmp_path / "cache")  # where the decode check remembers the files it has checked
    refused = _train(
        [*base, "data.check_files=decode", f"hydra.run.dir={tmp_path / 'a'}"], tmp_path, KDSCENE_CACHE=cache
    )
    assert refused.returncode != 0 and "bar_Tr3.jpg" in refused.stderr
    assert not list((tmp_path / "a").rglob("*.ckpt"))  # nothing trained
    skipped = _train(
        [*base, "data.check_files=decode", "data.skip_corrupt=true", f"hydra.run.dir={tmp_path / 'b'}"],
        tmp_path,
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]


def test_a_student_checkpoint_loads_and_evaluates_without_the_teachers_file(run_args, tmp_path):
    from kdscene.module import DistillationModule

    teacher = _train(
        [*run_args, "distill=none", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 't'}"], tmp_path
    )
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    moved = tmp_path / "teacher.ckpt"
    shutil.copy(tmp_path / "t" / "checkpoints" / "last.ckpt", moved)
    args = [*run_args, "distill=kd", "trainer.max_epochs=1", f"teacher.checkpoint={moved}"]
    student = _train([*args, f"hydra.run.dir={tmp_path / 's'}"], tmp_path)
    assert student.returncode == 0, student.stderr[-3000:]
    moved.unlink()  # the teacher's file is gone
    module = DistillationModule.load_from_checkpoint(
        tmp_path / "s" / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert module.student(torch.zeros(1, 3, 48, 48)).shape == (1, 4)
