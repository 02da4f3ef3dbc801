"""check_files: "exists" (a stat per image) or "decode" (every image, before training, remembered)."""

import logging
import os
import threading

import pytest

from kdscene.data import CIFAR100, CorruptImageError, DatasetLayoutError, MITIndoor67, SceneDataModule
from tests.data.layouts import make_cifar100, make_mit_indoor, write_corrupt, write_image
from tests.data.tiny import tiny_datamodule


class CountingMIT(MITIndoor67):
    """MIT Indoor 67 that counts the images it decodes (from any thread)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.decoded: list = []
        self._lock = threading.Lock()

    def load(self, item, draft_size=None):
        with self._lock:
            self.decoded.append(item)
        return super().load(item, draft_size)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSCENE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def lists(tmp_path):
    # 9 training and 6 validation images; "mall/mall room 0.jpg" is in both lists: 14 files
    return make_mit_indoor(tmp_path / "data")


def _decoding(tmp_path, **options):
    reader = CountingMIT(tmp_path / "data")
    return tiny_datamodule(reader, check_files="decode", num_workers=2, **options), reader


def test_corrupt_images_stop_the_set_up_naming_them(tmp_path, lists):
    bad = [tmp_path / "data" / "Images" / lists["TrainImages.txt"][i] for i in (2, 5)]
    for path in bad:
        write_corrupt(path)
    dm, _ = _decoding(tmp_path)
    with pytest.raises(
        CorruptImageError, match="2 image\\(s\\) listed in .*TrainImages.txt cannot be decoded"
    ) as err:
        dm.setup("fit")
    assert all(str(path) in str(err.value) for path in bad) and "skip_corrupt=true" in str(err.value)


def test_with_skip_corrupt_they_leave_the_split_with_one_warning(tmp_path, lists, caplog):
    bad = tmp_path / "data" / "Images" / lists["TestImages.txt"][1]
    write_corrupt(bad)
    dm, _ = _decoding(tmp_path, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="kdscene.data"):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "leaving out 1 corrupt image(s)" in warnings[0] and str(bad) in warnings[0]
    assert len(dm.datasets["val"]) == 5 and bad not in [p for p, _ in dm.datasets["val"].samples]
    assert len(dm.datasets["train"]) == 9 and dm.corrupt == {"val": [bad]}
    assert sum(len(y) for _, y in dm.val_dataloader()) == 5


def test_a_second_run_decodes_only_new_or_changed_files(tmp_path, lists, cache):
    dm, reader = _decoding(tmp_path)
    dm.setup("fit")
    assert len(reader.decoded) == 14 and (cache / "decoded.sqlite").is_file()
    again, reader = _decoding(tmp_path)
    again.setup("fit")
    assert reader.decoded == []
    changed = tmp_path / "data" / "Images" / lists["TrainImages.txt"][0]
    write_image(changed, seed=77, size=14)
    os.utime(changed, ns=(1, 1))  # another size and modification time
    third, reader = _decoding(tmp_path)
    third.setup("fit")
    assert reader.decoded == [changed]


def test_a_remembered_corrupt_file_is_reported_without_decoding_it_again(tmp_path, lists):
    write_corrupt(tmp_path / "data" / "Images" / lists["TrainImages.txt"][0])
    with pytest.raises(CorruptImageError):
        _decoding(tmp_path)[0].setup("fit")
    dm, reader = _decoding(tmp_path)
    with pytest.raises(CorruptImageError, match="1 image"):
        dm.setup("fit")
    assert reader.decoded == []


def test_prepare_data_decodes_so_that_setup_on_each_rank_reads_the_cache(tmp_path, lists):
    dm, reader = _decoding(tmp_path)
    dm.prepare_data()
    assert len(reader.decoded) == 14
    dm.setup("fit")
    assert len(reader.decoded) == 14


def test_without_a_usable_cache_every_run_decodes_and_says_why(tmp_path, lists, monkeypatch, caplog):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("KDSCENE_CACHE", str(tmp_path / "a_file" / "cache"))
    for _ in range(2):
        dm, reader = _decoding(tmp_path)
        with caplog.at_level(logging.WARNING, logger="kdscene.data"):
            dm.setup("test")
        assert len(reader.decoded) == 6
    assert "cannot write" in caplog.text


def test_array_items_have_no_file_to_decode(tmp_path):
    make_cifar100(tmp_path)
    dm = SceneDataModule(CIFAR100(tmp_path), image_size=32, resize=None, num_workers=0, check_files="decode")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 10


def test_check_files_is_exists_true_decode_or_false(tmp_path, lists):
    assert tiny_datamodule(MITIndoor67(tmp_path), check_files=True).check_files == "exists"
    assert tiny_datamodule(MITIndoor67(tmp_path), check_files=False).check_files is None
    with pytest.raises(ValueError, match="check_files must be 'exists' \\(or true\\), 'decode' or false"):
        tiny_datamodule(MITIndoor67(tmp_path), check_files="maybe")
    (tmp_path / "data" / "Images" / lists["TestImages.txt"][0]).unlink()
    with pytest.raises(DatasetLayoutError, match="1 image\\(s\\) listed in .* do not exist"):
        tiny_datamodule(MITIndoor67(tmp_path / "data"), check_files="decode").setup("test")
    tiny_datamodule(MITIndoor67(tmp_path / "data"), check_files=False).setup("test")
