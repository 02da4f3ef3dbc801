"""CRD's negatives: a memory bank (the authors') or a queue (kdscene's), the same on every rank.

:class:`MemoryBank` keeps one student and one teacher embedding per training sample (N × d each) and
draws K negatives per anchor; :class:`FeatureQueue` keeps the last Q embeddings of each side (MoCo-style)
and uses all of them as negatives, so its size does not grow with the data set. Both are updated with the
embeddings of the whole global batch: under ``torch.distributed`` the rows of every rank are gathered
(:func:`gather_rows`) and each rank applies the same update, so that every rank holds the same buffers.

Negative draws (:func:`uniform_negatives`, :func:`other_class_negatives`) take an explicit
``torch.Generator``; :class:`~kdscene.losses.crd.CRDLoss` seeds it from its state so that the draws are
reproducible, restored by a checkpoint and the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

NegativeDraw = Literal["uniform", "other_class"]


# -- collectives (no-ops in a single process) ---------------------------------------------------
def distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` from every rank, concatenated in rank order (ranks may hold different counts)."""
    if not distributed():
        return x
    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def broadcast_from_first(tensors: Sequence[Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values."""
    if distributed():
        for t in tensors:
            dist.broadcast(t, src=0)


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over the ranks (``x`` itself in a single process)."""
    if not distributed():
        return x
    total = x.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


# -- shared pieces ---------------------------------------------------------------------------------
def initial_rows(n: int, dim: int) -> Tensor:
    """The authors' bank initialisation: uniform in [−a, a], a = 1/√(dim/3), so E‖row‖² = 1."""
    bound = 1.0 / math.sqrt(dim / 3)
    return torch.rand(n, dim).mul_(2 * bound).sub_(bound)


def first_occurrences(indices: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value of ``indices``, in increasing order."""
    _, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.numel(), device=indices.device)
    first = torch.full((int(inverse.max()) + 1,), indices.numel(), device=indices.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first.sort().values


def momentum_update_(bank: Tensor, indices: Tensor, values: Tensor, momentum: float) -> None:
    """bank[i] ← normalise(momentum · bank[i] + (1 − momentum) · value), in place; ``indices`` distinct."""
    rows = bank.index_select(0, indices) * momentum + values.to(bank.dtype) * (1.0 - momentum)
    bank.index_copy_(0, indices, F.normalize(rows, dim=1))


# -- negative draws --------------------------------------------------------------------------------
def uniform_negatives(n: int, batch: int, k: int, generator: torch.Generator) -> Tensor:
    """(batch, k) indices drawn uniformly from ``range(n)`` with replacement (the code's AliasMethod with
    uniform weights draws from the same distribution)."""
    return torch.randint(n, (batch, k), generator=generator, device=generator.device)


def other_class_negatives(
    order: Tensor, sorted_labels: Tensor, labels: Tensor, k: int, generator: torch.Generator
) -> Tensor:
    """(B, k) indices drawn uniformly, with replacement, among the samples of other labels than the anchor's.

    Args:
        order: the samples sorted by their known label (``argsort`` of the label table).
        sorted_labels: the label table in that order; unknown labels are −1, which every anchor may draw.
        labels: the anchors' labels, (B,).
        k: negatives per anchor.
        generator: the random stream.

    Returns:
        ``order`` positions mapped to sample indices: position u of the N − n_y eligible ones skips the
        block of the n_y samples of class y.
    """
    start = torch.searchsorted(sorted_labels, labels, right=False)
    stop = torch.searchsorted(sorted_labels, labels, right=True)
    eligible = order.numel() - (stop - start)
    if bool((eligible <= 0).any()):
        raise ValueError(
            "CRDLoss(negatives='other_class'): every sample seen so far has the anchor's label, so there is "
            "no negative to draw; use negatives='uniform' for single-class data"
        )
    u = torch.rand(labels.shape[0], k, generator=generator, device=generator.device, dtype=torch.float64)
    pos = (u * eligible[:, None]).long().minimum(eligible[:, None] - 1)
    pos = pos + (stop - start)[:, None] * (pos >= start[:, None])
    return order[pos]


# -- the two stores --------------------------------------------------------------------------------
class MemoryBank(nn.Module):
    """One student and one teacher embedding per training sample, updated with momentum (the authors').

    Args:
        num_samples: N, the training set's size (the rows of each bank).
        dim: d, the embedding width.
        momentum: m of the update (0.5).
        negatives: ``"uniform"`` or ``"other_class"`` (which also keeps a table of the samples' labels,
            −1 until a sample is first seen).

    Buffers ``student``, ``teacher`` (N × d) and ``labels`` (N, ``"other_class"`` only) are saved in the
    checkpoint.
    """

    def __init__(self, num_samples: int, dim: int, momentum: float, negatives: NegativeDraw) -> None:
        super().__init__()
        self.momentum = momentum
        self.negatives = negatives
        self.register_buffer("student", initial_rows(num_samples, dim))
        self.register_buffer("teacher", initial_rows(num_samples, dim))
        if negatives == "other_class":
            self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))
        self._sorted: tuple[Tensor, Tensor] | None = None  # (order, sorted labels), rebuilt on change
        # a module-level function, not a closure: the loss must stay picklable (ddp_spawn)
        self.register_load_state_dict_post_hook(_forget_sorted)

    @property
    def size(self) -> int:
        return self.student.shape[0]

    def learn_labels(self, indices: Tensor, labels: Tensor) -> None:
        """Record the (global batch's) labels of ``indices`` for ``"other_class"`` draws."""
        if self.negatives != "other_class":
            return
        labels = labels.to(self.labels)
        if not torch.equal(self.labels[indices], labels):
            self.labels[indices] = labels
            self._sorted = None

    def draw(self, indices: Tensor, labels: Tensor | None, k: int, generator: torch.Generator) -> Tensor:
        """(B, 1 + k) bank rows to score: column 0 the positive (the sample itself), then k negatives."""
        if self.negatives == "uniform":
            negatives = uniform_negatives(self.size, indices.shape[0], k, generator)
        else:
            if labels is None:
                raise ValueError("CRDLoss(negatives='other_class') needs the labels of the batch")
            order, sorted_labels = self._sorted_labels()
            negatives = other_class_negatives(order, sorted_labels, labels.to(self.labels), k, generator)
        return torch.cat([indices[:, None].to(negatives), negatives], dim=1)

    def _sorted_labels(self) -> tuple[Tensor, Tensor]:
        """The label table's sort order and sorted values, cached until the table changes or moves."""
        if self._sorted is None or self._sorted[0].device != self.labels.device:
            sorted_labels, order = torch.sort(self.labels, stable=True)
            self._sorted = (order, sorted_labels)
        return self._sorted

    @torch.no_grad()
    def update(self, indices: Tensor, student: Tensor, teacher: Tensor) -> None:
        """Momentum update of the rows of ``indices`` (a repeated index keeps its first row)."""
        keep = first_occurrences(indices)
        momentum_update_(self.student, indices[keep], student[keep], self.momentum)
        momentum_update_(self.teacher, indices[keep], teacher[keep], self.momentum)

    def extra_repr(self) -> str:
        return f"num_samples={self.size}, dim={self.student.shape[1]}, negatives={self.negatives!r}"


def _forget_sorted(module: MemoryBank, incompatible_keys: object) -> None:
    """Load-state-dict hook: a loaded label table invalidates the cached sort."""
    module._sorted = None


class FeatureQueue(nn.Module):
    """A first-in-first-out queue of the last ``size`` student and teacher embeddings (kdscene's variant).

    Args:
        size: Q, the rows of each queue (every one is a negative of every anchor).
        dim: d, the embedding width.

    Buffers ``student``, ``teacher`` (Q × d, initialised like the memory bank) and ``pointer`` (the next
    row to overwrite) are saved in the checkpoint.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("student", initial_rows(size, dim))
        self.register_buffer("teacher", initial_rows(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.student.shape[0]

    @torch.no_grad()
    def enqueue(self, student: Tensor, teacher: Tensor) -> None:
        """Write the rows in order over the oldest ones (only the last Q when more are given)."""
        student, teacher = student[-self.size :], teacher[-self.size :]
        rows = (self.pointer + torch.arange(student.shape[0], device=self.pointer.device)) % self.size
        self.student[rows] = student.to(self.student.dtype)
        self.teacher[rows] = teacher.to(self.teacher.dtype)
        self.pointer.copy_((self.pointer + student.shape[0]) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.student.shape[1]}"
