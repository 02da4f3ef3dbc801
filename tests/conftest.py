"""Test-session settings: wandb off, deterministic torch, few threads on the 2-core CI machine."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Where the tests' small synthetic scenes are generated (once per session, by the first run)."""
    return tmp_path_factory.mktemp("data") / "synthetic_scenes"
