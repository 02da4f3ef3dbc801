"""Fault injection for the slow tests: a callback that SIGKILLs its own process at a chosen step."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """Kill the process with SIGKILL (no clean-up, like a pre-empted job) after global step ``step``.

    Args:
        step: the global step after which to die; negative never kills. ``None`` reads it from the
            environment variable ``KDSCENE_KILL_AT_STEP`` (so that a killed run and its resumption can
            have the same overrides).
        where: only kill in a run whose output folder contains this text (a stage's name).
    """

    def __init__(self, step: int | None = None, where: str = "") -> None:
        self.step = int(os.environ.get("KDSCENE_KILL_AT_STEP", -1)) if step is None else int(step)
        self.where = where

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if 0 <= self.step <= trainer.global_step and self.where in str(trainer.default_root_dir):
            os.kill(os.getpid(), signal.SIGKILL)
