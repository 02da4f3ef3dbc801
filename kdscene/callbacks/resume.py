"""Exact resume: random states travel in the checkpoint, and loggers rewind to it.

Lightning's checkpoints restore weights, optimizer, schedule and loop counters but no random state,
so a resumed run draws other shuffles, crops and dropout masks than the run it continues. This
callback stores the Python, NumPy and torch (CPU and every CUDA device) generator states in each
checkpoint and puts them back when training restarts: after the sanity check (which may draw
numbers, e.g. data-loader worker seeds) and before the first training batch, i.e. at the point where
the uninterrupted run saved them. It also rewinds every logger that can (``kdscene.loggers.CSVLogger``)
to the checkpoint's step, so rows the killed run wrote after its last checkpoint are not kept twice;
a fresh run in a folder that holds an earlier run's rows starts its file afresh.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture_random_state() -> dict[str, Any]:
    """The Python, NumPy and torch generator states (CUDA devices included when present)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_random_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(L.Callback):
    """Save random states in every checkpoint; on resume, restore them and rewind the loggers."""

    def __init__(self) -> None:
        self._saved: dict[str, Any] | None = None
        self._resume_step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"random": capture_random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = state_dict.get("random")

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resume_step = int(checkpoint.get("global_step", 0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "rewind"):
                logger.rewind(self._resume_step)
        if self._saved is not None:
            restore_random_state(self._saved)
            self._saved = None
