"""kdscene-train and kdscene-eval: every distill config runs, the CLI runs as a subprocess, multirun."""

import json
import os
import subprocess
import sys

import pytest

from kdscene.cli.config import compose_config
from kdscene.cli.evaluate import evaluate
from kdscene.cli.train import train
from tests.cli.conftest import DISTILL_CONFIGS


@pytest.mark.parametrize("distill", DISTILL_CONFIGS)
def test_every_distill_config_runs_fast_dev_run(distill, tiny_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_overrides, f"distill={distill}", "debug=fdr"], tmp_path / "out")
    metrics = train(cfg).metrics
    assert "train/loss" in metrics and "test/acc_top1" in metrics
    assert all(v == v for k, v in metrics.items() if "loss" in k), metrics  # no NaN


def test_teacher_checkpoint_feeds_a_distillation_run_and_eval_reproduces_test(tiny_overrides, tmp_path):
    limits = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    cfg = compose_config("train", [*tiny_overrides, *limits, "distill=none"], tmp_path / "teacher")
    teacher_ckpt = train(cfg).best_checkpoint
    assert teacher_ckpt.endswith(".ckpt")
    cfg = compose_config(
        "train",
        [*tiny_overrides, *limits, "distill=kd", f"teacher.checkpoint={teacher_ckpt}"],
        tmp_path / "kd",
    )
    result = train(cfg)
    metrics, student_ckpt = result.metrics, result.best_checkpoint
    assert 0.0 <= metrics["teacher/val_acc_top1"] <= 1.0
    eval_overrides = [o for o in tiny_overrides if not o.startswith("teacher")] + [
        f"ckpt_path={student_ckpt}"
    ]
    result = evaluate(compose_config("eval", eval_overrides, tmp_path / "eval"))
    assert result["test/acc_top1"] == pytest.approx(metrics["test/acc_top1"])


def test_wrong_class_count_in_config_is_explained(tiny_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_overrides, "student.num_classes=7", "debug=fdr"], tmp_path / "o")
    with pytest.raises(ValueError, match="configured for 7 classes but the data has 4"):
        train(cfg)


