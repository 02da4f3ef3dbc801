"""ImageNet (ILSVRC-2012) reader on miniature copies of its layouts: val in class folders or flat."""

import sys

import pytest
import torch
from torchvision.datasets import ImageFolder

from kdscene.data import IMAGENET_MEAN, DatasetLayoutError, ImageNet
from tests.data.layouts import IMAGENET_WNIDS, make_imagenet, write_imagenet_labels
from tests.data.tiny import tiny_datamodule

SORTED = sorted(IMAGENET_WNIDS)


def _named(samples):
    """(file name, label) of each sample, in order."""
    return [(path.name, label) for path, label in samples.pairs]


def test_classes_are_the_sorted_wnids_and_train_is_what_imagefolder_reads(tmp_path):
    make_imagenet(tmp_path)
    reader = ImageNet(tmp_path)
    reference = ImageFolder(str(tmp_path / "train"))
    assert reader.classes() == reference.classes == SORTED
    assert [(str(p), y) for p, y in reader.samples("train").pairs] == reference.samples
    names = {p.name for p, _ in reader.samples("train").pairs}
    assert "deeper.png" in names and f"{IMAGENET_WNIDS[1]}_x.jpeg" in names and "notes.txt" not in names


def test_validation_in_class_folders_is_labelled_by_its_folder_and_sorted_by_file_name(tmp_path):
    truth = make_imagenet(tmp_path)
    val = ImageNet(tmp_path).samples("val")
    assert _named(val) == [(name, SORTED.index(wnid)) for name, wnid in sorted(truth.items())]
    assert val.source == str(tmp_path / "val")


@pytest.mark.parametrize("kind", ["csv", "wnid", "index", "devkit"])
def test_a_flat_validation_folder_gives_the_samples_of_the_class_folders(tmp_path, kind):
    truth = make_imagenet(tmp_path / "folders")
    make_imagenet(tmp_path / "flat", flat_val=True)
    source = write_imagenet_labels(tmp_path / "flat", truth, kind)
    flat = ImageNet(tmp_path / "flat").samples("val")
    assert _named(flat) == _named(ImageNet(tmp_path / "folders").samples("val"))
    assert flat.source == str(source) and all(p.parent == tmp_path / "flat" / "val" for p, _ in flat.pairs)


def test_the_devkit_files_are_found_in_the_devkit_folder_and_map_ids_through_meta_mat(tmp_path):
    truth = make_imagenet(tmp_path, flat_val=True)
    write_imagenet_labels(tmp_path, truth, "devkit", "ILSVRC2012_devkit_t12/data")
    val = ImageNet(tmp_path).samples("val")
    assert _named(val) == [(name, SORTED.index(wnid)) for name, wnid in sorted(truth.items())]


def test_the_label_files_are_read_in_their_order_of_preference_unless_one_is_given(tmp_path):
    truth = make_imagenet(tmp_path, flat_val=True)
    wrong = {name: IMAGENET_WNIDS[0] for name in truth}
    write_imagenet_labels(tmp_path, wrong, "index")  # val.txt: after the two below
    write_imagenet_labels(tmp_path, wrong, "wnid", "ILSVRC2012_devkit_t12/data")  # not in root: after root's
    write_imagenet_labels(tmp_path, truth, "csv")
    assert ImageNet(tmp_path).label_file() == tmp_path / "LOC_val_solution.csv"
    assert {y for _, y in ImageNet(tmp_path).samples("val").pairs} == {0, 1, 2, 3}
    (tmp_path / "LOC_val_solution.csv").unlink()
    assert ImageNet(tmp_path).label_file() == tmp_path / "val.txt"
    given = ImageNet(tmp_path, val_labels="ILSVRC2012_devkit_t12/data/val_labels.txt")
    assert {y for _, y in given.samples("val").pairs} == {SORTED.index(IMAGENET_WNIDS[0])}


def test_descriptions_come_from_the_synset_mapping_and_the_classes_stay_wnids(tmp_path):
    make_imagenet(tmp_path)
    assert ImageNet(tmp_path).descriptions() == {}
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    reader = ImageNet(tmp_path)
    assert reader.descriptions() == {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish"}
    assert reader.classes() == SORTED


def test_a_missing_train_folder_shows_the_expected_layout(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetLayoutError, match="missing folder .*train") as err:
        ImageNet(tmp_path).classes()
    assert "LOC_val_solution.csv" in str(err.value) and "train/<wnid>/*.JPEG" in str(err.value)


def test_a_flat_validation_folder_without_labels_names_the_files_looked_for(tmp_path):
    make_imagenet(tmp_path, flat_val=True)
    with pytest.raises(DatasetLayoutError, match="no label file was found: looked for LOC_val_solution.csv"):
        ImageNet(tmp_path).samples("val")
    with pytest.raises(DatasetLayoutError, match="val_labels file .*nowhere.txt does not exist"):
        ImageNet(tmp_path, val_labels="nowhere.txt").samples("val")


def test_bad_labels_are_named_with_their_file_and_line(tmp_path):
    truth = make_imagenet(tmp_path, flat_val=True)
    path = write_imagenet_labels(tmp_path, truth, "wnid")
    path.write_text(path.read_text() + "ILSVRC2012_val_00000099.JPEG n09999999\n")
    with pytest.raises(DatasetLayoutError, match="val_labels.txt, line 9: 'n09999999' is neither a class"):
        ImageNet(tmp_path).samples("val")
    path.write_text("ILSVRC2012_val_00000001.JPEG 4\n")
    with pytest.raises(DatasetLayoutError, match="line 1: '4' is neither a class .* nor an index below 4"):
        ImageNet(tmp_path).samples("val")


def test_a_validation_folder_that_is_no_training_class_or_mixed_layouts_are_refused(tmp_path):
    make_imagenet(tmp_path)
    (tmp_path / "val" / "n00000000").mkdir()
    with pytest.raises(DatasetLayoutError, match="val/n00000000 is not a class of"):
        ImageNet(tmp_path).samples("val")
    (tmp_path / "val" / "n00000000").rmdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="holds class folders and images"):
        ImageNet(tmp_path).samples("val")


def test_the_devkit_labels_without_scipy_name_the_alternatives(tmp_path, monkeypatch):
    truth = make_imagenet(tmp_path, flat_val=True)
    write_imagenet_labels(tmp_path, truth, "devkit")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io raises ImportError
    with pytest.raises(DatasetLayoutError, match="needs scipy .* LOC_val_solution.csv or val.txt"):
        ImageNet(tmp_path).samples("val")


def test_the_datamodule_loads_both_splits_with_the_imagenet_recipe(tmp_path):
    make_imagenet(tmp_path, size=20)
    dm = tiny_datamodule(ImageNet(tmp_path), train_crop="random_resized", mean=IMAGENET_MEAN)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 14 and len(dm.datasets["val"]) == 8 and dm.num_classes == 4
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and int(y.max()) < 4
