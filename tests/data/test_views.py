"""A sample's view is a function of (seed, epoch, index): same in any worker, global generator untouched."""

import pytest
import torch
from torch.utils.data import DataLoader

from kdscene.data import MITIndoor67
from kdscene.data.dataset import DropSkipped
from tests.data.layouts import make_mit_indoor
from tests.data.tiny import tiny_datamodule


@pytest.fixture
def root(tmp_path):
    make_mit_indoor(tmp_path, n_train=4, size=20)  # 12 training images of 20 px: crops of 8 from 14
    return tmp_path


def _dm(root, **options):
    return tiny_datamodule(
        MITIndoor67(root), **{"resize": 14, "sampling_seed": 5, "return_index": True, **options}
    )


def _epoch_views(dm, epoch: int) -> dict[int, torch.Tensor]:
    """{index: image} of one pass of the training loader at ``epoch``."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return {int(i): x for images, _, indices in loader for x, i in zip(images, indices)}


def test_a_view_is_the_same_with_0_or_2_workers_persistent_or_not_whatever_was_drawn_before(root):
    reference = _dm(root, num_workers=0)
    reference.setup("fit")
    train = reference.datasets["train"]
    expected = {i: train[(1, i)][0] for i in range(len(train))}
    for workers, persistent, draws in ((0, False, 3), (2, True, 100), (2, False, 7)):
        loader = _dm(root, num_workers=workers).train_dataloader()  # persistent when workers > 0
        if loader.persistent_workers != persistent:
            loader = DataLoader(
                loader.dataset, 4, sampler=loader.sampler, num_workers=workers, collate_fn=loader.collate_fn
            )
        torch.manual_seed(draws)
        torch.rand(draws)
        loader.sampler.set_epoch(0)
        list(loader)  # an epoch first: persistent workers carry their state across epochs
        loader.sampler.set_epoch(1)
        seen = {int(i): x for images, _, indices in loader for x, i in zip(images, indices)}
        assert seen.keys() == expected.keys()
        assert all(torch.equal(seen[i], expected[i]) for i in expected), (workers, persistent)


def test_different_epochs_give_different_crops_and_orders(root):
    dm = _dm(root)
    dm.setup("fit")
    train = dm.datasets["train"]
    crops = {tuple(train[(epoch, 0)][0].flatten().tolist()) for epoch in range(6)}
    assert len(crops) > 1
    orders = [[int(i) for _, _, idx in dm.train_dataloader() for i in idx] for _ in range(1)]
    loader = dm.train_dataloader()
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        orders.append([int(i) for _, _, idx in loader for i in idx])
    assert len({tuple(o) for o in orders}) == 3 and all(sorted(o) == list(range(12)) for o in orders)


def test_iterating_a_loader_leaves_the_global_generator_unchanged(root):
    for workers in (0, 2):
        dm = _dm(root, num_workers=workers)
        state = torch.get_rng_state()
        for _ in dm.train_dataloader():
            pass
        for _ in dm.val_dataloader():
            pass
        assert torch.equal(torch.get_rng_state(), state), workers


def test_a_plain_index_is_the_epoch_0_view(root):
    dm = _dm(root)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert torch.equal(train[3][0], train[(0, 3)][0]) and torch.equal(train[-1][0], train[(0, 11)][0])
    with pytest.raises(IndexError, match="index 12 is outside a dataset of 12"):
        train[12]


def test_training_batches_carry_int64_dataset_positions_and_evaluation_batches_do_not(root):
    dm = _dm(root)
    dm.setup("fit")
    train = dm.datasets["train"]
    images, labels, indices = next(iter(dm.train_dataloader()))
    assert indices.dtype == torch.int64 and len(indices) == len(images) == 4
    for x, y, i in zip(images, labels, indices.tolist()):
        assert y == train.samples[i][1] and torch.equal(x, train[(0, i)][0])
    assert len(next(iter(dm.val_dataloader()))) == 2
    assert len(next(iter(_dm(root, return_index=False).train_dataloader()))) == 2


def test_an_all_skipped_batch_is_empty_tensors_of_the_usual_types():
    images, labels = DropSkipped((3, 8, 8))([None, None])
    assert images.shape == (0, 3, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (0,) and labels.dtype == torch.int64
    images, labels, indices = DropSkipped((3, 8, 8), with_index=True)([None])
    assert indices.shape == (0,) and indices.dtype == torch.int64
    kept = DropSkipped((3, 2, 2))([None, (torch.ones(3, 2, 2), 4), None])
    assert kept[0].shape == (1, 3, 2, 2) and kept[1].tolist() == [4]
