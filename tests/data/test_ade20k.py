"""ADE20K scene-classification reader on a miniature ADEChallengeData2016 layout."""

import logging

import pytest

from kdscene.data import ADE20KScenes, CorruptImageError, DatasetLayoutError
from tests.data.layouts import make_ade20k, write_corrupt
from tests.data.tiny import tiny_datamodule


def _dm(root, **options):
    return tiny_datamodule(ADE20KScenes(root), **options)


def test_classes_are_the_sorted_scenes_of_both_splits_misc_included(tmp_path):
    make_ade20k(tmp_path)
    assert ADE20KScenes(tmp_path).classes() == ["abbey", "bedroom", "misc", "street", "zoo"]


def test_validation_only_classes_are_kept_counted_and_logged(tmp_path, caplog):
    make_ade20k(tmp_path)
    reader = ADE20KScenes(tmp_path)
    with caplog.at_level(logging.INFO, logger="kdscene.data.ade20k"):
        assert len(reader.classes()) == 5
    assert reader.val_only_classes == ["abbey", "zoo"]
    assert "2 occur only in validation" in caplog.text


def test_root_may_be_the_challenge_folder_or_its_parent(tmp_path):
    make_ade20k(tmp_path)
    inner = ADE20KScenes(tmp_path / "ADEChallengeData2016")
    outer = ADE20KScenes(tmp_path)
    assert inner.samples("train") == outer.samples("train")


def test_splits_follow_the_name_prefix_and_labels_follow_the_scene_file(tmp_path):
    scenes = make_ade20k(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("fit")
    train, val = dm.datasets["train"].samples, dm.datasets["val"].samples
    assert len(train) == 7 and len(val) == 4
    data = tmp_path / "ADEChallengeData2016" / "images"
    assert all(p.parent == data / "training" for p, _ in train)
    assert all(p.parent == data / "validation" for p, _ in val)
    for path, label in train + val:
        assert dm.classes[label] == scenes[path.stem]
    image, label = dm.datasets["val"][3]
    assert image.shape == (3, 8, 8) and label == val[3][1]


def test_a_wrong_root_shows_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        ADE20KScenes(tmp_path / "nowhere").classes()
    assert "sceneCategories.txt" in str(err.value) and "images/training" in str(err.value)


def test_a_root_without_images_is_named(tmp_path):
    (tmp_path / "sceneCategories.txt").write_text("ADE_train_00000001 street\n")
    with pytest.raises(DatasetLayoutError, match="missing folder .*images"):
        ADE20KScenes(tmp_path).classes()


def test_a_missing_scene_file_is_named(tmp_path):
    make_ade20k(tmp_path)
    (tmp_path / "ADEChallengeData2016" / "sceneCategories.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="missing list file .*sceneCategories.txt"):
        ADE20KScenes(tmp_path).classes()


def test_a_malformed_line_is_named_with_its_number(tmp_path):
    make_ade20k(tmp_path)
    with open(tmp_path / "ADEChallengeData2016" / "sceneCategories.txt", "a") as f:
        f.write("ADE_test_00000001 street\n")
    with pytest.raises(DatasetLayoutError, match="sceneCategories.txt, line 12: .*ADE_test_00000001"):
        ADE20KScenes(tmp_path).classes()


def test_a_listed_image_that_does_not_exist_is_named(tmp_path):
    make_ade20k(tmp_path)
    gone = tmp_path / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000002.jpg"
    gone.unlink()
    with pytest.raises(DatasetLayoutError, match="1 image") as err:
        _dm(tmp_path).setup("test")
    assert str(gone) in str(err.value) and "Expected layout" in str(err.value)


def test_a_corrupt_image_raises_naming_it_and_skip_corrupt_drops_and_counts_it(tmp_path):
    make_ade20k(tmp_path)
    bad = tmp_path / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000001.jpg"
    write_corrupt(bad)
    dm = _dm(tmp_path)
    dm.setup("fit")
    with pytest.raises(CorruptImageError, match=bad.name):
        dm.datasets["train"][0]
    dm = _dm(tmp_path, skip_corrupt=True)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert train.samples[0][0] == bad and train[0] is None
    labels = sorted(int(v) for _, y in dm.train_dataloader() for v in y)
    assert labels == sorted(y for _, y in train.samples[1:])  # dropped, not replaced by another sample
    assert train.skipped == {bad}
