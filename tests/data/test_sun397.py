"""SUN397 reader on a miniature copy of the official layout and partition files."""

import shutil

import pytest
from torchvision.datasets import SUN397 as TorchvisionSUN397

from kdscene.data import SUN397, CorruptImageError, DatasetLayoutError
from tests.data.layouts import make_sun397, write_corrupt
from tests.data.tiny import tiny_datamodule


def _dm(root, partition=1, **options):
    return tiny_datamodule(SUN397(root, partition), **options)


def test_classes_follow_classname_txt_without_the_letter_prefix(tmp_path):
    make_sun397(tmp_path, categories=("/b/bedroom", "/a/abbey", "/g/gazebo/exterior"))
    assert SUN397(tmp_path).classes() == ["bedroom", "abbey", "gazebo/exterior"]


@pytest.mark.parametrize("partition", [1, 2])
def test_the_partition_selects_the_training_and_testing_lists(tmp_path, partition):
    lists = make_sun397(tmp_path)
    reader = SUN397(tmp_path, partition=partition)
    for split, name in (("train", "Training"), ("val", "Testing")):
        rel = ["/" + str(p.relative_to(tmp_path / "SUN397")) for p, _ in reader.samples(split).pairs]
        assert rel == lists[f"{name}_{partition:02d}.txt"]
    assert len(reader.samples("train").pairs) == 8 and len(reader.samples("val").pairs) == 4


def test_labels_match_the_class_folders_including_subclasses(tmp_path):
    make_sun397(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("fit")
    for path, label in dm.datasets["train"].samples + dm.datasets["val"].samples:
        assert str(path.parent.relative_to(tmp_path / "SUN397")).endswith(dm.classes[label])
        assert path.parent.relative_to(tmp_path / "SUN397").parts[0] == dm.classes[label][0]


def test_labels_equal_torchvision_sun397_labels_of_the_same_files(tmp_path):
    make_sun397(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("fit")
    reference = TorchvisionSUN397(tmp_path)
    by_file = dict(zip(reference._image_files, reference._labels))
    assert dm.classes == reference.classes
    for path, label in dm.datasets["train"].samples + dm.datasets["val"].samples:
        assert by_file[path] == label


def test_root_may_be_the_sun397_folder_with_partitions_inside(tmp_path):
    make_sun397(tmp_path)
    shutil.move(tmp_path / "Partitions", tmp_path / "SUN397" / "Partitions")
    dm = _dm(tmp_path / "SUN397")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and dm.num_classes == 4


def test_classname_txt_is_also_found_in_partitions(tmp_path):
    make_sun397(tmp_path)
    shutil.move(tmp_path / "SUN397" / "ClassName.txt", tmp_path / "Partitions" / "ClassName.txt")
    assert len(SUN397(tmp_path).classes()) == 4


@pytest.mark.parametrize("partition", [0, 11, "01", 1.0, True])
def test_a_partition_outside_1_to_10_is_refused(partition):
    with pytest.raises(ValueError, match="partition must be an integer from 1 to 10"):
        SUN397("x", partition=partition)


def test_a_wrong_root_shows_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        SUN397(tmp_path / "nowhere").classes()
    assert "Partitions/Training_01.txt" in str(err.value) and "ClassName.txt" in str(err.value)


def test_missing_classname_and_partition_files_are_named(tmp_path):
    make_sun397(tmp_path, partitions=(1,))
    with pytest.raises(DatasetLayoutError, match="missing list file .*Training_02.txt"):
        _dm(tmp_path, partition=2).setup("fit")
    (tmp_path / "SUN397" / "ClassName.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="missing list file .*SUN397/ClassName.txt"):
        SUN397(tmp_path).classes()


def test_a_line_of_an_unknown_class_is_named_with_its_number(tmp_path):
    make_sun397(tmp_path)
    with open(tmp_path / "Partitions" / "Testing_01.txt", "a") as f:
        f.write("/z/zoo/sun_x.jpg\n")
    with pytest.raises(DatasetLayoutError, match="Testing_01.txt, line 5: '/z/zoo/sun_x.jpg'"):
        _dm(tmp_path).setup("test")


def test_a_listed_image_that_does_not_exist_is_named(tmp_path):
    lists = make_sun397(tmp_path)
    gone = tmp_path / "SUN397" / lists["Training_01.txt"][3].lstrip("/")
    gone.unlink()
    with pytest.raises(DatasetLayoutError, match="1 image") as err:
        _dm(tmp_path).setup("fit")
    assert str(gone) in str(err.value) and "Expected layout" in str(err.value)


def test_a_corrupt_image_raises_naming_it_and_skip_corrupt_drops_and_counts_it(tmp_path):
    lists = make_sun397(tmp_path)
    bad = tmp_path / "SUN397" / lists["Testing_01.txt"][0].lstrip("/")
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
