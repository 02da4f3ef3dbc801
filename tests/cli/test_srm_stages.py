"""distill=srm: the three SRM stages run in one process and hand their checkpoints on."""

import torch

from kdscene.cli.config import compose_config
from kdscene.cli.train import train

FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "distill=srm",
    "distill.stages.dictionary.max_epochs=1",
    "distill.stages.predict.max_epochs=1",
]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_srm_runs_dictionary_predict_and_kd_stages(tiny_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_overrides, *FAST], tmp_path / "out")
    result = train(cfg)
    metrics, best = result.metrics, result.best_checkpoint
    assert list(result.stages) == ["dictionary", "predict", "kd"]
    assert "test/acc_top1" in metrics and "train/loss_kd" in metrics
    assert all(v == v for k, v in metrics.items() if "loss" in k), metrics
    ckpt = {s: tmp_path / "out" / s / "checkpoints" / "last.ckpt" for s in ("dictionary", "predict", "kd")}
    assert all(p.is_file() for p in ckpt.values())

    first, second, third = (_load(ckpt[s]) for s in ("dictionary", "predict", "kd"))
    # stage 1 trained only the dictionaries: the frozen student's BN statistics never moved
    assert torch.count_nonzero(first["state_dict"]["student.bn1.running_mean"]) == 0
    assert any(k.startswith("distill.srm_dict.coders.0.") for k in first["state_dict"])
    # stage 2 loaded the stage-1 dictionaries and kept them frozen
    s1, s2 = first["state_dict"], second["state_dict"]
    levels = {k.split(".")[3] for k in s1 if k.startswith("distill.srm_dict.coders.")}
    # the config's levels: maxpool 64, layer2 128, layer3 256, layer4 512, avgpool 512 channels; K = 4·D
    shapes = [tuple(s1[f"distill.srm_dict.coders.{i}.codewords"].shape) for i in range(len(levels))]
    assert shapes == [(64, 256), (128, 512), (256, 1024), (512, 2048), (512, 2048)]
    for i in levels:
        for name in ("codewords", "intercept"):
            assert torch.equal(
                s1[f"distill.srm_dict.coders.{i}.{name}"], s2[f"distill.srm.teacher_dicts.{i}.{name}"]
            )
    assert any(k.startswith("distill.srm.predictors.") for k in s2)
    assert second["hyper_parameters"]["distill"]["srm"].keywords["dictionary"] == str(ckpt["dictionary"])
    # stage 3 started from the stage-2 student; its checkpoint has no SRM predictors
    assert third["hyper_parameters"]["student"].checkpoint == str(ckpt["predict"])
    assert not any(k.startswith("distill.srm") for k in third["state_dict"])
    assert best

    # every stage logged its own terms
    header = (tmp_path / "out" / "predict" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss_srm_global", "train/loss_srm_local", "train/loss_ce"} <= set(header.split(","))
    header = (tmp_path / "out" / "dictionary" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_srm_dict" in header.split(",")
