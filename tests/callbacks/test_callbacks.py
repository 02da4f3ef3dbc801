"""Warm-up factors and weights (the attention-map panel: test_attention_maps.py)."""

import pytest

from kdscene.callbacks import LossWeightWarmup, warmup_factor
from tests.helpers import TinyDataModule, make_module, tiny_trainer


def test_warmup_factor_counts_epochs_from_one():
    assert [warmup_factor(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_warmup_scales_selected_terms_and_leaves_ce(tmp_path):
    module = make_module("at_kd")
    seen = []
    callback = LossWeightWarmup(warmup_epochs=4)
    trainer = tiny_trainer(
        tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=1, callbacks=[callback]
    )
    orig = callback.on_train_epoch_start

    def record(tr, pl):
        orig(tr, pl)
        seen.append({k: v.weight for k, v in pl.distill.items()})

    callback.on_train_epoch_start = record
    trainer.fit(module, datamodule=TinyDataModule())
    assert seen[0] == {"ce": 0.1, "kd": 0.25, "at": 2.5}
    assert seen[1] == {"ce": 0.1, "kd": 0.5, "at": 5.0}


def test_warmup_unknown_term_is_named(tmp_path):
    trainer = tiny_trainer(
        tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[LossWeightWarmup(2, ["fam"])]
    )
    with pytest.raises(KeyError, match=r"unknown terms \['fam'\]"):
        trainer.fit(make_module("kd"), datamodule=TinyDataModule())
