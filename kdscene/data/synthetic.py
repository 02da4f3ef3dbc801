"""Synthetic scenes: a small, deterministic, learnable scene-recognition dataset in the MIT Indoor 67 layout.

Real scene recognition depends on the global layout and on several objects together, not on one
local cue. The synthetic classes keep that property:

* a class is a set of three object shapes placed in three cells of a 3×3 grid;
* classes come in pairs with the *same* three shapes in the *same* cells, only permuted, so
  recognising which shapes are present is never enough: where each one sits decides the class;
* shape triples of different pairs overlap, so no single shape identifies a pair;
* object colours, sizes, positions (jitter), the background (two-colour gradient, low-frequency
  texture, noise) and small distractor blobs vary per image and carry no label information.

Images are written as JPEGs in the MIT Indoor 67 layout (``Images/<class>/<file>.jpg``,
``TrainImages.txt``, ``TestImages.txt``; one file in ten has a space in its name, as six real MIT files
do), so the real :class:`~kdscene.data.mit_indoor.MITIndoor67` reader reads them. Everything is a
function of ``seed``. Horizontal flips change left/right arrangements, so the synthetic config turns
flipping off.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kdscene.data.mit_indoor import MITIndoor67

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond")
CELLS = ("tl", "tc", "tr", "ml", "mc", "mr", "bl", "bc", "br")  # 3×3 grid, row-major


@dataclass(frozen=True)
class SceneClass:
    """One synthetic class: ``shapes[i]`` is drawn in grid cell ``cells[i]``."""

    shapes: tuple[str, str, str]
    cells: tuple[int, int, int]

    @property
    def name(self) -> str:
        return "_".join(f"{s}-{CELLS[c]}" for s, c in zip(self.shapes, self.cells))


def scene_classes(num_classes: int, seed: int = 0) -> list[SceneClass]:
    """The class definitions: pairs sharing shapes and cells, differing by a cyclic permutation."""
    if not 2 <= num_classes <= 60:
        raise ValueError(f"num_classes must be between 2 and 60, got {num_classes}")
    rng = np.random.default_rng([seed, 7919])
    classes: list[SceneClass] = []
    seen: set[tuple] = set()
    while len(classes) < num_classes:
        shapes = tuple(str(s) for s in rng.choice(SHAPES, 3, replace=False))
        cells = tuple(int(c) for c in rng.choice(len(CELLS), 3, replace=False))
        rotated = shapes[1:] + shapes[:1]
        pair = [SceneClass(shapes, cells), SceneClass(rotated, cells)]
        if any(tuple(sorted(zip(c.cells, c.shapes))) in seen for c in pair):
            continue
        for c in pair[: num_classes - len(classes)]:
            seen.add(tuple(sorted(zip(c.cells, c.shapes))))
            classes.append(c)
    return classes


def class_names(num_classes: int, seed: int = 0) -> list[str]:
    """Folder names in label order (``s00_...``, ``s01_...``: sorting keeps the order)."""
    return [f"s{i:02d}_{c.name}" for i, c in enumerate(scene_classes(num_classes, seed))]


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of a shape of radius ``r`` centred at the origin of (x, y), rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    if shape == "disc":
        return u**2 + v**2 <= r**2
    if shape == "ring":
        d = np.sqrt(u**2 + v**2)
        return (d <= r) & (d >= 0.55 * r)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "cross":
        w = 0.3 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= w)) | ((np.abs(v) <= r) & (np.abs(u) <= w))
    if shape == "triangle":
        return (v <= 0.5 * r) & (v >= 2 * np.abs(u) - r)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(0, 6)
    rgb = np.clip(np.abs((hue - np.array([3.0, 1.0, 5.0])) % 6 - 3) - 1, 0, 1)  # fully saturated hue
    value, sat = rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0)
    return value * (1 - sat + sat * rgb)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] / n
    theta = rng.uniform(0, 2 * np.pi)
    t = (np.cos(theta) * x + np.sin(theta) * y + 1.5) / 3
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    img = a * (1 - t[..., None]) + b * t[..., None]
    coarse = rng.normal(0, 0.12, (4, 4, 3)).astype(np.float32)
    texture = np.asarray(Image.fromarray((coarse[..., 0] * 100 + 128).astype(np.uint8)).resize((n, n), 2))
    img += (texture[..., None] / 100.0 - 1.28) * rng.uniform(0.2, 1.0)
    return img + rng.normal(0, 0.03, img.shape)


def render_scene(cls: SceneClass, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw one image of ``cls`` at ``size``×``size`` (rendered at 2× and downsampled for smooth edges)."""
    n = 2 * size
    img = _background(rng, n)
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    for _ in range(rng.integers(0, 3)):  # distractor blobs: no label information
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.05)
        img[(x - cx) ** 2 + (y - cy) ** 2 <= r**2] = _random_colour(rng)
    for shape, cell in zip(cls.shapes, cls.cells):
        cx = (cell % 3 + 0.5) / 3 + rng.uniform(-0.04, 0.04)
        cy = (cell // 3 + 0.5) / 3 + rng.uniform(-0.04, 0.04)
        r = rng.uniform(0.14, 0.17)
        mask = _shape_mask(shape, x - cx, y - cy, r, rng.uniform(-0.3, 0.3))
        img[mask] = _random_colour(rng)
    pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX)


