"""The one torch ``Dataset`` over any reader's items, and the training/evaluation transforms.

Default transforms follow the DCT paper's code (López-Cifuentes et al., ``trainCNNs.py``): training
``Resize(256)`` on the shorter side → ``RandomCrop(224)`` → horizontal flip; evaluation ``Resize(256)``
→ ``CenterCrop(224)``. With ``resize=None`` and ``crop_padding=4`` on 32×32 images the same function
gives RepDistiller's CIFAR recipe (the resize and the centre crop are then identities).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from kdscene.data.reader import CorruptImageError, Reader

log = logging.getLogger(__name__)


class ImageListDataset(Dataset):
    """(image, label) pairs from a reader's ``(item, label)`` list; ``reader.load`` decodes each item.

    Args:
        reader: decodes the items (a file reader reads paths, CIFAR-100 indexes its array).
        items: ``(item, label)`` pairs, e.g. ``reader.samples(split).pairs``.
        transform: applied to the decoded RGB PIL image.
        skip_corrupt: when an image cannot be decoded, log a warning naming it, count it in
            ``skipped`` and return the next readable sample instead of raising.
        draft_size: smallest side the decoder must keep (JPEG draft mode); ``None`` decodes fully.
    """

    def __init__(
        self,
        reader: Reader,
        items: Sequence[tuple[Hashable, int]],
        transform: T.Compose | None = None,
        skip_corrupt: bool = False,
        draft_size: int | None = None,
    ) -> None:
        self.reader = reader
        self.samples = list(items)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.draft_size = draft_size
        self.skipped: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor | Image.Image, int]:
        for offset in range(len(self.samples)):
            item, label = self.samples[(index + offset) % len(self.samples)]
            try:
                img = self.reader.load(item, self.draft_size)
            except CorruptImageError as err:
                if not self.skip_corrupt:
                    raise
                if item not in self.skipped:
                    self.skipped.add(item)
                    log.warning("skipping corrupt image (%d in this process): %s", len(self.skipped), err)
                continue
            return (self.transform(img) if self.transform else img), label
        raise CorruptImageError(f"every image of this split is corrupt ({len(self.samples)} files)")

    def find_corrupt(self) -> list[Hashable]:
        """Decode every image once and return the items that fail (slow: a full pass over the data)."""
        bad = []
        for item, _ in self.samples:
            try:
                self.reader.load(item, self.draft_size).load()
            except CorruptImageError:
                bad.append(item)
        return bad


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
