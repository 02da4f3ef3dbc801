"""Loggers that survive a resume, DDP and a missing network.

:class:`CSVLogger` keeps the rows already written when a run resumes in its own folder (Lightning's
deletes ``metrics.csv`` whenever the folder is not empty) and rewinds them to the checkpoint's step;
it also reads the header already on disk before adding columns, which Lightning's does not, so the
test phase of a ``ddp_spawn`` run (a fresh process whose logger never saw the fit's columns) no longer
crashes with ``dict contains fields not in fieldnames`` after wiping the file.

:class:`WandbLogger` falls back to offline mode, with one warning, when the W&B server cannot be
reached or no API key is configured, instead of stopping the run before training.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

log = logging.getLogger(__name__)


class ResumableWriter(ExperimentWriter):
    """Lightning's CSV writer that never deletes earlier rows on its own and merges headers."""

    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv``: :meth:`rewind` decides what stays."""

    def _read_rows(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self._fs.isfile(self.metrics_file_path):
            return [], []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            return list(reader.fieldnames or []), list(reader)

    def _record_new_keys(self) -> set[str]:
        if not self.metrics_keys:  # first save in this process: start from the header on disk
            self.metrics_keys = self._read_rows()[0]
        return super()._record_new_keys()

    def rewind(self, step: int) -> int:
        """Drop the rows logged at ``step`` or later (all rows for 0); return how many were dropped."""
        self.metrics = []
        header, rows = self._read_rows()
        kept = [row for row in rows if row.get("step", "") != "" and int(float(row["step"])) < step]
        if len(kept) != len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
        self.metrics_keys = header
        return len(rows) - len(kept)


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSV logger with a writer that survives resumes and DDP (module docstring)."""

    @property
    def experiment(self) -> ResumableWriter:
        """The writer (created on first use; only rank 0 writes)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumableWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def rewind(self, step: int) -> None:
        """Keep only the rows logged before ``step`` (0 starts the file afresh)."""
        dropped = self.experiment.rewind(step)
        if dropped and step == 0:
            rank_zero_warn(f"{self.log_dir}/metrics.csv held {dropped} rows of an earlier run: cleared")
        elif dropped:
            log.info("metrics.csv: dropped %d rows logged after the checkpoint (step %d)", dropped, step)


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger that falls back to offline mode when the server cannot be reached."""

    @property
    def experiment(self) -> Any:
        """The W&B run; on a failed online start, an offline run (one warning)."""
        try:
            return super().experiment
        except Exception as err:  # wandb raises CommError, UsageError, AuthenticationError, ...
            if self._offline:
                raise
            rank_zero_warn(f"W&B could not start online ({type(err).__name__}: {err}); logging offline")
            self._offline = True
            self._wandb_init["mode"] = "offline"
            os.environ["WANDB_MODE"] = "offline"
            return super().experiment
