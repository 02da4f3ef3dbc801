"""A SceneDataModule with tiny images and no worker processes, for the reader tests."""

from __future__ import annotations

from kdscene.data import Reader, SceneDataModule


def tiny_datamodule(reader: Reader, **options) -> SceneDataModule:
    """``SceneDataModule(reader)`` with 8 px crops of 10 px resizes, batch 4, no workers (overridable)."""
    defaults = {"image_size": 8, "resize": 10, "batch_size": 4, "num_workers": 0}
    return SceneDataModule(reader, **{**defaults, **options})
