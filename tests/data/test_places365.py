"""Places365 reader on miniature copies of the devkit and easyformat layouts."""

import pytest
import torch
from torchvision.datasets import Places365 as TorchvisionPlaces365

from kdscene.data import CorruptImageError, DatasetLayoutError, Places365
from kdscene.data.places365 import flatten_category
from tests.data.layouts import (
    PLACES_CATEGORIES,
    make_places365_devkit,
    make_places365_easyformat,
    write_corrupt,
)
from tests.data.tiny import tiny_datamodule


def _dm(root, layout="devkit", train_split="train-standard", small=True, **options):
    return tiny_datamodule(Places365(root, layout, train_split, small), **options)


def test_devkit_classes_follow_the_categories_file_before_setup(tmp_path):
    make_places365_devkit(tmp_path)
    assert Places365(tmp_path).classes() == list(PLACES_CATEGORIES)
    assert _dm(tmp_path).num_classes == 4


def test_devkit_class_order_is_the_index_column_not_the_line_order(tmp_path):
    make_places365_devkit(tmp_path)
    lines = ["/f/field_road 3", "/a/airfield 0", "/f/field/cultivated 2", "/b/bedroom 1"]
    (tmp_path / "categories_places365.txt").write_text("\n".join(lines) + "\n")
    assert Places365(tmp_path).classes() == list(PLACES_CATEGORIES)


@pytest.mark.parametrize(
    ("train_split", "small", "folder", "n_train"),
    [
        ("train-standard", True, "data_256_standard", 8),
        ("train-challenge", True, "data_256_challenge", 12),
        ("train-standard", False, "data_large_standard", 8),
    ],
)
def test_devkit_splits_and_image_folders(tmp_path, train_split, small, folder, n_train):
    lists = make_places365_devkit(tmp_path)
    reader = Places365(tmp_path, train_split=train_split, small=small)
    train, val = reader.samples("train").pairs, reader.samples("val").pairs
    assert len(train) == n_train and len(val) == len(lists["places365_val.txt"]) == 8
    assert all(p.is_relative_to(tmp_path / folder) for p, _ in train)
    assert all(p.parent == tmp_path / ("val_256" if small else "val_large") for p, _ in val)
    # a training label is the class of its folder; a val label is the list's index
    for path, label in train:
        assert "/" + str(path.parent.relative_to(tmp_path / folder)) == reader.classes()[label]
    expected_val = [int(line.split()[1]) for line in lists["places365_val.txt"]]
    assert [y for _, y in val] == expected_val


def test_devkit_samples_equal_torchvision_places365_when_its_md5_check_is_patched(tmp_path, monkeypatch):
    make_places365_devkit(tmp_path)
    monkeypatch.setattr(TorchvisionPlaces365, "_check_integrity", lambda self, file, md5, download: True)
    for split, small in (("train-standard", True), ("train-challenge", False), ("val", True)):
        ours = _dm(tmp_path, train_split=split if split != "val" else "train-standard", small=small)
        ours.setup("fit")
        reference = TorchvisionPlaces365(tmp_path, split=split, small=small)
        samples = ours.datasets["val" if split == "val" else "train"].samples
        assert [(str(p), y) for p, y in samples] == [(str(p), y) for p, y in reference.imgs]
        assert ours.classes == reference.classes


def test_an_extracted_data_256_folder_is_accepted(tmp_path):
    make_places365_devkit(tmp_path)
    (tmp_path / "data_256_standard").rename(tmp_path / "data_256")
    dm = _dm(tmp_path)
    dm.setup("fit")
    assert all(p.is_relative_to(tmp_path / "data_256") for p, _ in dm.datasets["train"].samples)


def test_a_missing_image_folder_names_both_accepted_names(tmp_path):
    make_places365_devkit(tmp_path)
    (tmp_path / "data_256_standard").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetLayoutError, match="data_256_standard or .*data_256\\b") as err:
        _dm(tmp_path).setup("fit")
    assert "categories_places365.txt" in str(err.value)


def test_flatten_category_gives_the_easyformat_folder_names():
    assert flatten_category("/f/field/cultivated") == "field-cultivated"
    assert flatten_category("/a/airfield") == "airfield"
    assert flatten_category("/f/field_road") == "field_road"


