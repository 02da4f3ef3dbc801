"""MIT Indoor 67 reader on a miniature copy of the official layout."""

import pytest
import torch

from kdscene.data import CorruptImageError, DatasetLayoutError, MITIndoor67
from tests.data.layouts import make_mit_indoor, write_corrupt
from tests.data.tiny import tiny_datamodule


def test_classes_are_sorted_and_known_before_setup(tmp_path):
    make_mit_indoor(tmp_path, classes=("mall", "bar", "kitchen"))
    dm = tiny_datamodule(MITIndoor67(tmp_path))
    assert dm.classes == ["bar", "kitchen", "mall"]
    assert dm.num_classes == 3


def test_the_reader_lists_the_splits_of_the_list_files_without_a_datamodule(tmp_path):
    lists = make_mit_indoor(tmp_path)
    reader = MITIndoor67(tmp_path)
    train, val = reader.samples("train"), reader.samples("val")
    assert [str(p.relative_to(tmp_path / "Images")) for p, _ in train.pairs] == lists["TrainImages.txt"]
    assert [str(p.relative_to(tmp_path / "Images")) for p, _ in val.pairs] == lists["TestImages.txt"]
    assert train.source == str(tmp_path / "TrainImages.txt")
    assert val.source == str(tmp_path / "TestImages.txt")
    assert reader.load(val.pairs[0][0]).mode == "RGB"


def test_splits_follow_the_list_files_and_names_with_spaces_load(tmp_path):
    lists = make_mit_indoor(tmp_path)
    dm = tiny_datamodule(MITIndoor67(tmp_path))
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
    reader = MITIndoor67(tmp_path)
    for path, label in reader.samples("train").pairs:
        assert reader.classes()[label] == path.parent.name


def test_loaders_give_batches_of_the_configured_size(tmp_path):
    make_mit_indoor(tmp_path)
    dm = tiny_datamodule(MITIndoor67(tmp_path), batch_size=4, eval_batch_size=5)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4,)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[0] == 5


def test_a_missing_root_shows_the_expected_layout(tmp_path):
    reader = MITIndoor67(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        reader.classes()
    assert "TrainImages.txt" in str(err.value) and "Images/<class>/<file>.jpg" in str(err.value)


def test_a_missing_list_file_is_named(tmp_path):
    make_mit_indoor(tmp_path)
    (tmp_path / "TestImages.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="TestImages.txt"):
        MITIndoor67(tmp_path).classes()


def test_an_empty_split_is_named_with_its_list_file(tmp_path):
    make_mit_indoor(tmp_path)
    (tmp_path / "TrainImages.txt").write_text("\n")
    with pytest.raises(DatasetLayoutError, match="the train split read from .*TrainImages.txt is empty"):
        MITIndoor67(tmp_path).samples("train")


def test_a_listed_image_that_does_not_exist_is_named_before_training(tmp_path):
    lists = make_mit_indoor(tmp_path)
    gone = tmp_path / "Images" / lists["TrainImages.txt"][4]
    gone.unlink()
    dm = tiny_datamodule(MITIndoor67(tmp_path))
    with pytest.raises(DatasetLayoutError, match="1 image") as err:
        dm.setup("fit")
    assert str(gone) in str(err.value) and "Expected layout" in str(err.value)


def test_a_corrupt_image_raises_naming_the_file(tmp_path):
    lists = make_mit_indoor(tmp_path)
    bad = tmp_path / "Images" / lists["TestImages.txt"][0]
    write_corrupt(bad)
    dm = tiny_datamodule(MITIndoor67(tmp_path))
    dm.setup("test")
    with pytest.raises(CorruptImageError, match=str(bad.name)):
        dm.datasets["val"][0]
    assert dm.datasets["val"].find_corrupt() == [bad]


def test_skip_corrupt_drops_the_sample_from_its_batch_and_counts_it(tmp_path):
    lists = make_mit_indoor(tmp_path)
    bad = tmp_path / "Images" / lists["TestImages.txt"][0]
    write_corrupt(bad)
    dm = tiny_datamodule(MITIndoor67(tmp_path), skip_corrupt=True)
    dm.setup("test")
    val = dm.datasets["val"]
    assert val[0] is None  # the marker of a skipped sample; no other sample in its place
    assert val.skipped == {bad}
    batches = list(dm.test_dataloader())
    assert [len(y) for _, y in batches] == [3, 2]  # batches of 4: the first is one short
    assert [int(v) for _, y in batches for v in y] == [y for _, y in val.samples[1:]]
    assert val.skipped == {bad}


def test_train_transform_crops_and_eval_transform_is_deterministic(tmp_path):
    make_mit_indoor(tmp_path)
    dm = tiny_datamodule(MITIndoor67(tmp_path), image_size=8, resize=12)
    dm.setup("fit")
    val = dm.datasets["val"]
    assert torch.equal(val[0][0], val[(3, 0)][0])
    crops = {tuple(dm.datasets["train"][(epoch, 0)][0].flatten()[:20].tolist()) for epoch in range(6)}
    assert len(crops) > 1
