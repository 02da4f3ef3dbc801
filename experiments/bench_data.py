"""Images/s of each reader's training loader (SceneDataModule) on miniature layouts, with 0, 1 and 2 workers.

The layouts are written into a temporary folder by the test generators (tests/data/layouts.py):
a few hundred random-noise JPEGs of ``--size`` px per dataset (noise compresses badly, so decoding is
slower than for photos of the same size), and CIFAR-100 pickles. One epoch warms up (worker start,
page cache); the second is timed.

    PYTHONPATH=. python experiments/bench_data.py [--size 96] [--resize 256 --crop 224] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from kdscene.data import (
    CIFAR100,
    CIFAR100_MEAN,
    CIFAR100_STD,
    SUN397,
    ADE20KScenes,
    MITIndoor67,
    Places365,
    SceneDataModule,
)
from tests.data import layouts

CLASSES = [f"c{i}" for i in range(8)]
PLACES = tuple(f"/{c[0]}/{c}" for c in CLASSES)


def make_layouts(root: Path, per_class: int, size: int) -> dict[str, Path]:
    """Write every miniature layout (8 classes, ``per_class`` training images each) under ``root``."""
    layouts.make_mit_indoor(root / "mit", classes=CLASSES, n_train=per_class, n_test=2, size=size)
    layouts.make_places365_devkit(
        root / "places", PLACES, n_train=per_class, n_challenge=1, n_val=2, size=size
    )
    layouts.make_ade20k(root / "ade", {c: per_class for c in CLASSES}, {c: 2 for c in CLASSES}, size=size)
    layouts.make_sun397(root / "sun", PLACES, partitions=(1,), n_train=per_class, n_test=2, size=size)
    layouts.make_cifar100(root / "cifar", n_train=8 * per_class * 4, n_test=64)
    return {name: root / name for name in ("mit", "places", "ade", "sun", "cifar")}


def datamodule(name: str, root: Path, workers: int, args: argparse.Namespace) -> SceneDataModule:
    if name == "cifar":  # its own recipe (conf/data/cifar100.yaml): 32 px, padded random crop, batch 64
        return SceneDataModule(
            CIFAR100(root),
            image_size=32,
            resize=None,
            crop_padding=4,
            mean=CIFAR100_MEAN,
            std=CIFAR100_STD,
            batch_size=64,
            num_workers=workers,
        )
    reader = {"mit": MITIndoor67, "places": Places365, "ade": ADE20KScenes, "sun": SUN397}[name]
    return SceneDataModule(
        reader(root), batch_size=args.batch, num_workers=workers, image_size=args.crop, resize=args.resize
    )


def images_per_second(dm: SceneDataModule) -> tuple[float, int]:
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up epoch
        pass
    start, count = time.perf_counter(), 0
    for x, _ in loader:
        count += len(x)
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="side of the stored JPEGs")
    parser.add_argument("--per-class", type=int, default=40, help="training images per class (8 classes)")
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        roots = make_layouts(Path(tmp), args.per_class, args.size)
        print(
            f"{args.size}px JPEGs -> Resize({args.resize}) RandomCrop({args.crop}) flip; batch {args.batch}"
        )
        print(f"{'dataset':10s} {'images':>7s} " + " ".join(f"{w:>2d} workers" for w in args.workers))
        for name, root in roots.items():
            rates = []
            for workers in args.workers:
                rate, count = images_per_second(datamodule(name, root, workers, args))
                rates.append(rate)
            print(f"{name:10s} {count:7d} " + " ".join(f"{r:8.0f}/s" for r in rates), flush=True)


if __name__ == "__main__":
    main()
