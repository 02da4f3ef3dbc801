"""Checkpoints written atomically: a temporary file in the target folder, fsync, then a rename.

Lightning's own "atomic" save writes through a temporary file in the system's temp folder and copies
it across devices, so a kill or a full disk during the copy leaves a truncated ``last.ckpt`` that no
longer loads, in place of the good one. Here the temporary file sits next to the target (same file
system), is flushed to disk, and only then replaces the target with ``os.replace`` (atomic on POSIX
and Windows): a reader sees either the old complete file or the new complete file, never a part.
A failed write removes its temporary file and re-raises, leaving the previous checkpoint in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that either fully replaces ``path`` or leaves it untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose local saves go through :func:`atomic_torch_save`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
