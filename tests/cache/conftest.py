"""Fixtures for the teacher-cache tests: a tiny run (synthetic scenes, ResNet-10s) and its recorded cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdscene.cli.cache import record
from kdscene.cli.config import compose_config
from kdscene.models import BackboneSpec, build_backbone

VIEWS = 2


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory) -> str:
    """A fixed 4-class ResNet-10 teacher (random weights, saved once)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save(build_backbone(BackboneSpec("resnet10", 4)).state_dict(), path)
    return str(path)


def run_overrides(synthetic_root: Path, teacher_file: str, root: Path) -> list[str]:
    """A run that takes seconds: 32 training images of 48 px, batches of 8, ResNet-10 teacher and student."""
    return [
        f"data.root={synthetic_root}",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=8",
        "data.reader.test_per_class=4",
        "data.batch_size=8",
        "data.num_workers=0",
        "teacher.name=resnet10",
        f"teacher.checkpoint={teacher_file}",
        "student.name=resnet10",
        "distill=dct_kd",
        "logger=csv",
        f"paths.root_dir={root}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.max_epochs=2",
        "callbacks.attention_maps=null",
    ]


@pytest.fixture(scope="session")
def recorded(tmp_path_factory, synthetic_root, teacher_file) -> Path:
    """A cache of VIEWS draws recorded by kdscene-cache's code for the tiny run."""
    root = tmp_path_factory.mktemp("cache_run")
    overrides = [*run_overrides(synthetic_root, teacher_file, root), f"cache.views={VIEWS}"]
    cfg = compose_config("train", [*overrides, f"cache.path={root / 'cache'}"], root / "out")
    return record(cfg).path
