"""Training from a teacher cache: no teacher is built, the losses get the recorded views' teacher outputs
(equal to the live teacher's up to float16 rounding), mismatched caches and live-only terms are refused."""

from __future__ import annotations

import json
import shutil
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

import kdscene.module as module_file
from kdscene.cache import CacheMismatchError
from kdscene.cli.config import compose_config
from kdscene.cli.train import train
from kdscene.losses import ATLoss, CrossEntropyLoss, DCTAttentionLoss, FAMKDLoss, KDLoss
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule
from tests.cache.conftest import run_overrides

TERMS = {
    "ce": partial(CrossEntropyLoss, weight=0.1),
    "at": partial(ATLoss, weight=1000.0),
    "dct": partial(DCTAttentionLoss),
    "kd": partial(KDLoss, temperature=4.0),
}


def _module(teacher_file: str, cache=None, terms=TERMS) -> DistillationModule:
    torch.manual_seed(0)  # the same student in every module
    return DistillationModule(
        student=BackboneSpec("resnet10", 4),
        teacher=BackboneSpec("resnet10", 4, checkpoint=teacher_file),
        distill=terms,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=48,
        teacher_cache=str(cache) if cache else None,
    )


def test_with_a_cache_the_teacher_is_never_built(recorded, teacher_file, monkeypatch):
    built = []
    real = module_file.build_backbone
    monkeypatch.setattr(module_file, "build_backbone", lambda spec: built.append(spec.label) or real(spec))
    module = _module(teacher_file, recorded)
    assert built == ["resnet10"]  # the student only
    assert module.teacher is None and module.teacher_tap is None
    assert module.needs_indices  # batches must say which rows to read


def test_the_losses_of_a_cached_step_equal_the_live_teachers_up_to_float16(
    recorded, teacher_file, synthetic_root, tmp_path
):
    cfg = compose_config("train", run_overrides(synthetic_root, teacher_file, tmp_path), tmp_path / "o")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train_set = datamodule.datasets["train"]
    indices = torch.tensor([5, 30, 2, 17, 9, 0, 23, 11])
    for draw in (0, 1):
        images = torch.stack([train_set[(draw, int(i))][0] for i in indices])
        labels = torch.tensor([train_set.samples[int(i)][1] for i in indices])
        live = _module(teacher_file)
        live_terms = live.loss_terms(*live.features(images), labels)
        cached = _module(teacher_file, recorded)
        student, _ = cached.features(images)
        teacher = cached.cached_teacher.features(draw, indices)
        cached_terms = cached.loss_terms(student, teacher, labels)
        assert live_terms.keys() == cached_terms.keys() == {"ce", "at", "dct", "kd"}
        for name in live_terms:
            torch.testing.assert_close(cached_terms[name], live_terms[name], rtol=1e-3, atol=1e-6)


def test_terms_that_need_the_live_teacher_are_refused_at_construction(recorded, teacher_file):
    with pytest.raises(ValueError, match="'fam': it reads the teacher's full feature maps"):
        _module(teacher_file, recorded, {"ce": partial(CrossEntropyLoss), "fam": partial(FAMKDLoss)})
    with pytest.raises(ValueError, match="'at': ATLoss\\(p=1.0\\)"):
        _module(teacher_file, recorded, {"at": partial(ATLoss, p=1.0)})


def test_a_checkpoint_of_another_cache_is_refused(recorded, teacher_file):
    module = _module(teacher_file, recorded)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert json.loads(checkpoint["teacher_cache"])["views"] == 2
    module.on_load_checkpoint(dict(checkpoint))  # the same cache: fine
    with pytest.raises(CacheMismatchError, match="another teacher cache"):
        module.on_load_checkpoint(
            {**checkpoint, "teacher_cache": checkpoint["teacher_cache"].replace("2", "3")}
        )


def _train(synthetic_root, teacher_file, tmp_path, *extra):
    overrides = [*run_overrides(synthetic_root, teacher_file, tmp_path), *extra]
    return train(compose_config("train", overrides, tmp_path / "run"))


def test_a_run_trains_from_the_cache_with_its_views_checked(recorded, teacher_file, synthetic_root, tmp_path):
    result = _train(synthetic_root, teacher_file, tmp_path, f"teacher_cache={recorded}", "cache.verify=4")
    for term in ("train/loss_kd", "train/loss_dct", "train/loss_ce", "val/acc_top1", "test/acc_top1"):
        assert term in result.metrics, term
    assert torch.isfinite(torch.tensor(result.metrics["train/loss_dct"]))
    assert not any(
        k.startswith("teacher/") for k in result.metrics
    )  # no teacher forward, no teacher accuracy


def test_verifying_the_cache_draws_no_number_the_run_uses(recorded, teacher_file, synthetic_root, tmp_path):
    runs = [
        _train(
            synthetic_root, teacher_file, tmp_path / str(n), f"teacher_cache={recorded}", f"cache.verify={n}"
        )
        for n in (0, 6)
    ]
    weights = [torch.load(r.last_checkpoint, weights_only=False)["state_dict"] for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.image_size=40", "transform.image_size: cache 48, run 40"),
        ("seed=7", "sampling_seed: cache 42, run 7"),
        ("data.reader.train_per_class=6", "data.num_images: cache 32, run 24"),
    ],
)
def test_a_cache_recorded_for_other_settings_is_refused_naming_them(
    recorded, teacher_file, synthetic_root, tmp_path, override, named
):
    if "train_per_class" in override:  # another data set: generated into its own folder
        override = f"{override} data.root={tmp_path / 'other_scenes'}"
    with pytest.raises(CacheMismatchError, match=named.replace("(", r"\(")):
        _train(synthetic_root, teacher_file, tmp_path, f"teacher_cache={recorded}", *override.split())


def test_another_teacher_file_is_refused_by_its_hash(recorded, teacher_file, synthetic_root, tmp_path):
    other = tmp_path / "teacher.pth"
    shutil.copy(teacher_file, other)
    with pytest.raises(CacheMismatchError, match="teacher.checkpoint: cache") as err:
        _train(
            synthetic_root, teacher_file, tmp_path, f"teacher_cache={recorded}", f"teacher.checkpoint={other}"
        )
    assert "file_sha256" not in str(err.value)  # a copy: same bytes, only the path differs
    state = torch.load(teacher_file)
    state["fc.bias"] += 1
    torch.save(state, other)
    with pytest.raises(CacheMismatchError, match="teacher.file_sha256"):
        _train(
            synthetic_root, teacher_file, tmp_path, f"teacher_cache={recorded}", f"teacher.checkpoint={other}"
        )


def test_a_missing_cache_stops_fitting(teacher_file, synthetic_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher cache .*nowhere' has no header.json"):
        _train(synthetic_root, teacher_file, tmp_path, f"teacher_cache={tmp_path / 'nowhere'}")
