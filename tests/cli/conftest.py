"""Fixtures for CLI tests: a small synthetic data set generated once per session, tiny run settings."""

from pathlib import Path

import pytest

from kdscene.cli.config import CONFIG_DIR
from tests.helpers import tiny_scenes

DISTILL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "distill").glob("*.yaml"))


@pytest.fixture
def tiny_overrides(synthetic_root, tmp_path) -> list[str]:
    """Overrides that make any training run take seconds: small data, small nets, few batches."""
    return [
        *tiny_scenes(synthetic_root),
        "data.num_workers=0",
        "logger=csv",
        f"paths.root_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
