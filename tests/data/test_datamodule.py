"""SceneDataModule: built from a reader or from a reader factory and a root, with clear errors otherwise."""

import functools
import subprocess
import sys

import pytest
import torch

from kdscene.data import SUN397, MITIndoor67, Reader, SceneDataModule
from tests.data.layouts import make_mit_indoor, make_sun397
from tests.data.tiny import tiny_datamodule

READER_MODULES = (
    "reader",
    "dataset",
    "sampling",
    "checks",
    "mit_indoor",
    "places365",
    "sun397",
    "ade20k",
    "cifar100",
    "synthetic",
    "imagenet",
)


def test_a_reader_instance_and_a_factory_with_root_give_the_same_samples(tmp_path):
    make_sun397(tmp_path)
    built = tiny_datamodule(SUN397(tmp_path, partition=2))
    factory = tiny_datamodule(functools.partial(SUN397, partition=2), root=str(tmp_path))
    for dm in (built, factory):
        dm.setup("fit")
    assert factory.reader.root == built.reader.root and factory.reader.partition == 2
    assert factory.classes == built.classes
    for split in ("train", "val"):
        assert factory.datasets[split].samples == built.datasets[split].samples
    torch.manual_seed(0)
    a = built.datasets["val"][1]
    torch.manual_seed(0)
    b = factory.datasets["val"][1]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_a_reader_class_is_a_factory_too(tmp_path):
    make_mit_indoor(tmp_path)
    dm = tiny_datamodule(MITIndoor67, root=tmp_path)
    assert isinstance(dm.reader, MITIndoor67) and dm.num_classes == 3


def test_a_built_reader_with_a_root_as_well_is_refused(tmp_path):
    with pytest.raises(ValueError, match="already built with its root.*Pass root=None"):
        SceneDataModule(MITIndoor67(tmp_path), root=tmp_path)


def test_a_factory_without_root_is_refused():
    with pytest.raises(ValueError, match="factory, so root .* is required"):
        SceneDataModule(MITIndoor67)


def test_a_reader_that_is_neither_built_nor_callable_is_refused(tmp_path):
    with pytest.raises(TypeError, match="must be a Reader or a reader class/partial"):
        SceneDataModule("mit_indoor", root=tmp_path)
    with pytest.raises(TypeError, match="built .*, not a Reader"):
        SceneDataModule(str, root=tmp_path)


def test_a_bad_train_crop_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train_crop must be"):
        SceneDataModule(MITIndoor67(tmp_path), train_crop="five_crop")


def test_a_split_other_than_train_or_val_is_refused(tmp_path):
    make_mit_indoor(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        MITIndoor67(tmp_path).samples("test")


def test_the_default_load_refuses_items_that_are_not_files(tmp_path):
    with pytest.raises(TypeError, match="Reader: the default load reads image files, got a int"):
        Reader(tmp_path).load(3)


def test_prepare_data_asks_the_reader_and_workers_persist(tmp_path):
    calls = []

    class Preparing(MITIndoor67):
        def prepare(self) -> None:
            calls.append(self.root)
            make_mit_indoor(self.root)

    dm = tiny_datamodule(Preparing, root=tmp_path / "m", num_workers=1)
    dm.prepare_data()
    assert calls == [tmp_path / "m"]
    assert dm.train_dataloader().persistent_workers
    assert not tiny_datamodule(MITIndoor67(tmp_path / "m")).val_dataloader().persistent_workers


def test_reader_files_import_no_lightning():
    modules = ", ".join(f"kdscene.data.{m}" for m in READER_MODULES)
    code = (
        f"import sys; import {modules}; "
        "from kdscene.data import MITIndoor67, Places365, SUN397, ADE20KScenes, CIFAR100, SyntheticScenes; "
        "from kdscene.data import ImageNet, EpochSampler; "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'scipy', "
        "'kdscene.data.datamodule') if m in sys.modules]; "
        "assert not bad, bad; "
        "from kdscene.data import SceneDataModule; "
        "assert 'lightning' in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
