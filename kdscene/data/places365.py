"""Places365 (Zhou et al., "Places: A 10 Million Image Database for Scene Recognition", TPAMI 2018).

365 scene classes; Places365-Standard has 1,803,460 training images (at most 5,000 per class), the
larger Places365-Challenge 8,026,628; the validation set has 100 images per class (36,500), and is the
evaluation split here (the test set has no public labels). Two on-disk layouts are read:

``layout="devkit"`` — the official CSAIL devkit, as ``torchvision.datasets.Places365`` reads it.
Class ``i`` is the category whose index in ``categories_places365.txt`` is ``i`` (the file is sorted,
so this is torchvision's sorted ``classes`` order); labels are the indices written in the file lists.
kdscene parses the files itself because torchvision refuses lists whose MD5 differs from the
official ones. Training images sit in ``data_256_standard/`` (torchvision's name after its download);
a manually extracted ``data_256/`` is accepted as well (same for ``large`` and ``challenge``).

``layout="easyformat"`` — ``places365standard_easyformat.tar`` (used by the DCT authors' lab): one
folder per class, named by flattening the category with hyphens (``/f/field/cultivated`` →
``field-cultivated``), and list files without labels. When a ``categories_places365.txt`` is found
(in the data folder or in ``root``), classes keep the devkit order, so label indices match a model
trained on the devkit layout; otherwise classes are the sorted names of the ``train/`` folders, which
gives the same order on the real data but cannot be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kdscene.data.reader import Reader, Sample, Samples, Split, read_lines

PLACES365_LAYOUT = """\
  layout="devkit" (official; torchvision.datasets.Places365):
    categories_places365.txt           lines "/a/airfield 0", 365 lines
    places365_train_standard.txt       lines "/a/abbey/00000000.jpg 0"
    places365_train_challenge.txt      (train_split="train-challenge")
    places365_val.txt                  lines "Places365_val_00000001.jpg 165"
    data_256_standard/a/abbey/...jpg   small=True  (or data_256/), data_large_standard/ for small=False
    data_256_challenge/...             train-challenge images (or data_256/)
    val_256/Places365_val_*.jpg        small=True; val_large/ for small=False
  layout="easyformat" (places365standard_easyformat.tar; root may also be its parent folder):
    places365_standard/train.txt       lines "train/airfield/00000000.jpg"
    places365_standard/val.txt         lines "val/field-cultivated/Places365_val_00032701.jpg"
    places365_standard/{train,val}/<category with '/' replaced by '-'>/<file>.jpg
    categories_places365.txt           optional, keeps the devkit class order"""

CATEGORIES = "categories_places365.txt"
_DEVKIT_LISTS = {
    "train-standard": "places365_train_standard.txt",
    "train-challenge": "places365_train_challenge.txt",
    "val": "places365_val.txt",
}


def flatten_category(category: str) -> str:
    """``"/f/field/cultivated"`` → ``"field-cultivated"`` (the easyformat folder name)."""
    parts = category.strip("/").split("/")
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    return "-".join(parts)


def parse_categories(lines: Sequence[str], source: Path) -> list[str]:
    """Category names in index order from ``"/a/airfield 0"`` lines; indices must be 0..n-1."""
    by_index: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{source}, line {number}: expected '<category> <index>', got {line!r}")
        by_index[int(fields[1])] = fields[0]
    if sorted(by_index) != list(range(len(lines))):
        raise ValueError(f"{source}: the indices are not 0..{len(lines) - 1}, each once")
    return [by_index[i] for i in range(len(lines))]


class Places365(Reader[Path]):
    """Places365 from ``root`` (see ``LAYOUT``); ``"val"`` is the official validation set.

    Args:
        root: the devkit folder, or for ``layout="easyformat"`` the ``places365_standard`` folder or
            its parent.
        layout: ``"devkit"`` (official) or ``"easyformat"`` (see the module docstring).
        train_split: ``"train-standard"`` (1.8 M images) or ``"train-challenge"`` (8 M; devkit only).
        small: the 256×256 images (``*_256*`` folders) instead of the large ones (devkit only;
            the easyformat archive holds 256×256 images).
    """

    LAYOUT = PLACES365_LAYOUT
    NAME = "Places365"

    def __init__(
        self,
        root: str | Path,
        layout: Literal["devkit", "easyformat"] = "devkit",
        train_split: Literal["train-standard", "train-challenge"] = "train-standard",
        small: bool = True,
    ) -> None:
        super().__init__(root)
        if layout not in ("devkit", "easyformat"):
            raise ValueError(f"layout must be 'devkit' or 'easyformat', got {layout!r}")
        if train_split not in ("train-standard", "train-challenge"):
            raise ValueError(
                f"train_split must be 'train-standard' or 'train-challenge', got {train_split!r}"
            )
        if layout == "easyformat" and train_split != "train-standard":
            raise ValueError("the easyformat layout only holds the train-standard split")
        self.layout, self.train_split, self.small = layout, train_split, small

    # ---- devkit -------------------------------------------------------------------------------
    def _categories(self, path: Path) -> list[str]:
        try:
            return parse_categories(read_lines(path, self.root, self.LAYOUT), path)
        except ValueError as err:
            raise self.error(str(err)) from None

    def _image_dir(self, split: str) -> Path:
        """The image folder of a devkit split; raises naming the folder(s) looked for."""
        size = "256" if self.small else "large"
        if split == "val":
            names = [f"val_{size}"]
        else:
            names = [f"data_{size}_{split.removeprefix('train-')}", f"data_{size}"]
        for name in names:
            if (self.root / name).is_dir():
                return self.root / name
        looked = " or ".join(str(self.root / n) for n in names)
        raise self.error(f"{self.NAME}: missing image folder {looked}")

    def _devkit_split(self, split: str) -> Samples[Path]:
        name = self.train_split if split == "train" else "val"
        path, n = self.root / _DEVKIT_LISTS[name], len(self.classes())

        def parse(line: str) -> tuple[str, int]:
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= n:
                raise ValueError(f"expected '<image> <class index < {n}>', got {line!r}")
            return fields[0].lstrip("/"), int(fields[1])

        entries = self.parse_list(path, parse)
        images = self._image_dir(name)
        return Samples([(images / rel, label) for rel, label in entries], str(path))

    # ---- easyformat ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The folder holding the images and lists (``root`` or ``root/places365_standard``)."""
        nested = self.root / "places365_standard"
        return nested if self.layout == "easyformat" and nested.is_dir() else self.root

    def _easyformat_classes(self) -> list[str]:
        for folder in (self.data_dir, self.root):
            if (folder / CATEGORIES).is_file():
                return [flatten_category(c) for c in self._categories(folder / CATEGORIES)]
        train = self.data_dir / "train"
        if not train.is_dir():
            raise self.error(f"{self.NAME}: missing folder {train}")
        return sorted(p.name for p in train.iterdir() if p.is_dir())

    def _easyformat_split(self, split: str) -> Samples[Path]:
        path, index = self.data_dir / f"{split}.txt", self.class_index()

        def parse(line: str) -> Sample:
            parts = line.strip().lstrip("/").split("/")
            if len(parts) < 3 or parts[1] not in index:
                raise ValueError(f"expected '{split}/<known category>/<file>', got {line!r}")
            return self.data_dir.joinpath(*parts), index[parts[1]]

        return Samples(self.parse_list(path, parse), str(path))

    # ---- Reader interface ---------------------------------------------------------------------
    def read_classes(self) -> list[str]:
        if self.layout == "easyformat":
            return self._easyformat_classes()
        return self._categories(self.root / CATEGORIES)

    def read_samples(self, split: Split) -> Samples[Path]:
        if self.layout == "easyformat":
            return self._easyformat_split(split)
        return self._devkit_split(split)
