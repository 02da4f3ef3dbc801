"""Multi-stage runs: stage configs, hand-over through ${kdscene.stage:...}, skipping a stage."""

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from kdscene.cli.config import compose_config
from kdscene.cli.recipe import RecipeError, parse_recipe, stage_config
from kdscene.cli.train import train

TWO_STAGES = {
    "stages": {
        "pretrain": {
            "max_epochs": 1,
            "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
            "scheduler": None,
            "terms": {"ce": {"_target_": "kdscene.losses.CrossEntropyLoss", "_partial_": True}},
        },
        "distil": {
            "student_checkpoint": "${kdscene.stage:pretrain}",
            "terms": {
                "ce": {"_target_": "kdscene.losses.CrossEntropyLoss", "_partial_": True, "weight": 0.5},
                "kd": {"_target_": "kdscene.losses.KDLoss", "_partial_": True},
            },
        },
    }
}


def _cfg(tiny_overrides, tmp_path, **stage_patch):
    cfg = compose_config(
        "train", [*tiny_overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=2"], tmp_path / "out"
    )
    cfg.distill = OmegaConf.merge(OmegaConf.create(TWO_STAGES), OmegaConf.create(stage_patch))
    return cfg


def test_stage_config_replaces_terms_optimizer_and_output_dir(tiny_overrides, tmp_path):
    cfg = _cfg(tiny_overrides, tmp_path)
    recipe = parse_recipe(cfg.distill)
    stage = stage_config(cfg, recipe, recipe.stages[0], last=False)
    assert list(stage.distill.terms) == ["ce"] and stage.optimizer._target_ == "torch.optim.Adam"
    assert "momentum" not in stage.optimizer and stage.scheduler is None
    assert stage.paths.output_dir.endswith("out/pretrain") and stage.test is False
    with open_dict(cfg):
        cfg.distill.stages.bad = OmegaConf.create({"epochs": 3, "terms": {}})
    with pytest.raises(RecipeError, match="distill.stages.bad has unknown keys \\['epochs'\\]"):
        parse_recipe(cfg.distill)


def test_stages_run_in_order_and_hand_over_the_student(tiny_overrides, tmp_path):
    cfg = _cfg(tiny_overrides, tmp_path)
    result = train(cfg)
    metrics, best = result.metrics, result.best_checkpoint
    assert "test/acc_top1" in metrics and "train/loss_kd" in metrics
    pretrained = torch.load(tmp_path / "out" / "pretrain" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (tmp_path / "out" / "distil" / "checkpoints" / "last.ckpt").is_file()
    assert pretrained["hyper_parameters"]["optimizer"].func is torch.optim.Adam
    # the second stage started from the first stage's student
    second = torch.load(best, weights_only=False)
    assert second["hyper_parameters"]["student"].checkpoint.endswith("pretrain/checkpoints/last.ckpt")


def test_a_stage_with_a_checkpoint_is_skipped(tiny_overrides, tmp_path):
    cfg = _cfg(tiny_overrides, tmp_path)
    train(cfg)
    ckpt = str(tmp_path / "out" / "pretrain" / "checkpoints" / "last.ckpt")
    cfg2 = _cfg(tiny_overrides, tmp_path / "again", stages={"pretrain": {"checkpoint": ckpt}})
    train(cfg2)
    assert not (tmp_path / "again" / "out" / "pretrain").exists()
    assert (tmp_path / "again" / "out" / "distil" / "checkpoints" / "last.ckpt").is_file()


def test_a_stage_without_a_checkpoint_stops_the_sequence(tiny_overrides, tmp_path):
    cfg = _cfg([*tiny_overrides, "callbacks=none", "+trainer.enable_checkpointing=false"], tmp_path)
    with pytest.raises(RuntimeError, match="wrote no checkpoint"):
        train(cfg)
