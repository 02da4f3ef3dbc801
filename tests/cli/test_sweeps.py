"""Sweeps name their runs: job folders and W&B runs say their overrides; debug runs write apart.

The slow test runs a real tiny table sweep through the console entry point and tabulates it with
kdscene-collect.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdscene.cli.config import CONFIG_DIR, compose_config
from kdscene.cli.sweep import PrintFolders, job_dirname
from kdscene.cli.train import train

TABLE_JOB = ["experiment=dct_paper_ade20k", "distill=at", "pair=r50_r18", "seed=1"]
NOISE = ["data.root=/data/ADE", "paths.root_dir=/scratch/me", "trainer.enable_progress_bar=false"]


def test_a_jobs_folder_is_named_by_its_overrides_without_machine_paths_or_switches(tmp_path):
    cfg = compose_config("train", [*NOISE, *TABLE_JOB, "teacher.checkpoint=/ckpt/t.ckpt"], tmp_path)
    assert cfg.hydra.job.override_dirname == "distill=at,pair=r50_r18,seed=1"
    assert cfg.hydra.sweep.subdir == "distill=at,pair=r50_r18,seed=1"
    assert re.fullmatch(r"/scratch/me/logs/dct_paper_ade20k/multiruns/[0-9_-]+", cfg.hydra.sweep.dir)


def test_the_sweep_and_run_folders_are_printed_when_hydra_starts_them(tmp_path, capsys):
    cfg = compose_config("train", ["paths.root_dir=/scratch/me", *TABLE_JOB], tmp_path)
    PrintFolders().on_multirun_start(cfg)
    PrintFolders().on_multirun_end(cfg)
    PrintFolders().on_run_start(cfg)
    out = capsys.readouterr().out.splitlines()
    sweep = str(cfg.hydra.sweep.dir)
    assert (
        out[0] == f"kdscene: sweep folder {sweep}"
        and out[2] == f"kdscene: its results table: kdscene-collect {sweep}"
    )
    assert re.fullmatch(r"kdscene: run folder /scratch/me/logs/dct_paper_ade20k/runs/[0-9_-]+", out[3])


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "default"])
def test_debug_presets_write_apart_from_real_runs_even_for_a_table(tmp_path, preset):
    cfg = compose_config("train", ["paths.root_dir=/scratch/me", *TABLE_JOB, f"debug={preset}"], tmp_path)
    assert cfg.task_name == "debug"
    assert cfg.hydra.run.dir.startswith("/scratch/me/logs/debug/runs/")
    assert cfg.hydra.sweep.dir.startswith("/scratch/me/logs/debug/multiruns/")


def test_every_debug_preset_is_based_on_the_default_one():
    presets = sorted(p.stem for p in (Path(CONFIG_DIR) / "debug").glob("*.yaml") if p.stem != "default")
    assert presets and all(
        "  - default" in (Path(CONFIG_DIR) / "debug" / f"{p}.yaml").read_text() for p in presets
    )


@pytest.fixture
def wandb_init_calls(monkeypatch):
    """Capture the arguments of wandb.init (the run itself is a disabled one: nothing written or sent)."""
    import wandb

    calls = []
    real_init = wandb.init
    monkeypatch.setenv("WANDB_MODE", "disabled")  # restored afterwards: Lightning sets it for offline runs

    def init(**kwargs):
        calls.append(kwargs)
        return real_init(mode="disabled")

    monkeypatch.setattr(wandb, "init", init)
    return calls


def test_a_wandb_run_is_named_by_its_overrides_grouped_by_experiment_and_tagged(
    tiny_overrides, tmp_path, wandb_init_calls
):
    quick = [
        "data=synthetic",
        "data.image_size=48",
        "data.resize=56",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
    ]
    overrides = [o for o in tiny_overrides if o != "logger=csv"] + [
        *quick,
        "teacher.checkpoint=null",
        "logger=wandb",
    ]
    train(compose_config("train", [*overrides, *TABLE_JOB], tmp_path / "run"))
    (call,) = wandb_init_calls
    assert call["name"].startswith("dct_paper_ade20k/") and ",distill=at,pair=r50_r18,seed=1," in call["name"]
    assert call["group"] == "dct_paper_ade20k" and call["job_type"] == "train"
    assert call["tags"] == ["method=at", "data=synthetic", "pair=resnet10->resnet10"]


def test_the_eval_entry_point_is_its_own_wandb_job_type(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_config("eval", ["logger=wandb", "ckpt_path=/ckpt/s.ckpt"], tmp_path)
    logger = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert (logger["job_type"], logger["group"], logger["name"]) == ("eval", "eval", "eval/")


def test_a_folder_name_is_file_system_safe_short_and_unique():
    assert job_dirname("distill=at,seed=1") == "distill=at,seed=1"
    timm = job_dirname("student.name=timm/resnet18,x=a:b")
    assert re.fullmatch(r"student\.name=timm_resnet18,x=a_b~[0-9a-f]{8}", timm)
    assert timm != job_dirname("student.name=timm_resnet18,x=a_b")  # the hash tells them apart
    dotted = (
        "data.reader.num_classes=4,data.reader.train_per_class=8,debug=fdr,distill=kd,student.name=resnet10"
    )
    short = job_dirname(dotted, limit=80)  # too long: the keys keep their last part
    assert re.fullmatch(
        r"num_classes=4,train_per_class=8,debug=fdr,distill=kd,name=resnet10~[0-9a-f]{8}", short
    )
    long = [job_dirname(",".join(f"option_{i}={i + s}" for i in range(20))) for s in (0, 1)]
    assert all(len(n) == 120 and re.search(r"~[0-9a-f]{8}$", n) for n in long) and long[0] != long[1]


TINY_TABLE = """# @package _global_
# the MIT Indoor table on a few synthetic scenes, small networks, two epochs
defaults:
  - dct_paper_mit_indoor
  - override /data: synthetic
  - override /trainer: cpu

