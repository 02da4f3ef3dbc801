"""A one-line console progress report per run, for jobs that run many fits (the quickstart)."""

from __future__ import annotations

import sys
import time

import lightning as L


class ProgressLine(L.Callback):
    """One console line per run: which run, epoch, elapsed time, current accuracy.

    On a terminal the line is rewritten after every training epoch (with the training top-1) and
    completed when the fit ends (with the last validation top-1); elsewhere (a log file, CI) only the
    final line is printed.

    Args:
        label: the run's name at the start of the line.
    """

    def __init__(self, label: str) -> None:
        self.label = label.strip()
        self.start = time.perf_counter()
        self.live = sys.stdout.isatty()

    def _line(self, trainer: L.Trainer, key: str, name: str) -> str:
        elapsed = time.perf_counter() - self.start
        value = trainer.callback_metrics.get(key)
        shown = f"{name} {float(value):.3f}" if value is not None else ""
        done = min(trainer.current_epoch + 1, trainer.max_epochs or 0)  # the counter passes the end
        epoch = f"epoch {done:>3}/{trainer.max_epochs}"
        return f"{self.label:<36} {epoch}  {elapsed:6.0f} s  {shown}"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.live:
            print("\r" + self._line(trainer, "train/acc_top1", "train top-1"), end="", flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        line = self._line(trainer, "val/acc_top1", "test top-1")
        print(("\r" if self.live else "") + line, flush=True)
