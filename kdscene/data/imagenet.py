"""ImageNet, ILSVRC-2012 (Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge", IJCV 2015).

1,000 classes named by WordNet ids ("wnids", ``n01440764``), 1,281,167 training images and 50,000
validation images (50 per class); the validation set is the evaluation split here (the test set has no
public labels). Classes are the **sorted wnids**, the order of torchvision's ``ImageFolder`` and
``datasets.ImageNet``, so label ``i`` is label ``i`` of a torchvision-pretrained network.

Training images are read from ``train/<wnid>/`` as ``ImageFolder`` reads them: sorted class folders,
then every file with an image extension below each (any depth), sorted. Validation images are read
from one of two layouts:

- **class folders** ``val/<wnid>/*.JPEG`` (what most preparation scripts and torchvision's
  ``datasets.ImageNet`` leave): the label is the folder; chosen whenever ``val/`` has sub-folders;
- **flat**, as distributed: ``val/ILSVRC2012_val_00000001.JPEG`` ... with the labels read from the
  file ``val_labels`` when given, else from the first of these found in ``root`` or, when ``root`` holds
  none of them, in the devkit's ``root/ILSVRC2012_devkit_t12/data/``:

  1. ``LOC_val_solution.csv`` (Kaggle's): header ``ImageId,PredictionString``; the label is the first
     word (a wnid) of ``PredictionString``, the file ``<ImageId>.JPEG``;
  2. ``val_labels.txt``, then 3. ``val.txt``: lines ``<file> <wnid>``, or ``<file> <index>`` with the
     0-based index in the sorted wnids (Caffe's ``ilsvrc12`` ``val.txt``);
  4. ``ILSVRC2012_validation_ground_truth.txt`` (devkit): line ``k`` holds the 1-based ILSVRC2012_ID of
     ``ILSVRC2012_val_<k, 8 digits>.JPEG``, mapped to wnids through the devkit's ``meta.mat`` (same
     folder) and read with scipy, the only file that needs it.

Both layouts list the validation images sorted by file name, so they give the same samples in the same
order. ``LOC_synset_mapping.txt`` (Kaggle's, ``n01440764 tench, Tinca tinca``), when found in ``root``
or beside the ``val_labels`` file, gives :meth:`ImageNet.descriptions`; the classes stay the wnids.

Kaggle's copy (``imagenet-object-localization-challenge/``) is read with ``root`` its
``ILSVRC/Data/CLS-LOC`` folder and ``val_labels`` its ``LOC_val_solution.csv``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from kdscene.data.reader import Reader, Samples, Split

IMAGENET_LAYOUT = """\
  train/<wnid>/*.JPEG                 1,000 class folders (n01440764 ...), 1,281,167 images
  val/<wnid>/*.JPEG                   50,000 images in class folders, or flat as distributed:
  val/ILSVRC2012_val_00000001.JPEG    ... with labels from reader.val_labels, else the first found of
    LOC_val_solution.csv                     "ImageId,PredictionString" (Kaggle), the wnid first
    val_labels.txt, val.txt                  lines "<file> <wnid>" or "<file> <index in sorted wnids>"
    ILSVRC2012_validation_ground_truth.txt   devkit: ILSVRC2012_ID per line, with meta.mat (needs scipy)
  (in this order in root, then in root/ILSVRC2012_devkit_t12/data/)
  LOC_synset_mapping.txt              optional: "n01440764 tench, Tinca tinca" (descriptions)"""

LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt", "val.txt", "ILSVRC2012_validation_ground_truth.txt")
DEVKIT_DATA = Path("ILSVRC2012_devkit_t12") / "data"
SYNSET_MAPPING = "LOC_synset_mapping.txt"


def is_image(name: str) -> bool:
    """Whether ``ImageFolder`` would read the file (its extensions, any case)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def folder_images(folder: Path) -> list[Path]:
    """Every image below ``folder`` in ``ImageFolder``'s order (sorted walk, sorted file names)."""
    found = []
    for parent, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [Path(parent) / name for name in sorted(names) if is_image(name)]
    return found


def read_meta_mat(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID → wnid of the 1,000 leaf synsets of the devkit's ``meta.mat`` (needs scipy)."""
    from scipy.io import loadmat  # the only use of scipy; imported here so that nothing else needs it

    synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}


class ImageNet(Reader[Path]):
    """ILSVRC-2012 from ``root`` (see ``LAYOUT``); ``"val"`` is the 50,000-image validation set.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        val_labels: the label file of a flat ``val/`` (absolute, or relative to ``root``), in any of the
            formats above; ``None`` looks for one (see the module docstring).
    """

    LAYOUT = IMAGENET_LAYOUT
    NAME = "ImageNet"

    def __init__(self, root: str | Path, val_labels: str | Path | None = None) -> None:
        super().__init__(root)
        self.val_labels = None if val_labels is None else self.root / Path(val_labels).expanduser()
        self._read: dict[str, Samples[Path]] = {}

    def read_classes(self) -> list[str]:
        train = self.root / "train"
        if not train.is_dir():
            raise self.error(f"{self.NAME}: missing folder {train}")
        wnids = sorted(entry.name for entry in os.scandir(train) if entry.is_dir())
        if not wnids:
            raise self.error(f"{self.NAME}: {train} has no class folders")
        return wnids

    def read_samples(self, split: Split) -> Samples[Path]:
        """The split's pairs, listed once (walking a million files takes a while) and then kept."""
        if split not in self._read:
            self._read[split] = self._train() if split == "train" else self._val()
        return self._read[split]

    def _train(self) -> Samples[Path]:
        train = self.root / "train"
        pairs = [
            (path, label) for label, wnid in enumerate(self.classes()) for path in folder_images(train / wnid)
        ]
        return Samples(pairs, str(train))

    def _val(self) -> Samples[Path]:
        val = self.root / "val"
        if not val.is_dir():
            raise self.error(f"{self.NAME}: missing folder {val}")
        folders = sorted(entry.name for entry in os.scandir(val) if entry.is_dir())
        if not folders:
            return self._flat_val(val)
        loose = [entry.name for entry in os.scandir(val) if entry.is_file() and is_image(entry.name)]
        if loose:
            raise self.error(
                f"{self.NAME}: {val} holds class folders and images ({loose[0]}); keep one layout"
            )
        index = self.class_index()
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise self.error(f"{self.NAME}: {val / unknown[0]} is not a class of {self.root / 'train'}")
        pairs = [(path, index[wnid]) for wnid in folders for path in folder_images(val / wnid)]
        return Samples(sorted(pairs, key=lambda pair: (pair[0].name, pair[0])), str(val))

    # ---- flat validation folder and its label file ----------------------------------------------
    def label_file(self) -> Path:
        """The label file of a flat ``val/``: ``val_labels``, else the first of ``LABEL_FILES`` found."""
        if self.val_labels is not None:
            if not self.val_labels.is_file():
                raise self.error(f"{self.NAME}: the val_labels file {self.val_labels} does not exist")
            return self.val_labels
        for folder in (self.root, self.root / DEVKIT_DATA):
            for name in LABEL_FILES:
                if (folder / name).is_file():
                    return folder / name
        raise self.error(
            f"{self.NAME}: {self.root / 'val'} is flat but no label file was found: looked for "
            f"{', '.join(LABEL_FILES)} in {self.root} and {self.root / DEVKIT_DATA}"
        )

    def _flat_val(self, val: Path) -> Samples[Path]:
        path = self.label_file()
        if path.name == LABEL_FILES[3]:
            labels = self._devkit_labels(path)
        elif path.suffix == ".csv":
            labels = self._csv_labels(path)
        else:
            labels = self._list_labels(path)
        return Samples([(val / name, labels[name]) for name in sorted(labels)], str(path))

    def _label(self, value: str) -> int:
        """A wnid, or a 0-based index in the sorted wnids, as a label; ``ValueError`` otherwise."""
        index = self.class_index()
        if value in index:
            return index[value]
        if value.isdigit() and int(value) < len(index):
            return int(value)
        raise ValueError(f"{value!r} is neither a class (wnid) of train/ nor an index below {len(index)}")

    def _unique(self, entries: list[tuple[str, int]], path: Path) -> dict[str, int]:
        labels = dict(entries)
        if len(labels) != len(entries):
            raise self.error(f"{self.NAME}: {path} lists an image more than once")
        return labels

    def _list_labels(self, path: Path) -> dict[str, int]:
        def parse(line: str) -> tuple[str, int]:
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"expected '<file> <wnid or index>', got {line!r}")
            return Path(fields[0]).name, self._label(fields[1])

        return self._unique(self.parse_list(path, parse), path)

    def _csv_labels(self, path: Path) -> dict[str, int]:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
            raise self.error(f"{self.NAME}: {path} must start with the header 'ImageId,PredictionString'")
        entries = []
        for number, row in enumerate(rows[1:], 2):
            try:
                if len(row) < 2 or not row[1].split():
                    raise ValueError(f"expected '<ImageId>,<wnid> ...', got {','.join(row)!r}")
                entries.append((f"{row[0].strip()}.JPEG", self._label(row[1].split()[0])))
            except ValueError as err:
                raise self.error(f"{path}, line {number}: {err}") from None
        return self._unique(entries, path)

    def _devkit_labels(self, path: Path) -> dict[str, int]:
        meta = path.parent / "meta.mat"
        if not meta.is_file():
            raise self.error(f"{self.NAME}: {path} needs the devkit's {meta} to map its ids to wnids")
        try:
            wnid_of = read_meta_mat(meta)
        except ImportError:
            raise self.error(
                f"{self.NAME}: reading {meta} needs scipy (pip install scipy); or give the labels as "
                "LOC_val_solution.csv or val.txt (see the layout below)"
            ) from None

        def parse(line: str) -> int:
            value = line.strip()
            if not value.isdigit() or int(value) not in wnid_of:
                raise ValueError(f"expected the ILSVRC2012_ID of a class of meta.mat, got {line!r}")
            return self._label(wnid_of[int(value)])

        ids = self.parse_list(path, parse)
        return {f"ILSVRC2012_val_{k:08d}.JPEG": label for k, label in enumerate(ids, 1)}

    # ---- names --------------------------------------------------------------------------------
    def descriptions(self) -> dict[str, str]:
        """wnid → words of ``LOC_synset_mapping.txt`` (in ``root`` or beside ``val_labels``), else ``{}``."""
        folders = [self.root] + ([self.val_labels.parent] if self.val_labels is not None else [])
        path = next((f / SYNSET_MAPPING for f in folders if (f / SYNSET_MAPPING).is_file()), None)
        if path is None:
            return {}

        def parse(line: str) -> tuple[str, str]:
            wnid, _, words = line.strip().partition(" ")
            if not words:
                raise ValueError(f"expected '<wnid> <words>', got {line!r}")
            return wnid, words

        return dict(self.parse_list(path, parse))
