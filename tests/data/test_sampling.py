"""EpochSampler: the order of an epoch is a function of (seed, epoch); shards like DistributedSampler."""

import pytest
import torch
from torch.utils.data import DistributedSampler

from kdscene.data.sampling import EpochSampler, epoch_order, mix_seed, seeded


def _keys(sampler: EpochSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sampler = EpochSampler(50, shuffle=True, seed=3)
    orders = [[i for _, i in _keys(sampler, e)] for e in range(4)]
    for order in orders:
        assert sorted(order) == list(range(50))
    assert len({tuple(o) for o in orders}) == 4
    assert orders[0] != list(range(50))


def test_the_order_of_an_epoch_does_not_depend_on_the_epochs_iterated_before():
    direct = _keys(EpochSampler(40, shuffle=True, seed=1), 5)
    walked = EpochSampler(40, shuffle=True, seed=1)
    for epoch in (0, 1, 7, 2):
        _keys(walked, epoch)
    torch.rand(100)  # the global generator plays no part
    assert _keys(walked, 5) == direct
    assert all(e == 5 for e, _ in direct)


def test_the_seed_changes_the_order_and_evaluation_keeps_the_dataset_order():
    assert epoch_order(30, seed=0, epoch=0) != epoch_order(30, seed=1, epoch=0)
    assert _keys(EpochSampler(5, shuffle=False, seed=9), 4) == [(4, i) for i in range(5)]


def test_keys_carry_the_epoch_set_before_iteration():
    sampler = EpochSampler(6, shuffle=True)
    sampler.set_epoch(2)
    keys = iter(sampler)
    sampler.set_epoch(3)  # a later call does not change a pass already started
    assert [k for k in keys] == _keys(EpochSampler(6, shuffle=True), 2)
    assert {e for e, _ in sampler} == {3}


@pytest.mark.parametrize("size", [12, 13, 3])
def test_training_shards_are_those_of_distributed_sampler(size):
    for rank in range(4):
        ours = EpochSampler(size, shuffle=False, pad=True, rank=rank, world_size=4)
        torch_sampler = DistributedSampler(range(size), num_replicas=4, rank=rank, shuffle=False)
        assert [i for _, i in ours] == list(torch_sampler)
        assert len(ours) == len(torch_sampler)


def test_shuffled_training_shards_cover_the_data_and_have_equal_lengths():
    shards = [[i for _, i in _keys(EpochSampler(10, True, 4, True, r, 3), 1)] for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    counts = torch.bincount(torch.tensor(sum(shards, [])), minlength=10)
    assert counts.sum() == 12 and counts.min() == 1 and counts.max() == 2  # two samples padded once


@pytest.mark.parametrize(("size", "world"), [(9, 2), (10, 4), (2, 3)])
def test_evaluation_shards_count_every_sample_once(size, world):
    shards = [list(EpochSampler(size, False, rank=r, world_size=world)) for r in range(world)]
    indices = sorted(i for shard in shards for _, i in shard)
    assert indices == list(range(size))
    lengths = [len(EpochSampler(size, False, rank=r, world_size=world)) for r in range(world)]
    assert lengths == [len(s) for s in shards] and max(lengths) - min(lengths) <= 1


def test_without_a_process_group_the_sampler_is_one_rank_of_one():
    sampler = EpochSampler(7, shuffle=True, pad=True)
    assert sampler.rank_and_world_size == (0, 1) and len(sampler) == 7


def test_a_rank_outside_the_world_or_half_given_is_refused():
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        EpochSampler(4, True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="both rank and world_size"):
        EpochSampler(4, True, rank=0)


def test_mixed_seeds_are_distinct_63_bit_values_for_distinct_inputs():
    seeds = {
        mix_seed(tag, s, e, i)
        for tag in ("view", "order")
        for s in (0, -1)
        for e in range(5)
        for i in range(5)
    }
    assert len(seeds) == 2 * 2 * 5 * 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_seeded_blocks_restore_the_global_generator():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(11):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)
    with seeded(11):
        assert torch.equal(torch.rand(2), inside)
