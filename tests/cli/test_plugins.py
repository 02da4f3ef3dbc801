"""Optional Hydra plugins: the Optuna search and the SLURM launcher compose (skipped when not installed)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from kdscene.cli.config import compose_config


def test_the_optuna_search_maximises_the_best_validation_top1_over_a_log_scale_dct_weight(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install kdscene[optuna]")
    cfg = compose_config("train", ["hparams_search=dct_weight"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.params["distill.terms.dct.weight"] == "tag(log, interval(0.1, 10.0))"
    assert cfg.hydra.runtime.choices.distill == "dct_kd" and cfg.distill.terms.dct.weight == 1.0
    assert cfg.optimized_metric == "val/acc_best" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_with_a_table_the_optuna_search_keeps_the_method_and_seed_fixed(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install kdscene[optuna]")
    cfg = compose_config("train", ["experiment=dct_paper_mit_indoor", "hparams_search=dct_weight"], tmp_path)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params["distill"] == "dct_kd" and params["seed"] == "0"  # not the table's lists of rows and seeds


def test_the_slurm_launcher_starts_one_task_per_device_on_each_node(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install kdscene[slurm]")
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"]
    cfg = compose_config("train", ["experiment=dct_paper_ade20k", *overrides], tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["name"] == "dct_paper_ade20k"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2
    one_node = compose_config("train", ["hydra/launcher=slurm", "trainer=gpu"], tmp_path)
    assert (one_node.hydra.launcher.nodes, one_node.hydra.launcher.tasks_per_node) == (1, 1)
