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
    root: Path,
    classes: Sequence[str] = ("bar", "kitchen", "mall"),
    n_train: int = 3,
    n_test: int = 2,
    size: int = 12,
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
                write_image(root / "Images" / cls / name, seed, size)
                seed += 1
                lists[split].append(f"{cls}/{name}")
    # an image on disk that no list mentions must be ignored
    write_image(root / "Images" / classes[0] / "unlisted.jpg", 999)
    for split, lines in lists.items():
        (root / split).write_text("\n".join(lines) + "\n")
    return lists


PLACES_CATEGORIES = ("/a/airfield", "/b/bedroom", "/f/field/cultivated", "/f/field_road")


def _write_list(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_places365_devkit(
    root: Path,
    categories: Sequence[str] = PLACES_CATEGORIES,
    n_train: int = 2,
    n_challenge: int = 3,
    n_val: int = 2,
    size: int = 12,
) -> dict[str, list[str]]:
    """Places365 devkit: categories file, three file lists, images in the 256 and the large folders.

    The train lists are interleaved across classes (as the real lists are not), the val list names
    images by number only. Returns the list lines by file name.
    """
    _write_list(root / "categories_places365.txt", [f"{c} {i}" for i, c in enumerate(categories)])
    lists: dict[str, list[str]] = {}
    seed = 0
    for variant, count in (("standard", n_train), ("challenge", n_challenge)):
        lines = []
        for j in range(count):
            for i, cat in enumerate(categories):
                rel = f"{cat}/{j:08d}.jpg"
                for quality in ("256", "large"):
                    write_image(root / f"data_{quality}_{variant}" / rel.lstrip("/"), seed, size)
                seed += 1
                lines.append(f"{rel} {i}")
        lists[f"places365_train_{variant}.txt"] = lines
    lines = []
    for j in range(n_val * len(categories)):
        name, label = f"Places365_val_{j + 1:08d}.jpg", (j * 3) % len(categories)
        for quality in ("256", "large"):
            write_image(root / f"val_{quality}" / name, seed, size)
        seed += 1
        lines.append(f"{name} {label}")
    lists["places365_val.txt"] = lines
    for name, lines in lists.items():
        _write_list(root / name, lines)
    return lists


def make_places365_easyformat(
    root: Path,
    categories: Sequence[str] = PLACES_CATEGORIES,
    n_train: int = 2,
    n_val: int = 2,
    with_categories: bool = True,
    size: int = 12,
) -> dict[str, list[str]]:
    """Places365 easyformat: ``root/places365_standard/{train,val}/<flattened>/`` with train.txt/val.txt.

    ``with_categories`` also writes ``categories_places365.txt`` in ``root`` (next to the data folder).
    """
    data = root / "places365_standard"
    lists: dict[str, list[str]] = {"train.txt": [], "val.txt": []}
    seed = 100
    for cat in categories:
        flat = "-".join(cat.strip("/").split("/")[1:])
        for split, count in (("train", n_train), ("val", n_val)):
            for j in range(count):
                name = f"{j:08d}.jpg" if split == "train" else f"Places365_val_{seed:08d}.jpg"
                write_image(data / split / flat / name, seed, size)
                seed += 1
                lists[f"{split}.txt"].append(f"{split}/{flat}/{name}")
    for name, lines in lists.items():
        _write_list(data / name, lines)
    if with_categories:
        _write_list(root / "categories_places365.txt", [f"{c} {i}" for i, c in enumerate(categories)])
    return lists


def make_ade20k(
    root: Path,
    train: dict[str, int] | None = None,
    val: dict[str, int] | None = None,
    size: int = 12,
) -> dict[str, str]:
    """ADEChallengeData2016 under ``root``: images/{training,validation} and sceneCategories.txt.

    ``train``/``val`` give images per scene; by default ``zoo`` and ``abbey`` occur only in
    validation. Returns {image name: scene}.
    """
    train = train or {"street": 3, "misc": 2, "bedroom": 2}
    val = val or {"bedroom": 1, "misc": 1, "zoo": 1, "abbey": 1}
    data = root / "ADEChallengeData2016"
    (data / "annotations" / "training").mkdir(parents=True, exist_ok=True)
    scenes: dict[str, str] = {}
    for split, folder, counts in (("train", "training", train), ("val", "validation", val)):
        # round-robin over scenes, so that a scene's images are not contiguous
        order = [s for k in range(max(counts.values())) for s in counts if k < counts[s]]
        for j, scene in enumerate(order, 1):
            name = f"ADE_{split}_{j:08d}"
            write_image(data / "images" / folder / f"{name}.jpg", len(scenes), size)
            scenes[name] = scene
    _write_list(data / "sceneCategories.txt", [f"{n} {s}" for n, s in scenes.items()])
    return scenes


SUN_CATEGORIES = ("/a/abbey", "/b/bedroom", "/g/gazebo/exterior", "/g/gazebo/interior")


def make_sun397(
    root: Path,
    categories: Sequence[str] = SUN_CATEGORIES,
    partitions: Sequence[int] = (1, 2),
    n_train: int = 2,
    n_test: int = 1,
    size: int = 12,
) -> dict[str, list[str]]:
    """SUN397: ``root/SUN397/ClassName.txt`` and images, ``root/Partitions/{Training,Testing}_NN.txt``.

    Every partition uses different images; one extra image per class is in no partition.
    """
    _write_list(root / "SUN397" / "ClassName.txt", list(categories))
    lists: dict[str, list[str]] = {}
    seed = 200
    for p in partitions:
        for split, count in (("Training", n_train), ("Testing", n_test)):
            lines = []
            for cat in categories:
                for _ in range(count):
                    rel = f"{cat}/sun_{seed:016d}.jpg"
                    write_image(root / "SUN397" / rel.lstrip("/"), seed, size)
                    seed += 1
                    lines.append(rel)
            lists[f"{split}_{p:02d}.txt"] = lines
    for cat in categories:
        write_image(root / "SUN397" / cat.lstrip("/") / "sun_unlisted.jpg", 7, size)
    for name, lines in lists.items():
        _write_list(root / "Partitions" / name, lines)
    return lists


def cifar_row(image: np.ndarray) -> np.ndarray:
    """A (32, 32, 3) uint8 image as one CIFAR row: the R, G and B planes, each row-major."""
    return np.concatenate([image[:, :, c].reshape(-1) for c in range(3)])


def make_cifar100(root: Path, n_train: int = 10, n_test: int = 6, num_classes: int = 100) -> dict[str, tuple]:
    """``root/cifar-100-python/{train,test,meta}`` pickles in the release's format (dict per file).

    Returns {split: (images (N, 32, 32, 3) uint8, fine labels)} of what was written.
    """
    import pickle

    data = root / "cifar-100-python"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, num_classes, n)]
        entry = {
            "filenames": [f"img_{i}.png" for i in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [y // 5 for y in fine],
            "data": np.stack([cifar_row(im) for im in images]),
        }
        with open(data / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[split] = (images, fine)
    meta = {
        "fine_label_names": [f"fine_{i:02d}" for i in range(num_classes)],
        "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
    }
    with open(data / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


# unsorted on purpose: label order is the sorted wnids; the devkit's ILSVRC2012_IDs follow this order
IMAGENET_WNIDS = ("n02119789", "n01440764", "n04592741", "n01443537")


def make_imagenet(
    root: Path,
    wnids: Sequence[str] = IMAGENET_WNIDS,
    n_train: int = 3,
    n_val: int = 2,
    flat_val: bool = False,
    size: int = 12,
) -> dict[str, str]:
    """ILSVRC-2012: ``train/<wnid>/<wnid>_<k>.JPEG``; ``val/`` in class folders or flat (``flat_val``).

    Like ImageFolder, the reader must take a nested image, a ``.png`` and lower-case ``.jpeg`` and skip a
    text file. Validation images ``ILSVRC2012_val_<k>.JPEG`` cycle through the classes. A flat ``val/``
    gets no label file: write one with :func:`write_imagenet_labels`. Returns {val file name: wnid}.
    """
    seed = 300
    for wnid in wnids:
        for k in range(n_train):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", seed, size)
            seed += 1
    write_image(root / "train" / wnids[0] / "nested" / "deeper.png", 5, size)
    write_image(root / "train" / wnids[1] / f"{wnids[1]}_x.jpeg", 6, size)
    (root / "train" / wnids[1] / "notes.txt").write_text("not an image\n")
    truth = {
        f"ILSVRC2012_val_{k:08d}.JPEG": wnids[(k * 3) % len(wnids)] for k in range(1, n_val * len(wnids) + 1)
    }
    for k, (name, wnid) in enumerate(truth.items()):
        write_image(root / "val" / ("" if flat_val else wnid) / name, 400 + k, size)
    return truth


def write_imagenet_labels(root: Path, truth: dict[str, str], kind: str, folder: str = "") -> Path:
    """Write the labels of a flat ``val/`` as ``kind`` into ``root/folder``; return the file.

    ``kind``: ``"csv"`` (Kaggle's LOC_val_solution.csv, rows not in file order), ``"wnid"``
    (val_labels.txt), ``"index"`` (Caffe's val.txt, 0-based sorted-wnid indices) or ``"devkit"``
    (ILSVRC2012_validation_ground_truth.txt and meta.mat, whose ILSVRC2012_IDs follow ``IMAGENET_WNIDS``
    and hold one non-leaf synset).
    """
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    wnids = sorted(set(truth.values()) | set(IMAGENET_WNIDS))
    if kind == "csv":
        rows = [
            f"{name.removesuffix('.JPEG')},{w} 10 20 30 40 {w} 1 2 3 4" for name, w in reversed(truth.items())
        ]
        path = out / "LOC_val_solution.csv"
        path.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    elif kind in ("wnid", "index"):
        path = out / ("val_labels.txt" if kind == "wnid" else "val.txt")
        labels = {n: (w if kind == "wnid" else str(wnids.index(w))) for n, w in truth.items()}
        path.write_text("".join(f"{n} {label}\n" for n, label in labels.items()))
    elif kind == "devkit":
        from scipy.io import savemat

        ids = {w: i for i, w in enumerate(IMAGENET_WNIDS, 1)}
        path = out / "ILSVRC2012_validation_ground_truth.txt"
        path.write_text("".join(f"{ids[truth[n]]}\n" for n in sorted(truth)))
        fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
        synsets = np.array(
            [(i, w, f"words of {w}", 0) for w, i in ids.items()] + [(1001, "n00001740", "entity", 3)],
            dtype=fields,
        )
        savemat(out / "meta.mat", {"synsets": synsets})
    else:
        raise ValueError(f"unknown label file kind {kind!r}")
    return path
