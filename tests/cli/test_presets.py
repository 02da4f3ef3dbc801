"""Small config presets: early stopping, the profiler debug preset, the MPS trainer."""

import torch

from kdscene.cli.config import compose_config
from kdscene.cli.train import train


def test_early_stopping_preset_stops_a_run_that_stops_improving(tiny_overrides, tmp_path):
    # a top-1 gain of 2 (200 points) is impossible: the run stops after the first round without one
    stop = [
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=2",
    ]
    cfg = compose_config(
        "train", [*tiny_overrides, "trainer.max_epochs=6", "test=false", *stop], tmp_path / "o"
    )
    assert {"model_checkpoint", "last_checkpoint", "early_stopping"} <= set(cfg.callbacks)
    train(cfg)
    last = torch.load(tmp_path / "o" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1  # epochs 0 and 1 ran (patience 1), not 6


def test_profiler_debug_preset_writes_where_the_time_goes(tiny_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_overrides, "debug=profiler", "test=false"], tmp_path / "o")
    assert cfg.task_name == "debug" and cfg.trainer.max_epochs == 1
    train(cfg)
    report = (tmp_path / "o" / "fit-profile.txt").read_text()
    assert "run_training_batch" in report


def test_mps_trainer_composes_to_one_float32_device(tmp_path):
    cfg = compose_config("train", ["trainer=mps"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("mps", 1, "32-true")
