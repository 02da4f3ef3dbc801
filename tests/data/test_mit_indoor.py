"""MIT Indoor 67 reader on a miniature copy of the official layout."""

import pytest
import torch

from kdscene.data import CorruptImageError, DatasetLayoutError, MITIndoor67DataModule
from tests.data.layouts import make_mit_indoor, write_corrupt


def _dm(root, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("resize", 10)
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_workers", 0)
    return MITIndoor67DataModule(root, **kw)


def test_classes_are_sorted_and_known_before_setup(tmp_path):
    make_mit_indoor(tmp_path, classes=("mall", "bar", "kitchen"))
    dm = _dm(tmp_path)
    assert dm.classes == ["bar", "kitchen", "mall"]
    assert dm.num_classes == 3


def test_splits_follow_the_list_files_and_names_with_spaces_load(tmp_path):
    lists = make_mit_indoor(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == len(lists["TrainImages.txt"]) == 9
    assert len(val) == len(lists["TestImages.txt"]) == 6
    spaced = [(p, y) for p, y in val.samples if " " in p.name]
    assert len(spaced) == 1 and spaced[0][0].parent.name == "mall" and spaced[0][1] == 2
    for i in range(len(val)):
        image, label = val[i]
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32
        assert label == val.samples[i][1]


def test_labels_match_the_class_folder(tmp_path):
    make_mit_indoor(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("fit")
    for path, label in dm.datasets["train"].samples:
        assert dm.classes[label] == path.parent.name


def test_loaders_give_batches_of_the_configured_size(tmp_path):
    make_mit_indoor(tmp_path)
    dm = _dm(tmp_path, batch_size=4, eval_batch_size=5)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4,)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[0] == 5


def test_a_missing_root_shows_the_expected_layout(tmp_path):
    dm = _dm(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        _ = dm.num_classes
    assert "TrainImages.txt" in str(err.value) and "Images/<class>/<file>.jpg" in str(err.value)


def test_a_missing_list_file_is_named(tmp_path):
    make_mit_indoor(tmp_path)
    (tmp_path / "TestImages.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="TestImages.txt"):
        _ = _dm(tmp_path).num_classes


def test_a_listed_image_that_does_not_exist_is_named_before_training(tmp_path):
    lists = make_mit_indoor(tmp_path)
    gone = tmp_path / "Images" / lists["TrainImages.txt"][4]
    gone.unlink()
    dm = _dm(tmp_path)
    with pytest.raises(DatasetLayoutError, match="1 image") as err:
        dm.setup("fit")
    assert str(gone) in str(err.value) and "Expected layout" in str(err.value)


def test_a_corrupt_image_raises_naming_the_file(tmp_path):
    lists = make_mit_indoor(tmp_path)
    bad = tmp_path / "Images" / lists["TestImages.txt"][0]
    write_corrupt(bad)
    dm = _dm(tmp_path)
    dm.setup("test")
    with pytest.raises(CorruptImageError, match=str(bad.name)):
        dm.datasets["val"][0]
    assert dm.datasets["val"].find_corrupt() == [bad]


def test_skip_corrupt_skips_and_counts(tmp_path):
    lists = make_mit_indoor(tmp_path)
    bad = tmp_path / "Images" / lists["TestImages.txt"][0]
    write_corrupt(bad)
    dm = _dm(tmp_path, skip_corrupt=True)
    dm.setup("test")
    val = dm.datasets["val"]
    image, label = val[0]  # falls through to the next readable sample
    assert label == val.samples[1][1] and image.shape == (3, 8, 8)
    assert val.skipped == {bad}
    batches = list(dm.test_dataloader())
    assert sum(len(y) for _, y in batches) == len(val)
    assert val.skipped == {bad}


def test_train_transform_crops_and_eval_transform_is_deterministic(tmp_path):
    make_mit_indoor(tmp_path)
    dm = _dm(tmp_path, image_size=8, resize=12)
    dm.setup("fit")
    val = dm.datasets["val"]
    assert torch.equal(val[0][0], val[0][0])
    torch.manual_seed(0)
    crops = {tuple(dm.datasets["train"][0][0].flatten()[:20].tolist()) for _ in range(6)}
    assert len(crops) > 1
