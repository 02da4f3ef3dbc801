"""Sample order and augmentation as pure functions of (seed, epoch, sample index).

A resumed run must see the same batches as the run it continues, whatever else drew random numbers
in between (Lightning creates loader iterators at other moments after a resume; persistent workers
carry their generators across epochs). So nothing here reads torch's global generator:

- :class:`EpochSampler` draws epoch ``e``'s order from a generator seeded by ``(seed, e)``, shards it
  across DDP ranks itself and yields **keys** ``(epoch, index)``: plain tuples of two ints, ``index``
  being the sample's position in the dataset;
- :class:`~kdscene.data.dataset.ImageListDataset` runs the transform of key ``(e, i)`` under
  :func:`seeded` with :func:`view_seed` ``(seed, e, i)``, so the view of a sample is the same in the main
  process and in any worker, and the global generator is left as it was;
- every loader gets its own ``torch.Generator`` (worker base seeds are drawn from it, not from the
  global one).

The seeds are BLAKE2b digests of the integers with a domain tag (``order`` or ``view``): stable across
processes, machines and Python versions (unlike ``hash``), and independent between epochs and samples.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import Sampler

Key = tuple[int, int]
"""A sampler key: ``(epoch, index)``; ``index`` is the sample's position in the dataset."""


def mix_seed(tag: str, *values: int) -> int:
    """A 63-bit seed from a domain tag and integers (any sign); different inputs give unrelated seeds.

    Args:
        tag: what the seed is for (``"order"``, ``"view"``), so that the two never coincide.
        values: the integers to mix, e.g. ``(seed, epoch, index)``.

    Returns:
        A non-negative integer below ``2**63``, usable by ``torch.Generator.manual_seed``.
    """
    packed = tag.encode() + b"\0" + struct.pack(f"<{len(values)}q", *values)
    digest = hashlib.blake2b(packed, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def view_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of sample ``index`` in ``epoch``."""
    return mix_seed("view", seed, epoch, index)


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Epoch ``epoch``'s order of ``range(size)``: a permutation seeded by ``(seed, epoch)``, or the identity.

    Args:
        size: number of samples.
        seed: the run's sampling seed.
        epoch: the epoch; its order does not depend on which epochs were drawn before.
        shuffle: permute; ``False`` keeps the dataset order.

    Returns:
        The sample indices in visiting order.
    """
    if not shuffle:
        return list(range(size))
    generator = torch.Generator().manual_seed(mix_seed("order", seed, epoch))
    return torch.randperm(size, generator=generator).tolist()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded by ``seed``; its previous state is put back after.

    Only the CPU generator is touched (``torch.manual_seed`` would also reseed every CUDA device).
    """
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def distributed_rank_and_size() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[Key]):
    """Yields ``(epoch, index)`` keys: epoch ``e``'s order is seeded by ``(seed, e)``; sharded across ranks.

    Lightning calls :meth:`set_epoch` before each epoch (training and evaluation). Each rank takes every
    ``world_size``-th key of the epoch's order, starting at its rank. With ``pad`` (training, as
    ``DistributedSampler`` does) the order is first extended by its own beginning to a multiple of the
    world size, so every rank runs the same number of steps (DDP needs it); without ``pad``
    (validation, test, predict) every sample is visited exactly once across ranks and the shards may
    differ by one, so metrics summed across ranks equal a single-device evaluation.

    With ``view_cycle=K`` the keys of epoch ``e`` are ``(e mod K, index)``: the order still comes from
    epoch ``e``, but the views cycle through the K draws a teacher cache recorded (:mod:`kdscene.cache`).

    Args:
        size: number of samples in the dataset.
        shuffle: a new permutation each epoch (training); ``False`` keeps the dataset order.
        seed: the sampling seed (the run's seed).
        pad: pad to equal shard sizes (training under DDP).
        rank: this process's rank; ``None`` reads it from ``torch.distributed`` when the sampler is used
            (0 when no process group is initialised).
        world_size: number of ranks; ``None`` likewise.
        view_cycle: number of recorded views to cycle through; ``None`` (default): each epoch its own.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int = 0,
        pad: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        view_cycle: int | None = None,
    ) -> None:
        if size < 0:
            raise ValueError(f"EpochSampler: size must be >= 0, got {size}")
        if (rank is None) != (world_size is None):
            raise ValueError(
                "EpochSampler: give both rank and world_size, or neither (read from torch.distributed)"
            )
        if world_size is not None and not 0 <= rank < world_size:  # type: ignore[operator]
            raise ValueError(f"EpochSampler: rank must be in 0..{world_size - 1}, got {rank}")
        if view_cycle is not None and view_cycle < 1:
            raise ValueError(f"EpochSampler: view_cycle must be >= 1 (or None), got {view_cycle}")
        self.size, self.shuffle, self.seed, self.pad = size, shuffle, seed, pad
        self.view_cycle = view_cycle
        self._rank, self._world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order (and views) from the next iteration on."""
        self.epoch = int(epoch)

    @property
    def rank_and_world_size(self) -> tuple[int, int]:
        """The given rank and world size, else those of ``torch.distributed`` (``(0, 1)`` without DDP)."""
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        return distributed_rank_and_size()

    def shard(self) -> list[int]:
        """This rank's sample indices for the current epoch, in visiting order."""
        rank, world = self.rank_and_world_size
        order = epoch_order(self.size, self.seed, self.epoch, self.shuffle)
        if self.pad and order:
            total = math.ceil(len(order) / world) * world
            order = (order * math.ceil(total / len(order)))[:total]
        return order[rank::world]

    def __iter__(self) -> Iterator[Key]:
        epoch = self.epoch  # read now: the keys of this pass all carry the same epoch
        view = epoch % self.view_cycle if self.view_cycle else epoch
        return iter([(view, i) for i in self.shard()])

    def __len__(self) -> int:
        rank, world = self.rank_and_world_size
        if self.pad:
            return math.ceil(self.size / world)
        return len(range(rank, self.size, world))
