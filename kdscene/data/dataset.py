"""The one torch ``Dataset`` over any reader's items, its batch collation, and the transforms.

A sample is fetched by a key ``(epoch, index)`` (:mod:`kdscene.data.sampling`; a plain ``index`` means
epoch 0) and its transform runs under a generator seeded by ``(seed, epoch, index)``: the view of a
sample is a pure function of those three numbers, whichever process loads it, and torch's global
generator is left untouched. Transforms must draw their random numbers from torch (torchvision's do).

Default transforms follow the DCT paper's code (López-Cifuentes et al., ``trainCNNs.py``): training
``Resize(256)`` on the shorter side → ``RandomCrop(224)`` → horizontal flip; evaluation ``Resize(256)``
→ ``CenterCrop(224)``. With ``resize=None`` and ``crop_padding=4`` on 32×32 images the same function
gives RepDistiller's CIFAR recipe (the resize and the centre crop are then identities).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate
from torchvision import transforms as T

from kdscene.data.reader import CorruptImageError, Reader
from kdscene.data.sampling import Key, seeded, view_seed

log = logging.getLogger(__name__)

Sample = tuple[Any, ...]
"""``(image, label)``, or ``(image, label, index)`` with ``return_index``."""


def parse_key(key: int | Key, size: int) -> Key:
    """``(epoch, index)`` from a sampler key or a plain index (epoch 0); negative indices count from the end.

    Args:
        key: ``(epoch, index)`` or ``index``.
        size: the dataset's length.

    Returns:
        ``(epoch, index)`` with ``0 <= index < size``; raises ``IndexError`` outside the dataset.
    """
    epoch, index = (0, key) if not isinstance(key, (tuple, list)) else key
    epoch, index = int(epoch), int(index)
    if not -size <= index < size:
        raise IndexError(f"ImageListDataset: index {index} is outside a dataset of {size} samples")
    return epoch, index % size


class ImageListDataset(Dataset):
    """(image, label) pairs from a reader's ``(item, label)`` list; ``reader.load`` decodes each item.

    Args:
        reader: decodes the items (a file reader reads paths, CIFAR-100 indexes its array).
        items: ``(item, label)`` pairs, e.g. ``reader.samples(split).pairs``.
        transform: applied to the decoded RGB PIL image, under a generator seeded by
            ``(seed, epoch, index)``.
        skip_corrupt: when an image cannot be decoded, log a warning naming it (once per file and
            process), add it to ``skipped`` and return ``None`` for the sample, which
            :class:`DropSkipped` leaves out of its batch; otherwise raise.
        draft_size: smallest side the decoder must keep (JPEG draft mode); ``None`` decodes fully.
        seed: the sampling seed that, with the epoch and the index, seeds each sample's augmentation.
        return_index: return ``(image, label, index)`` with the sample's position in ``items``.
    """

    def __init__(
        self,
        reader: Reader,
        items: Sequence[tuple[Hashable, int]],
        transform: T.Compose | None = None,
        skip_corrupt: bool = False,
        draft_size: int | None = None,
        seed: int = 0,
        return_index: bool = False,
    ) -> None:
        self.reader = reader
        self.samples = list(items)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.draft_size = draft_size
        self.seed = seed
        self.return_index = return_index
        self.skipped: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | Key) -> Sample | None:
        """The sample of ``key`` (``(epoch, index)`` or ``index``); ``None`` for a skipped corrupt image."""
        epoch, index = parse_key(key, len(self.samples))
        item, label = self.samples[index]
        try:
            img = self.reader.load(item, self.draft_size)
        except CorruptImageError as err:
            if not self.skip_corrupt:
                raise
            self._note_skipped(item, err)
            return None
        if self.transform is not None:
            with seeded(view_seed(self.seed, epoch, index)):
                img = self.transform(img)
        return (img, label, index) if self.return_index else (img, label)

    def _note_skipped(self, item: Hashable, err: CorruptImageError) -> None:
        if item not in self.skipped:
            self.skipped.add(item)
            log.warning("skipping corrupt image (%d in this process): %s", len(self.skipped), err)

    def find_corrupt(self) -> list[Hashable]:
        """Decode every image once and return the items that fail (slow: a full pass over the data)."""
        bad = []
        for item, _ in self.samples:
            try:
                self.reader.load(item, self.draft_size).load()
            except CorruptImageError:
                bad.append(item)
        return bad


class DropSkipped:
    """A loader's ``collate_fn``: leaves out the ``None`` of skipped samples, then ``default_collate``.

    A batch with a skipped sample is one shorter. A batch whose samples were all skipped becomes empty
    tensors of the usual types: images ``(0, *image_shape)`` float, labels (and indices) ``(0,)`` int64,
    so the step receives the usual structure with a batch size of 0 (and must not compute a loss on it).

    Args:
        image_shape: the shape of one image tensor, e.g. ``(3, 224, 224)``.
        with_index: the samples carry their index (``(image, label, index)``).
    """

    def __init__(self, image_shape: Sequence[int], with_index: bool = False) -> None:
        self.image_shape = tuple(image_shape)
        self.with_index = with_index

    def __call__(self, batch: Sequence[Sample | None]) -> list[Tensor]:
        kept = [sample for sample in batch if sample is not None]
        if kept:
            return default_collate(kept)
        empty = [torch.empty((0, *self.image_shape)), torch.empty(0, dtype=torch.int64)]
        return empty + [torch.empty(0, dtype=torch.int64)] if self.with_index else empty


def build_transforms(
    train: bool,
    image_size: int,
    resize: int | None,
    train_crop: str,
    hflip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
) -> T.Compose:
    """The training or evaluation pipeline (PIL image → normalised float tensor).

    Args:
        train: the training pipeline (random crop, flip) rather than the evaluation one.
        image_size: side of the square output.
        resize: shorter side after the first resize; ``None`` resizes to ``image_size``.
        train_crop: ``"random"``, ``"random_resized"`` or ``"center"``.
        hflip: random horizontal flip for training.
        mean, std: normalisation statistics.
        crop_padding: zero padding of the random training crop.

    Returns:
        The composed transform.
    """
    steps: list = []
    if train and train_crop == "random_resized":
        steps.append(T.RandomResizedCrop(image_size))
    else:
        steps.append(T.Resize(resize or image_size))
        if train and train_crop == "random":
            steps.append(T.RandomCrop(image_size, padding=crop_padding or None))
        else:
            steps.append(T.CenterCrop(image_size))
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
