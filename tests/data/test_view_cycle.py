"""Cache replay: epoch e shows the views of draw e mod K in epoch e's own order; loader options."""

from __future__ import annotations

import pytest
import torch

from kdscene.data import EpochSampler, MITIndoor67
from kdscene.data.sampling import epoch_order
from tests.data.layouts import make_mit_indoor
from tests.data.tiny import tiny_datamodule


def test_keys_cycle_through_the_draws_while_the_order_follows_the_epoch():
    sampler = EpochSampler(10, shuffle=True, seed=3, view_cycle=3)
    for epoch in range(7):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert [i for _, i in keys] == epoch_order(10, 3, epoch)  # the order of epoch e, not of e mod 3
        assert {k for k, _ in keys} == {epoch % 3}


def test_without_a_cycle_every_epoch_draws_its_own_views():
    sampler = EpochSampler(5, shuffle=True, seed=0)
    sampler.set_epoch(4)
    assert {k for k, _ in sampler} == {4}


def test_a_cycle_shorter_than_one_is_refused():
    with pytest.raises(ValueError, match="view_cycle must be >= 1"):
        EpochSampler(5, shuffle=True, view_cycle=0)


def test_under_ddp_each_rank_gets_its_shard_of_the_cycled_keys():
    ranks = [EpochSampler(9, True, seed=1, pad=True, rank=r, world_size=2, view_cycle=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(5)
    keys = [list(s) for s in ranks]
    order = epoch_order(9, 1, 5)
    padded = order + order[:1]
    assert [i for _, i in keys[0]] == padded[0::2] and [i for _, i in keys[1]] == padded[1::2]
    assert {k for shard in keys for k, _ in shard} == {1}


@pytest.fixture
def root(tmp_path):
    make_mit_indoor(tmp_path, n_train=4, size=20)
    return tmp_path


def test_the_training_loader_shows_epoch_e_the_images_of_draw_e_mod_k(root):
    dm = tiny_datamodule(MITIndoor67(root), resize=14, return_index=True, view_cycle=2)
    dm.setup("fit")
    train = dm.datasets["train"]
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    for images, _, indices in loader:
        for image, index in zip(images, indices.tolist()):
            assert torch.equal(image, train[(1, index)][0])
    assert dm.val_dataloader().sampler.view_cycle is None  # evaluation has no random views to cycle


def test_workers_persist_only_when_asked_and_memory_is_pinned_only_with_cuda(root):
    dm = tiny_datamodule(MITIndoor67(root), num_workers=1, persistent_workers=False, pin_memory=True)
    loader = dm.train_dataloader()
    assert not loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    assert tiny_datamodule(MITIndoor67(root), num_workers=1).train_dataloader().persistent_workers
