"""Fixtures for CLI tests: a small synthetic data set generated once per session, tiny run settings."""

from pathlib import Path

import pytest

from kdscene.cli.config import CONFIG_DIR

DISTILL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "distill").glob("*.yaml"))


@pytest.fixture
def tiny_overrides(synthetic_root, tmp_path) -> list[str]:
    """Overrides that make any training run take seconds: small data, small nets, few batches."""
    return [
        f"data.root={synthetic_root}",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=8",
        "data.reader.test_per_class=4",
        "data.batch_size=8",
        "data.num_workers=0",
        "teacher.name=resnet10",
        "student.name=resnet10",
        "logger=csv",
        f"paths.root_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
