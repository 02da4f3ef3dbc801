"""ADE20K scene classification (Zhou et al., "Scene Parsing through ADE20K Dataset", CVPR 2017).

The scene-parsing benchmark release ``ADEChallengeData2016`` gives every image one scene label in
``sceneCategories.txt``; the DCT paper (López-Cifuentes et al., 2022) classifies those labels:
20,210 training and 2,000 validation images, 1,055 labels (``misc``, a catch-all, included).
Classes are the sorted set of *all* scene names of the file (training and validation), which is the
order of the DCT authors' ``scene_names.txt``. On the real data 15 validation labels never occur in
training: they are kept (so top-1 cannot reach 100%, as in the paper); their number is logged and
available as :attr:`ADE20KScenes.val_only_classes`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from kdscene.data.reader import Reader, Samples, Split

log = logging.getLogger(__name__)

ADE20K_LAYOUT = """\
  (root is ADEChallengeData2016/ or the folder containing it)
  ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...     20,210 images
  ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...     2,000 images
  ADEChallengeData2016/sceneCategories.txt   lines "ADE_train_00000001 airport_terminal", 22,210 lines"""

SCENE_FILE = "sceneCategories.txt"
_PREFIX = {"train": "ADE_train_", "val": "ADE_val_"}
_IMAGE_DIR = {"train": "training", "val": "validation"}


def parse_scene_line(line: str) -> tuple[str, str, str]:
    """``"ADE_train_00000001 airport_terminal"`` → (``"train"``, image name, scene)."""
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(f"expected '<image name> <scene>', got {line!r}")
    name, scene = fields
    for split, prefix in _PREFIX.items():
        if name.startswith(prefix):
            return split, name, scene
    raise ValueError(f"image name {name!r} starts with neither ADE_train_ nor ADE_val_")


class ADE20KScenes(Reader[Path]):
    """ADE20K scene labels from ``root`` (see ``LAYOUT``); ``"val"`` is the validation images.

    Args:
        root: ``ADEChallengeData2016/`` or the folder containing it.
    """

    LAYOUT = ADE20K_LAYOUT
    NAME = "ADE20K"

    @property
    def data_dir(self) -> Path:
        """``root`` itself, or ``root/ADEChallengeData2016`` when that folder exists."""
        nested = self.root / "ADEChallengeData2016"
        return nested if nested.is_dir() else self.root

    @cached_property
    def scene_entries(self) -> list[tuple[str, str, str]]:
        """(split, image name, scene) for every line of ``sceneCategories.txt`` (parsed once)."""
        return self.parse_list(self.data_dir / SCENE_FILE, parse_scene_line)

    def _scenes(self, split: str) -> set[str]:
        return {scene for s, _, scene in self.scene_entries if s == split}

    @property
    def val_only_classes(self) -> list[str]:
        """Sorted scene names that occur in validation but never in training (kept as classes)."""
        return sorted(self._scenes("val") - self._scenes("train"))

    def read_classes(self) -> list[str]:
        if not (self.data_dir / "images").is_dir():
            raise self.error(f"{self.NAME}: missing folder {self.data_dir / 'images'}")
        classes = sorted(self._scenes("train") | self._scenes("val"))
        log.info(
            "%s: %d scene classes; %d occur only in validation (kept, never learnable): %s",
            self.NAME,
            len(classes),
            len(self.val_only_classes),
            ", ".join(self.val_only_classes[:20]),
        )
        return classes

    def read_samples(self, split: Split) -> Samples[Path]:
        index = self.class_index()
        images = self.data_dir / "images" / _IMAGE_DIR[split]
        entries = [(name, scene) for s, name, scene in self.scene_entries if s == split]
        pairs = [(images / f"{name}.jpg", index[scene]) for name, scene in entries]
        return Samples(pairs, str(self.data_dir / SCENE_FILE))
