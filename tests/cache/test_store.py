"""The teacher cache's files: rows written are the rows read, in the batch's order; bad input is named."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from kdscene.cache import CacheWriter, TeacherCache
from kdscene.cache.header import FORMAT, VERSION
from kdscene.features import TapInfo

TAPS = [TapInfo("layer1", 8, 4, (4, 4)), TapInfo("layer2", 16, 8, (2, 2))]


def _header(views: int = 2, images: int = 5, classes: int = 3) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "views": views,
        "data": {"num_images": images},
        "num_classes": classes,
        "taps": [
            {"name": t.name, "channels": t.channels, "stride": t.stride, "size": list(t.size)} for t in TAPS
        ],
    }


def _rows(draw: int, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Values exactly representable in float16: (draw, index, position) encoded in quarters."""
    logits = torch.stack([torch.arange(3.0) / 4 + 10 * draw + i for i in idx.tolist()])
    energy = [torch.stack([torch.full((s, s), 0.25 * i + draw) for i in idx.tolist()]) for s in (4, 2)]
    return logits, energy


def _write_all(path, views: int = 2, images: int = 5, dtype: str = "float16") -> TeacherCache:
    writer = CacheWriter(path, _header(views, images), TAPS, dtype)
    for draw in range(views):
        for idx in (torch.tensor([3, 0, 4]), torch.tensor([1, 2])):  # rows arrive in any order
            logits, energy = _rows(draw, idx)
            writer.write(draw, idx, idx * 100 + draw, logits, energy)
    return writer.finish()


def test_rows_read_back_are_the_rows_written_in_the_batch_order(tmp_path):
    cache = _write_all(tmp_path / "c")
    idx = torch.tensor([4, 1, 1, 0])
    feats = cache.features(1, idx)
    want_logits, want_energy = _rows(1, idx)
    assert torch.equal(feats.logits, want_logits)
    assert all(torch.equal(a, b) for a, b in zip(feats.energy, want_energy))
    assert feats.names == ("layer1", "layer2") and feats.maps == ()
    assert feats.logits.dtype == torch.float32 and feats.energy[0].shape == (4, 4, 4)
    assert np.array_equal(cache.arrays["view_seed"][1], np.arange(5) * 100 + 1)


def test_the_header_describes_views_images_and_taps(tmp_path):
    cache = _write_all(tmp_path / "c", views=3, images=5)
    assert (cache.views, cache.num_images) == (3, 5)
    assert cache.taps == TAPS
    # float16: 3 logits + 16 + 4 energy values at 2 bytes, and the int64 seed
    assert cache.bytes_per_view() == 2 * (3 + 16 + 4) + 8


def test_a_draw_or_an_index_outside_the_cache_is_refused(tmp_path):
    cache = _write_all(tmp_path / "c")
    with pytest.raises(IndexError, match="draw 2 outside 0..1"):
        cache.features(2, torch.tensor([0]))
    with pytest.raises(IndexError, match="holds 5 images; batch indices 0..5"):
        cache.features(0, torch.tensor([0, 5]))


def test_a_value_float16_cannot_hold_stops_the_recording_and_names_float32(tmp_path):
    writer = CacheWriter(tmp_path / "c", _header(), TAPS, "float16")
    logits, energy = _rows(0, torch.tensor([0]))
    energy[1] = energy[1] + 70000.0  # above float16's largest finite value, 65504
    with pytest.raises(OverflowError, match="tap 'layer2'.*cache.dtype=float32"):
        writer.write(0, torch.tensor([0]), torch.tensor([0]), logits, energy)


def test_float32_storage_keeps_values_float16_would_round(tmp_path):
    writer = CacheWriter(tmp_path / "c", _header(1, 1), TAPS, "float32")
    logits = torch.tensor([[1.0001, 70000.0, -3.0]])
    energy = [torch.full((1, 4, 4), 1e-6), torch.full((1, 2, 2), 123456.0)]
    writer.write(0, torch.tensor([0]), torch.tensor([7]), logits, energy)
    feats = writer.finish().features(0, torch.tensor([0]))
    assert torch.equal(feats.logits, logits) and torch.equal(feats.energy[1], energy[1])


def test_an_incomplete_recording_is_not_put_in_place(tmp_path):
    writer = CacheWriter(tmp_path / "c", _header(), TAPS, "float16")
    logits, energy = _rows(0, torch.tensor([0, 1]))
    writer.write(0, torch.tensor([0, 1]), torch.tensor([0, 1]), logits, energy)
    with pytest.raises(RuntimeError, match="8 of 10 views were not recorded"):
        writer.finish()
    assert not (tmp_path / "c").exists()
    with pytest.raises(FileNotFoundError, match="no header.json.*kdscene-cache"):
        TeacherCache(tmp_path / "c")


def test_an_existing_cache_is_never_overwritten(tmp_path):
    _write_all(tmp_path / "c")
    with pytest.raises(FileExistsError, match="exists"):
        CacheWriter(tmp_path / "c", _header(), TAPS, "float16")


def test_a_folder_that_is_not_a_cache_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "header.json").write_text('{"format": "something", "version": 1}')
    with pytest.raises(ValueError, match="not a kdscene-teacher-cache"):
        TeacherCache(tmp_path / "c")


def test_a_pickled_cache_maps_its_files_again(tmp_path):
    cache = _write_all(tmp_path / "c")
    cache.features(0, torch.tensor([0]))  # maps the files
    copy = pickle.loads(pickle.dumps(cache))  # what ddp_spawn does to the module
    assert copy._arrays is None
    assert torch.equal(
        copy.features(0, torch.tensor([2])).logits, cache.features(0, torch.tensor([2])).logits
    )
