"""What a teacher cache was recorded from, and the check that a run replays it only where it fits.

A cache's header (``header.json``) names everything its rows depend on: the data set (reader class,
root, classes, number of training images and a digest of their list), the training transform (image
size, resize, crop, padding, flip, mean/std), the sampling seed (with the draw and the index it
gives each view: :func:`kdscene.data.sampling.view_seed`), the teacher (spec, checkpoint path, the
SHA-256 of that file and of the teacher's weights) and the taps with their sizes. A run that
replays the cache builds the same description from its own settings; every difference is named in
one :class:`CacheMismatchError`, so a cache is never silently reused for another data set, view or
teacher.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdscene.models import BackboneSpec

if TYPE_CHECKING:
    from kdscene.data import SceneDataModule

FORMAT = "kdscene-teacher-cache"
VERSION = 1


class CacheMismatchError(ValueError):
    """A teacher cache does not fit the run that wants to replay it (or its rows are not the teacher's)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a network's state dict: names, dtypes, shapes and values, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{flat.dtype}:{tuple(flat.shape)}".encode())
        digest.update(flat.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_section(datamodule: SceneDataModule) -> dict[str, Any]:
    """The training split's identity; ``datamodule`` must be set up (its ``"train"`` dataset built)."""
    dataset = datamodule.datasets["train"]
    listing = json.dumps([[str(item), int(label)] for item, label in dataset.samples])
    reader = type(datamodule.reader)
    return {
        "reader": f"{reader.__module__}.{reader.__qualname__}",
        "root": str(Path(datamodule.reader.root).expanduser().resolve()),
        "classes": list(datamodule.classes),
        "num_images": len(dataset),
        "items_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


def transform_section(datamodule: SceneDataModule) -> dict[str, Any]:
    """The training transform's settings (the crop box and flip of a view follow from its seed)."""
    return {
        "image_size": datamodule.image_size,
        "resize": datamodule.resize,
        "train_crop": datamodule.train_crop,
        "crop_padding": datamodule.crop_padding,
        "hflip": datamodule.hflip,
        "mean": [float(v) for v in datamodule.mean],
        "std": [float(v) for v in datamodule.std],
    }


def _resolved(spec: BackboneSpec, attribute: str) -> Any:
    """``spec.tap_layers`` / ``spec.tap_head`` where known without building the network, else ``None``."""
    try:
        value = getattr(spec, attribute)
    except RuntimeError:  # found on the built network only (any non-preset without explicit taps)
        return None
    return list(value) if isinstance(value, tuple) else value


def teacher_section(spec: BackboneSpec) -> dict[str, Any]:
    """The teacher's spec, its weight files and their SHA-256 (read, not built)."""
    files = {key: getattr(spec, key) for key in ("checkpoint", "init")}
    path = files["checkpoint"] or files["init"]
    return {
        "name": spec.label,
        "checkpoint": str(Path(path).expanduser().resolve()) if files["checkpoint"] else None,
        "init": str(Path(path).expanduser().resolve()) if files["init"] else None,
        "weights": spec.weights,
        "layers": _resolved(spec, "tap_layers"),
        "head": _resolved(spec, "tap_head"),
        "file_sha256": file_sha256(path) if path and Path(path).expanduser().is_file() else None,
    }


def run_description(datamodule: SceneDataModule, spec: BackboneSpec) -> dict[str, Any]:
    """What a run's cache must have been recorded from: data, transform, sampling seed and teacher."""
    return {
        "data": data_section(datamodule),
        "transform": transform_section(datamodule),
        "sampling_seed": datamodule.sampling_seed,
        "teacher": teacher_section(spec),
    }


def differences(recorded: Mapping[str, Any], expected: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: cache X, run Y"`` for every entry of ``expected`` that ``recorded`` holds differently.

    Entries of ``expected`` that are ``None`` where the run cannot know them (taps of a network that
    is not built) are skipped; nested mappings are compared key by key.
    """
    found = []
    for key, want in expected.items():
        have = recorded.get(key)
        name = f"{prefix}{key}"
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            found += differences(have, want, f"{name}.")
        elif want is None and key in ("layers", "head"):
            continue
        elif have != want:
            found.append(f"{name}: cache {_short(have)}, run {_short(want)}")
    return found


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_header(header: Mapping[str, Any], expected: Mapping[str, Any], path: str | Path) -> None:
    """Raise :class:`CacheMismatchError` naming every difference between a cache and a run."""
    found = differences(header, expected)
    if found:
        raise CacheMismatchError(
            f"teacher cache {str(path)!r} was recorded for other settings than this run's:\n  "
            + "\n  ".join(found)
            + "\nrecord a cache for this run (kdscene-cache with the run's data, teacher and distill "
            "overrides) or train without teacher_cache"
        )