def _cli(args, tmp_path):
    env_cmd = [sys.executable, "-m", "kdscene.cli.train", *args]
    return subprocess.run(env_cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_train_cli_in_a_subprocess(tiny_overrides, tmp_path):
    result = _cli([*tiny_overrides, "distill=at_kd", "debug=fdr"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc_top1" in result.stdout + result.stderr


@pytest.mark.slow
def test_multirun_over_distill_methods(tiny_overrides, tmp_path):
    import yaml

    result = _cli(["-m", *tiny_overrides, "distill=none,kd,at", "debug=fdr"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # debug presets write apart from real runs (logs/debug); a job's folder is named by its overrides
    jobs = sorted(p for p in (tmp_path / "logs" / "debug" / "multiruns").glob("*/*") if p.is_dir())
    assert len(jobs) == 3 and all(",debug=fdr,distill=" in p.name for p in jobs), jobs
    recorded = [yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text()) for p in jobs]
    assert sorted(o for r in recorded for o in r if o.startswith("distill=")) == [
        "distill=at",
        "distill=kd",
        "distill=none",
    ]


def test_a_wrong_dataset_root_shows_the_layout_before_any_model_is_built(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("data.")]
    cfg = compose_config(
        "train", [*overrides, "data=mit_indoor", f"data.root={tmp_path}/no_such_dir"], tmp_path / "o"
    )
    with pytest.raises(FileNotFoundError, match="no_such_dir does not exist") as err:
        train(cfg)
    assert "TrainImages.txt" in str(err.value)
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_an_unknown_layer_name_lists_the_valid_ones(tiny_overrides, tmp_path):
    cfg = compose_config(
        "train",
        [*tiny_overrides, "distill=at", "student.layers=[layer2,layer9]", "debug=fdr"],
        tmp_path / "o",
    )
    with pytest.raises(KeyError, match=r"unknown layer name\(s\) \['layer9'\].*layer4"):
        train(cfg)


def test_a_teacher_checkpoint_that_does_not_fit_is_refused(tiny_overrides, tmp_path):
    import torch
    from torchvision.models import resnet18

    bad = tmp_path / "r18.pt"
    torch.save(resnet18(num_classes=4).state_dict(), bad)  # the config's teacher is a resnet10
    cfg = compose_config(
        "train", [*tiny_overrides, "distill=kd", f"teacher.checkpoint={bad}"], tmp_path / "o"
    )
    with pytest.raises(ValueError, match=r"does not fit ResNet:\n  unexpected keys \(48\)"):
        train(cfg)


def test_onecycle_steps_per_batch_and_gets_its_length_from_the_trainer(tiny_overrides, tmp_path):
    import torch

    limits = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "test=false"]
    cfg = compose_config(
        "train", [*tiny_overrides, *limits, "optimizer=adamw", "scheduler=onecycle"], tmp_path / "o"
    )
    train(cfg)
    ckpt = torch.load(tmp_path / "o" / "checkpoints" / "last.ckpt", weights_only=False)
    (sched,) = ckpt["lr_schedulers"]
    assert sched["total_steps"] == 6 and sched["last_epoch"] == 6


@pytest.mark.parametrize("name", ["dct_paper_ade20k", "dct_paper_sun397", "dct_paper_mit_indoor"])
def test_paper_recipes_compose_with_the_papers_settings(name, tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    resolved = OmegaConf.to_container(cfg.distill, resolve=True)
    assert cfg.teacher.name == "resnet50" and cfg.student.name == "resnet18"
    assert set(resolved["terms"]) == {"ce", "dct", "kd"}
    assert resolved["terms"]["ce"]["weight"] == 0.1 and resolved["terms"]["kd"]["temperature"] == 4.0
    assert cfg.data.image_size == 224 and cfg.data.resize == 256
    assert list(cfg.data.mean) == [0.43216, 0.394666, 0.37645]
    assert cfg.optimizer.lr == 0.1 and cfg.scheduler.step_size == 25 and cfg.trainer.max_epochs == 70


def test_last_ckpt_holds_the_final_epoch_even_when_it_is_not_the_best(tiny_overrides, tmp_path):
    import torch

    # "best" = lowest epoch: the best file stays at epoch 0, so only last.ckpt can hold epoch 2
    best_is_first = ["callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"]
    limits = ["trainer.max_epochs=3", "trainer.limit_train_batches=2", "test=false", *best_is_first]
    cfg = compose_config("train", [*tiny_overrides, *limits], tmp_path / "o")
    best = train(cfg).best_checkpoint
    last = torch.load(tmp_path / "o" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 6
    assert torch.load(best, weights_only=False)["epoch"] == 0


@pytest.mark.slow
def test_quickstart_console_entry_exits_zero_and_writes_its_table(tmp_path):
    tiny = ["data.reader.num_classes=4", "data.reader.test_per_class=4", "data.batch_size=8"]
    # SRM's first two stages have their own epochs (2 and 4): each must still validate and checkpoint
    args = ["--methods", "kd,srm", "--seeds", "2", "--teacher", "resnet10", "--teacher-epochs", "1"]
    args += ["--student-epochs", "3", "--teacher-images", "8", "--student-images", "4"]
    code = "import sys; from kdscene.cli.quickstart import main; sys.exit(main())"
    cmd = [
        sys.executable,
        "-c",
        code,
        *args,
        "--out",
        str(tmp_path / "qs"),
        *tiny,
    ]
    env = {**os.environ, "KDSCENE_ROOT": str(tmp_path)}  # the synthetic scenes are written here
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "qs" / "results.md").read_text()
    assert "| Teacher (resnet10)" in table and "| KD (resnet10)" in table and "| SRM (resnet10)" in table
    records = json.loads((tmp_path / "qs" / "results.json").read_text())
    srm = records["methods"]["srm"]
    assert len(srm) == 2 and all(0.0 <= run["top1"] <= 1.0 for run in srm)


def test_every_quickstart_row_has_a_distill_config():
    from pathlib import Path

    from kdscene.cli.config import CONFIG_DIR
    from kdscene.cli.quickstart import DEFAULT_METHODS, LABELS

    missing = [m for m in DEFAULT_METHODS if not (Path(CONFIG_DIR) / "distill" / f"{m}.yaml").is_file()]
    assert not missing and set(DEFAULT_METHODS) <= set(LABELS)


def test_a_diverging_learning_rate_stops_with_the_term_named_and_no_checkpoint(tiny_overrides, tmp_path):
    from kdscene.nonfinite import NonFiniteError

    cfg = compose_config(
        "train", [*tiny_overrides, "distill=kd", "optimizer.lr=1e6", "trainer.max_epochs=2"], tmp_path / "o"
    )
    with pytest.raises(
        NonFiniteError, match=r"non-finite loss term\(s\) .*(ce|kd)=(nan|inf).* at epoch 0, batch"
    ):
        train(cfg)
    assert not list((tmp_path / "o").rglob("*.ckpt"))


def test_a_dct_recipe_that_is_nan_by_construction_is_refused_at_start(tiny_overrides, tmp_path):
    # at 32 px a ResNet's layer4 is 1x1: with the authors' eps=0 its normalisation is 0/0
    small = ["data.image_size=32", "data.resize=36", "distill=dct_kd", "debug=fdr"]
    cfg = compose_config("train", [*tiny_overrides, *small], tmp_path / "o")
    with pytest.raises(ValueError, match=r"tap 3 \('layer4'\) is 1x1 .* distill.terms.dct.eps"):
        train(cfg)
    cfg = compose_config("train", [*tiny_overrides, *small, "distill.terms.dct.eps=1e-8"], tmp_path / "p")
    loss = train(cfg).metrics["train/loss_dct"]
    assert loss == loss and abs(loss) != float("inf")  # finite with eps > 0


def test_logger_none_trains_without_the_learning_rate_monitor(tiny_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_overrides, "logger=none", "debug=limit"], tmp_path / "o")
    assert "test/acc_top1" in train(cfg).metrics
