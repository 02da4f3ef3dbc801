"""Synthetic scenes: deterministic, MIT-layout, classes defined by arrangements of several shapes."""

import hashlib
import json

import numpy as np
import pytest

from kdscene.data import MITIndoor67, SceneDataModule, SyntheticScenes, generate_synthetic_scenes
from kdscene.data.synthetic import SyntheticScenesSpec, class_names, render_scene, scene_classes

SPEC = SyntheticScenesSpec(num_classes=4, train_per_class=3, test_per_class=2, image_size=24, seed=5)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_and_depends_on_the_seed(tmp_path):
    a = generate_synthetic_scenes(tmp_path / "a", SPEC)
    b = generate_synthetic_scenes(tmp_path / "b", SPEC)
    other = SyntheticScenesSpec(**{**SPEC.__dict__, "seed": 6})
    c = generate_synthetic_scenes(tmp_path / "c", other)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_files_are_in_the_mit_layout_and_read_by_the_mit_reader(tmp_path):
    root = generate_synthetic_scenes(tmp_path / "s", SPEC)
    train = (root / "TrainImages.txt").read_text().splitlines()
    test = (root / "TestImages.txt").read_text().splitlines()
    assert len(train) == 12 and len(test) == 8
    assert any(" " in line for line in train), "some names carry spaces, like the real MIT files"
    reader = MITIndoor67(root)
    assert reader.classes() == class_names(4, seed=5)
    labels = sorted(y for _, y in reader.samples("train").pairs)
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_pairs_share_shapes_and_cells_but_not_the_arrangement():
    classes = scene_classes(10, seed=0)
    names = {c.name for c in classes}
    assert len(names) == 10
    for a, b in zip(classes[0::2], classes[1::2]):
        assert sorted(a.shapes) == sorted(b.shapes) and a.cells == b.cells
        assert a.shapes != b.shapes
    # no shape is unique to one pair, so presence of one object never identifies a class
    pair_sets = [set(c.shapes) for c in classes[0::2]]
    for i, s in enumerate(pair_sets):
        others = set().union(*(t for j, t in enumerate(pair_sets) if j != i))
        assert s & others


def test_rendered_objects_sit_in_their_cells():
    cls = scene_classes(2, seed=0)[0]
    img = np.asarray(render_scene(cls, np.random.default_rng(0), 97)).astype(float)
    # edge energy (absolute neighbour differences) is high on object outlines, low on smooth background
    energy = np.abs(np.diff(img, axis=0)).sum(axis=2)[:, :-1] + np.abs(np.diff(img, axis=1)).sum(axis=2)[:-1]
    cells = energy.reshape(3, 32, 3, 32).sum(axis=(1, 3)).flatten()
    top3 = set(np.argsort(cells)[-3:].tolist())
    assert top3 == set(cls.cells)


def test_an_existing_root_with_another_spec_is_not_overwritten(tmp_path):
    root = generate_synthetic_scenes(tmp_path / "s", SPEC)
    before = _digest(root)
    with pytest.raises(FileExistsError, match="another data.root"):
        generate_synthetic_scenes(root, SyntheticScenesSpec(num_classes=6))
    assert _digest(root) == before
    assert json.loads((root / "synthetic_scenes.json").read_text())["num_classes"] == 4


def _synthetic(root):
    return SyntheticScenes(root, num_classes=4, train_per_class=3, test_per_class=2, generated_size=24)


def _datamodule(reader):
    return SceneDataModule(reader, image_size=16, resize=24, hflip=False, batch_size=4, num_workers=0)


def test_datamodule_generates_on_prepare_and_knows_its_classes_first(tmp_path):
    dm = _datamodule(_synthetic(tmp_path / "s"))
    assert dm.num_classes == 4 and not (tmp_path / "s").exists()
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and int(y.max()) < 4


def test_the_reader_generates_what_its_options_say(tmp_path):
    options = {"train_per_class": 3, "test_per_class": 2, "seed": 5, "generated_size": 24}
    reader = SyntheticScenes(tmp_path / "s", 4, **options)
    reader.prepare()
    manifest = json.loads((tmp_path / "s" / "synthetic_scenes.json").read_text())
    assert manifest == {
        "num_classes": 4,
        "train_per_class": 3,
        "test_per_class": 2,
        "image_size": 24,
        "seed": 5,
        "version": 2,
    }
    assert _digest(tmp_path / "s") == _digest(generate_synthetic_scenes(tmp_path / "g", SPEC))


def test_setup_outside_a_trainer_generates_the_files_first(tmp_path):
    dm = _datamodule(_synthetic(tmp_path / "s"))
    dm.setup("test")
    assert (tmp_path / "s" / "synthetic_scenes.json").is_file() and len(dm.datasets["val"]) == 8
