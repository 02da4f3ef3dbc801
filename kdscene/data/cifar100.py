"""CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report 2009).

60,000 32×32 images (50,000 training, 10,000 test) in 100 fine classes, read from the python pickle
release that ``torchvision.datasets.CIFAR100`` downloads: ``cifar-100-python/{train,test,meta}``.
kdscene unpickles the files itself (same arrays, labels and class order as torchvision) because
torchvision checks their MD5 sums and so cannot read anything but the exact official files; nothing is
downloaded. The files are pickles: read only copies you trust.

This is an array reader: its items are indices into the unpickled ``(N, 32, 32, 3)`` uint8 array (the
training images first, then the test images, in the order the splits were read) and :meth:`CIFAR100.load`
returns ``Image.fromarray`` of one row, so the images go through the same dataset class and transforms as
every other reader. ``conf/data/cifar100.yaml`` sets the CIFAR recipe of RepDistiller (Tian et al.,
"Contrastive Representation Distillation", ICLR 2020), also used by the SRM and FAM benchmarks:
``RandomCrop(32, padding=4)`` + horizontal flip for training, no augmentation for evaluation (with
``resize: null`` the resize and the centre crop to 32 leave the 32×32 images as they are), mean
``(0.5071, 0.4865, 0.4409)``, std ``(0.2673, 0.2564, 0.2762)``, batch 64. Labels are the fine labels.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kdscene.data.reader import Reader, Samples, Split

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR100_LAYOUT = """\
  (root holds cifar-100-python/, or is that folder; the python version of the official release)
  cifar-100-python/train     pickle: {"data": uint8 array (50000, 3072), "fine_labels": [...], ...}
  cifar-100-python/test      same, 10,000 images
  cifar-100-python/meta      pickle: {"fine_label_names": [100 names], "coarse_label_names": [...]}"""

_FILES = {"train": "train", "val": "test"}


class CIFAR100(Reader[int]):
    """CIFAR-100 from torchvision's pickle layout (see ``LAYOUT``); ``"val"`` is the test set.

    Args:
        root: the folder holding ``cifar-100-python/`` (torchvision's ``root``) or that folder.
    """

    LAYOUT = CIFAR100_LAYOUT
    NAME = "CIFAR-100"

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.images = np.empty((0, 32, 32, 3), np.uint8)
        self._read: dict[str, Samples[int]] = {}

    @property
    def data_dir(self) -> Path:
        """``root/cifar-100-python`` when it exists, else ``root``."""
        nested = self.root / "cifar-100-python"
        return nested if nested.is_dir() else self.root

    def _unpickle(self, name: str) -> dict[str, Any]:
        """A release file as a dict with ``str`` keys (the files were written by Python 2)."""
        path = self.data_dir / name
        if not path.is_file():
            raise self.error(f"{self.NAME}: missing file {path}")
        try:
            with open(path, "rb") as f:
                content = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as err:
            raise self.error(f"{self.NAME}: {path} is not a CIFAR pickle ({err})") from err
        if not isinstance(content, dict):
            raise self.error(f"{self.NAME}: {path} does not hold a dict")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}

    def read_classes(self) -> list[str]:
        meta = self._unpickle("meta")
        if "fine_label_names" not in meta:
            raise self.error(f"{self.NAME}: {self.data_dir / 'meta'} has no 'fine_label_names'")
        return [str(name) for name in meta["fine_label_names"]]

    def read_arrays(self, split: Split) -> tuple[np.ndarray, list[int]]:
        """A split's images as ``(N, 32, 32, 3)`` uint8 and its fine labels, read from its pickle.

        Args:
            split: ``"train"`` or ``"val"`` (the ``test`` file).

        Returns:
            The images (channels last) and one label per image.
        """
        path, entry = self.data_dir / _FILES[split], self._unpickle(_FILES[split])
        data, labels = np.asarray(entry.get("data")), entry.get("fine_labels")
        if (
            data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or not len(data)
            or labels is None
            or len(labels) != len(data)
        ):
            raise self.error(f"{self.NAME}: {path} must hold 'data' (N, 3072), N > 0, and N 'fine_labels'")
        n = len(self.classes())
        if max(labels, default=0) >= n or min(labels, default=0) < 0:
            raise self.error(f"{self.NAME}: {path} has labels outside 0..{n - 1}")
        # rows are the red, green and blue 32×32 planes one after the other
        images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), [int(y) for y in labels]

    def read_samples(self, split: Split) -> Samples[int]:
        """The split's rows, appended to :attr:`images` on first use; items index that array."""
        if split not in self._read:
            images, labels = self.read_arrays(split)
            start = len(self.images)
            self.images = np.concatenate([self.images, images])
            pairs = [(start + i, y) for i, y in enumerate(labels)]
            self._read[split] = Samples(pairs, str(self.data_dir / _FILES[split]))
        return self._read[split]

    def load(self, item: int, draft_size: int | None = None) -> Image.Image:
        """Row ``item`` of :attr:`images` as an RGB image (``draft_size`` does not apply)."""
        return Image.fromarray(self.images[item])