def test_easyformat_keeps_the_devkit_order_when_the_categories_file_is_present(tmp_path):
    make_places365_easyformat(tmp_path)
    lines = ["/f/field_road 0", "/a/airfield 1", "/f/field/cultivated 2", "/b/bedroom 3"]
    (tmp_path / "categories_places365.txt").write_text("\n".join(lines) + "\n")
    dm = _dm(tmp_path, layout="easyformat")
    assert dm.classes == ["field_road", "airfield", "field-cultivated", "bedroom"]
    dm.setup("fit")
    for path, label in dm.datasets["train"].samples + dm.datasets["val"].samples:
        assert dm.classes[label] == path.parent.name


def test_easyformat_without_categories_uses_sorted_folder_names(tmp_path):
    lists = make_places365_easyformat(tmp_path / "x", with_categories=False)
    data = tmp_path / "x" / "places365_standard"
    dm = _dm(data, layout="easyformat")  # root may also be the data folder itself
    assert dm.classes == sorted(["airfield", "bedroom", "field-cultivated", "field_road"])
    dm.setup("fit")
    assert len(dm.datasets["train"]) == len(lists["train.txt"]) == 8
    assert len(dm.datasets["val"]) == len(lists["val.txt"]) == 8
    for path, label in dm.datasets["val"].samples:
        assert dm.classes[label] == path.parent.name and path.parent.parent == data / "val"


def test_easyformat_line_with_an_unknown_category_is_named(tmp_path):
    make_places365_easyformat(tmp_path)
    with open(tmp_path / "places365_standard" / "val.txt", "a") as f:
        f.write("val/moon-base/x.jpg\n")
    with pytest.raises(DatasetLayoutError, match="val.txt, line 9"):
        _dm(tmp_path, layout="easyformat").setup("fit")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="layout"):
        Places365("x", layout="folders")
    with pytest.raises(ValueError, match="train_split"):
        Places365("x", train_split="val")
    with pytest.raises(ValueError, match="easyformat"):
        Places365("x", layout="easyformat", train_split="train-challenge")


def test_a_wrong_root_shows_both_layouts(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        _ = _dm(tmp_path / "nowhere").num_classes
    assert "places365_train_standard.txt" in str(err.value) and "places365_standard/train.txt" in str(
        err.value
    )


def test_a_missing_list_file_is_named(tmp_path):
    make_places365_devkit(tmp_path)
    (tmp_path / "places365_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="missing list file .*places365_val.txt"):
        _dm(tmp_path).setup("fit")


def test_a_label_outside_the_classes_is_named_with_its_line(tmp_path):
    make_places365_devkit(tmp_path)
    with open(tmp_path / "places365_val.txt", "a") as f:
        f.write("Places365_val_00000099.jpg 4\n")
    with pytest.raises(DatasetLayoutError, match="places365_val.txt, line 9"):
        _dm(tmp_path).setup("fit")


def test_a_listed_image_that_does_not_exist_is_named(tmp_path):
    make_places365_devkit(tmp_path)
    gone = tmp_path / "data_256_standard" / "b" / "bedroom" / "00000001.jpg"
    gone.unlink()
    with pytest.raises(DatasetLayoutError, match="1 image") as err:
        _dm(tmp_path).setup("fit")
    assert str(gone) in str(err.value) and "Expected layout" in str(err.value)


def test_a_corrupt_image_raises_naming_it_and_skip_corrupt_drops_and_counts_it(tmp_path):
    make_places365_devkit(tmp_path)
    bad = tmp_path / "val_256" / "Places365_val_00000001.jpg"
    write_corrupt(bad)
    dm = _dm(tmp_path)
    dm.setup("test")
    with pytest.raises(CorruptImageError, match=bad.name):
        dm.datasets["val"][0]
    dm = _dm(tmp_path, skip_corrupt=True)
    dm.setup("test")
    val = dm.datasets["val"]
    assert val.samples[0][0] == bad and val[0] is None
    labels = [int(v) for _, y in dm.test_dataloader() for v in y]
    assert labels == [y for _, y in val.samples[1:]]  # counted once each, the bad one not at all
    assert val.skipped == {bad}


def test_loader_batches(tmp_path):
    make_places365_devkit(tmp_path)
    dm = _dm(tmp_path, batch_size=3)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (3,)