data:
  root: {root}
  reader: {{num_classes: 4, train_per_class: 8, test_per_class: 4}}
  batch_size: 8
  image_size: 48
  resize: 56
teacher: {{name: resnet10, checkpoint: null}}
student: {{name: resnet10}}
trainer: {{max_epochs: 2, enable_progress_bar: false, enable_model_summary: false}}
"""


@pytest.mark.slow
def test_a_table_sweep_through_the_cli_names_its_jobs_and_collects_into_the_papers_table(
    synthetic_root, tmp_path
):
    conf = tmp_path / "my_conf" / "experiment"  # the user's own config folder: a tiny copy of a table
    conf.mkdir(parents=True)
    (conf / "tiny_mit.yaml").write_text(TINY_TABLE.format(root=synthetic_root))
    args = ["-m", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "experiment=tiny_mit"]
    args += ["distill=none,kd", "pair=r50_r18", "seed=0,1", f"paths.root_dir={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-m", "kdscene.cli.train", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = Path(re.search(r"kdscene: sweep folder (\S+)", result.stdout).group(1))
    assert sweep.parent == tmp_path / "logs" / "dct_paper_mit_indoor" / "multiruns"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [f"distill={d},pair=r50_r18,seed={s}" for d in ("kd", "none") for s in (0, 1)]
    collect = subprocess.run(
        [sys.executable, "-m", "kdscene.cli.collect", str(sweep), "--no-plots"],
        capture_output=True,
        text=True,
    )
    assert collect.returncode == 0, collect.stderr
    table = (sweep / "results.md").read_text()
    assert re.search(r"\| Baseline \| [0-9.]+ ± [0-9.]+ \(2\) \| [0-9.]+ ± [0-9.]+ \(2\) \| 49\.26 \|", table)
    assert re.search(r"\| KD \| [0-9.]+ ± [0-9.]+ \(2\) \| [0-9.]+ ± [0-9.]+ \(2\) \| 54\.87 \|", table)
