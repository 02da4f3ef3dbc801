"""Miniature copies of the datasets' real on-disk layouts, written by the tests (tiny JPEGs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 12) -> None:
    """A small random RGB JPEG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_corrupt(path: Path) -> None:
    """A file with a .jpg name that no decoder accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")


def make_mit_indoor(
    root: Path, classes: Sequence[str] = ("bar", "kitchen", "mall"), n_train: int = 3, n_test: int = 2
) -> dict[str, list[str]]:
    """MIT Indoor 67: Images/<class>/<file>.jpg with TrainImages.txt / TestImages.txt.

    The first test image of the last class has a space in its name, as six real files do.
    """
    lists: dict[str, list[str]] = {"TrainImages.txt": [], "TestImages.txt": []}
    seed = 0
    for cls in classes:
        for split, count in (("TrainImages.txt", n_train), ("TestImages.txt", n_test)):
            for i in range(count):
                spaced = cls == classes[-1] and i == 0
                name = f"{cls} room {i}.jpg" if spaced else f"{cls}_{split[:2]}{i}.jpg"
                write_image(root / "Images" / cls / name, seed)
                seed += 1
                lists[split].append(f"{cls}/{name}")
    # an image on disk that no list mentions must be ignored
    write_image(root / "Images" / classes[0] / "unlisted.jpg", 999)
    for split, lines in lists.items():
        (root / split).write_text("\n".join(lines) + "\n")
    return lists