@dataclass(frozen=True)
class SyntheticScenesSpec:
    """Everything the generated files depend on (stored as ``synthetic_scenes.json`` in the root)."""

    num_classes: int = 8
    train_per_class: int = 100
    test_per_class: int = 50
    image_size: int = 56
    seed: int = 0
    version: int = 2


def _file_name(split: str, i: int) -> str:
    return f"{split} {i:05d}.jpg" if i % 10 == 1 else f"{split}_{i:05d}.jpg"


def _write(spec: SyntheticScenesSpec, out: Path) -> None:
    lists: dict[str, list[str]] = {"train": [], "test": []}
    defs, names = scene_classes(spec.num_classes, spec.seed), class_names(spec.num_classes, spec.seed)
    for label, (cls, name) in enumerate(zip(defs, names)):
        (out / "Images" / name).mkdir(parents=True)
        for split, count, split_id in (("train", spec.train_per_class, 0), ("test", spec.test_per_class, 1)):
            for i in range(count):
                rng = np.random.default_rng([spec.seed, label, split_id, i])
                rel = f"{name}/{_file_name(split, i)}"
                render_scene(cls, rng, spec.image_size).save(out / "Images" / rel, quality=92)
                lists[split].append(rel)
    (out / "TrainImages.txt").write_text("\n".join(lists["train"]) + "\n")
    (out / "TestImages.txt").write_text("\n".join(lists["test"]) + "\n")
    (out / "synthetic_scenes.json").write_text(json.dumps(asdict(spec), indent=1))


def generate_synthetic_scenes(root: str | Path, spec: SyntheticScenesSpec = SyntheticScenesSpec()) -> Path:
    """Write the dataset to ``root`` unless the same spec is already there; return ``root``.

    Files are written to a temporary sibling folder and renamed into place, so concurrent jobs
    (a multirun, DDP ranks) never read a half-written dataset. A ``root`` holding a different spec
    raises instead of being overwritten.
    """
    root = Path(root).expanduser()
    manifest = root / "synthetic_scenes.json"
    if root.exists():
        if manifest.is_file() and json.loads(manifest.read_text()) == asdict(spec):
            return root
        found = manifest.read_text() if manifest.is_file() else "no synthetic_scenes.json"
        raise FileExistsError(
            f"{root} exists but does not hold synthetic scenes with {asdict(spec)} (found: {found}); "
            "choose another data.root or delete the folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _write(spec, tmp)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return generate_synthetic_scenes(root, spec)
    return root


class SyntheticScenes(MITIndoor67):
    """Synthetic scenes, generated by :meth:`prepare` (once) and read with the MIT Indoor 67 layout.

    Args:
        root: where the images are written (and read).
        num_classes, train_per_class, test_per_class, seed: what to generate.
        generated_size: side of the stored images (training crops ``image_size`` from them).
    """

    NAME = "synthetic scenes"

    def __init__(
        self,
        root: str | Path,
        num_classes: int = 8,
        train_per_class: int = 100,
        test_per_class: int = 50,
        seed: int = 0,
        generated_size: int = 56,
    ) -> None:
        super().__init__(root)
        self.spec = SyntheticScenesSpec(num_classes, train_per_class, test_per_class, generated_size, seed)

    def classes(self) -> list[str]:
        """Known from the spec without reading the disk (the files may not be generated yet)."""
        if self._classes is None:
            self._classes = class_names(self.spec.num_classes, self.spec.seed)
        return self._classes

    def prepare(self) -> None:
        """Generate the files into ``root`` unless the same spec is already there."""
        generate_synthetic_scenes(self.root, self.spec)
