"""Contrastive representation distillation (CRD).

Tian, Krishnan, Isola, "Contrastive Representation Distillation" (ICLR 2020, arXiv 1910.10699). Authors'
code: ``HobbitLong/RepDistiller`` (``crd/criterion.py``, ``crd/memory.py``, ``dataset/cifar100.py``
``CIFAR100InstanceSample``), copied by mdistiller (``distillers/CRD.py``) and by the DCT paper's repository
(``Distillation Zoo/crd``), which runs it on the pooled vectors with K = 16384, τ = 0.07, momentum 0.5,
d = 128 and weight 0.8.

Embeddings. The student's and the teacher's penultimate vectors x_S, x_T (``Features.pooled``) are mapped by
a linear head each to d = ``feat_dim`` and L2-normalised: s = g_S(x_S), t = g_T(x_T).

Memory bank (``bank="memory"``, the authors'). Two buffers M_S, M_T ∈ R^{N×d} hold one student and one
teacher embedding per training sample (N = ``num_samples``). For sample i of a batch of B and its K
negatives j_1..j_K (column 0 is i itself, the positive)::

    P_S(k) = exp( s_i · M_T[k] / τ ) / Z_S          student anchor, the teacher bank's rows
    P_T(k) = exp( t_i · M_S[k] / τ ) / Z_T          teacher anchor, the student bank's rows
    ℓ(P)   = −(1/B) Σ_i [ log P(i) / (P(i) + K/N + ε) + Σ_k log (K/N) / (P(j_k) + K/N + ε) ]
    L_CRD  = ℓ(P_S) + ℓ(P_T)

the noise-contrastive estimate with P(D=1 | ·) = P / (P + K·P_n), P_n = 1/N uniform (ε = 1e-7 as the
code). After the loss, the positives' rows move towards the batch (m = ``momentum``)::

    M_S[i] ← normalise( m · M_S[i] + (1 − m) · s_i ),   M_T[i] ← normalise( m · M_T[i] + (1 − m) · t_i )

The rows are initialised uniformly in [−a, a], a = 1/√(d/3). Gradients reach the student through s and the
heads through s and t; the bank rows are constants.

Differences between the paper and the authors' code, with the option that selects each:

- Normalisation (``mode``). The code divides exp(·/τ) by a constant Z estimated once, from the first
  training batch, as N × the mean of its B·(K+1) values (one Z per direction; kept in the ``normaliser``
  buffer, saved in checkpoints). The paper's critic is h = e^{t·s/τ} / (e^{t·s/τ} + K/N), i.e. Z = 1.
  ``"code"`` (default) or ``"paper"``.
- Negatives (``negatives``). ``ContrastMemory`` draws them uniformly (AliasMethod with equal weights) when it
  is given none, but the authors' training data sets hand it the negatives: K samples of *other classes*
  (``mode='exact'`` of RepDistiller's ``CIFAR100InstanceSample`` and ImageNet ``ImageFolderSample``, and
  mdistiller's; the DCT repository's ``SceneRecognitionDatasetCRD`` does the same, but fills its per-class
  lists from the first ``nclasses`` samples only). ``"other_class"`` (default) draws K indices uniformly
  among the samples whose label differs from the anchor's, from a label table the bank fills as samples
  are seen (in the first epoch, not-yet-seen samples count as eligible: their rows are still the random
  initialisation); ``"uniform"`` draws from all N. kdscene always draws with replacement (the code draws
  without replacement when K is at most the number of eligible samples). Draws come from a generator
  seeded by the loss's ``draws`` buffer (seed, step): reproducible, restored by checkpoints and the same
  on every rank (each rank's anchors differ, so its loss does).
- A repeated index within a global batch updates its rows once, with its first embedding (the code's
  ``index_copy_`` keeps an unspecified one).

Queue (``bank="queue"``, kdscene's variant, as the author suggests in RepDistiller issue #40 for large data
sets). A bank costs 2·N·d floats: 20 MB for ADE20K, 1.8 GB for Places365's 1.8 M images. The queue keeps
the last Q = ``queue_size`` embeddings of each side (first in, first out, MoCo-style), whatever their class.
Sample i's positive is the other side's current embedding (t_i for s_i, detached, as a bank row would be)
and its negatives are all Q queue rows, so K = Q and the scores are one matrix product. The same ℓ is used
with N = ``num_samples`` (Q when it is not given; with ``mode="code"`` N cancels out of every term except ε).
The queue needs no sample indices.

Distributed training. Every training step gathers the indices, embeddings (and labels) of all ranks
(``torch.distributed.all_gather``) and each rank applies the same update, so all ranks hold the same bank or
queue; at the first training step rank 0's buffers are broadcast, and Z is the mean of the ranks' estimates.
The contrastive loss itself is per rank. (DDP's ``broadcast_buffers=True`` default also copies rank 0's
buffers every step; the gathered update makes that unnecessary, and ``broadcast_buffers=False`` saves its
2·N·d floats of traffic.)

Evaluation. Validation batches carry no indices: with the memory bank the loss then returns 0 (tied to its
parameters) and logs ``val/loss_crd = 0``; batches with indices are scored without updating anything. The
queue is scored in evaluation too, without enqueuing. A training batch without indices raises an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import DistillLoss, check_choice, require_pooled, upcast
from kdscene.losses.crd_bank import (
    FeatureQueue,
    MemoryBank,
    NegativeDraw,
    broadcast_from_first,
    gather_rows,
    mean_over_ranks,
)

CRDBank = Literal["memory", "queue"]
CRDMode = Literal["code", "paper"]


def crd_nce_loss(p: Tensor, num_samples: int, eps: float = 1e-7) -> Tensor:
    """ℓ(P) of the module docstring for scores ``p`` (B, 1 + K), the positive in column 0.

    Args:
        p: normalised scores P = exp(·/τ) / Z.
        num_samples: N of the noise distribution P_n = 1/N.
        eps: ε of the code (1e-7).

    Returns:
        The loss summed over positive and negatives, averaged over the B anchors.
    """
    noise = (p.shape[1] - 1) / num_samples
    log_pos = torch.log(p[:, 0] / (p[:, 0] + noise + eps))
    log_neg = torch.log(noise / (p[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / p.shape[0]


class ContrastEmbed(nn.Module):
    """g: a linear map to the contrast space followed by L2 normalisation."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(upcast(self.linear(x)), dim=1)


def _width(given: int | None, taps: Sequence[TapInfo], who: str) -> int:
    if given is not None:
        return int(given)
    if not taps:
        raise ValueError(f"CRDLoss: {who}_dim is None and there are no {who} taps to take the width from")
    return taps[-1].channels


class CRDLoss(DistillLoss):
    """CRD on the penultimate (pooled) vectors; returns ``{"crd": weight · L_CRD}``.

    Args:
        student_taps: probed student maps; the last one's channels are the pooled width by default.
        teacher_taps: probed teacher maps, likewise.
        num_samples: N, the training set's size (filled in by ``DistillationModule``); required by the memory
            bank, optional for the queue.
        weight: β (0.8 in RepDistiller's CIFAR script and the DCT paper's ``config_CRD.yaml``; 1.4 on its dev
            branch).
        feat_dim: d, the embedding width (128).
        num_negatives: K per anchor for the memory bank (16384).
        temperature: τ (0.07).
        momentum: m of the bank update (0.5).
        bank: ``"memory"`` (authors') or ``"queue"`` (kdscene's), see the module docstring.
        queue_size: Q, the queue's rows (``bank="queue"``).
        negatives: ``"other_class"`` (default, the authors' data sets) or ``"uniform"``.
        mode: ``"code"`` (default: Z from the first batch) or ``"paper"`` (Z = 1).
        student_dim: width of the student's pooled vector; ``None`` = the last student tap's channels (a
            ResNet's or MobileNet's pooled width). A mismatch is reported at the first batch.
        teacher_dim: likewise for the teacher.
        eps: ε of the loss (1e-7).
        seed: seed of the negatives' draws; ``None`` = drawn from torch's global generator at construction.
    """

    functional: ClassVar[str] = "crd_nce_loss"

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        num_samples: int | None = None,
        weight: float = 0.8,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        bank: CRDBank = "memory",
        queue_size: int = 16384,
        negatives: NegativeDraw = "other_class",
        mode: CRDMode = "code",
        student_dim: int | None = None,
        teacher_dim: int | None = None,
        eps: float = 1e-7,
        seed: int | None = None,
    ) -> None:
        super().__init__(weight)
        self.bank = check_choice("CRDLoss", "bank", bank, CRDBank)
        self.mode = check_choice("CRDLoss", "mode", mode, CRDMode)
        self.negatives = check_choice("CRDLoss", "negatives", negatives, NegativeDraw)
        checked = (("feat_dim", feat_dim), ("num_negatives", num_negatives), ("temperature", temperature))
        for name, value in checked:
            _check_positive(name, value)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"CRDLoss: momentum must be in [0, 1), got {momentum}")
        self.num_negatives, self.temperature, self.eps = int(num_negatives), float(temperature), float(eps)
        self.embed_s = ContrastEmbed(_width(student_dim, student_taps, "student"), feat_dim)
        self.embed_t = ContrastEmbed(_width(teacher_dim, teacher_taps, "teacher"), feat_dim)
        self.store = self._build_store(num_samples, feat_dim, momentum, queue_size)
        self.noise_size = int(num_samples) if num_samples else self.store.size
        # Z of the two directions; −1 = not estimated yet ("paper": fixed at 1)
        self.register_buffer("normaliser", torch.full((2,), 1.0 if mode == "paper" else -1.0))
        first = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.register_buffer("draws", torch.tensor([first, 0], dtype=torch.long))  # (seed, training steps)

    def _build_store(
        self, num_samples: int | None, dim: int, momentum: float, queue_size: int
    ) -> MemoryBank | FeatureQueue:
        if self.bank == "queue":
            _check_positive("queue_size", queue_size)
            return FeatureQueue(queue_size, dim)
        if not num_samples or num_samples < 1:
            raise ValueError(
                f"CRDLoss(bank='memory') needs num_samples, the training set's size (one bank row per "
                f"sample), got {num_samples!r}; DistillationModule passes it, or use bank='queue'"
            )
        return MemoryBank(int(num_samples), dim, momentum, self.negatives)

    @property
    def needs_indices(self) -> bool:
        """The memory bank needs the batch's dataset indices; the queue does not."""
        return self.bank == "memory"

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, bank={self.bank!r}, num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, negatives={self.negatives!r}, mode={self.mode!r}"
        )

    # -- pieces ---------------------------------------------------------------------------------
    def _embed(self, student: Features, teacher: Features) -> tuple[Tensor, Tensor]:
        x_s = self._pooled(student, "student", self.embed_s)
        x_t = self._pooled(teacher, "teacher", self.embed_t)
        if x_s.shape[0] != x_t.shape[0]:
            raise ValueError(f"CRDLoss: batch sizes differ, student {x_s.shape[0]} vs teacher {x_t.shape[0]}")
        return self.embed_s(x_s), self.embed_t(x_t)

    @staticmethod
    def _pooled(feats: Features, who: str, embed: ContrastEmbed) -> Tensor:
        x = require_pooled(feats, "CRDLoss", who).flatten(1)
        width = embed.linear.in_features
        if x.shape[1] != width:
            raise ValueError(
                f"CRDLoss: the {who}'s pooled vector has {x.shape[1]} features but its embedding was built "
                f"for {width} (the last {who} tap's channels unless {who}_dim is set); "
                f"set {who}_dim={x.shape[1]}"
            )
        return x

    def contrast_indices(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """The memory-bank rows a step scores for ``indices``: (B, 1 + K), each sample itself first.

        The draw depends only on the loss's state (the ``draws`` buffer and, for ``"other_class"``, the
        label table), so calling this before a step returns what the step uses; a training step advances it.
        """
        if not isinstance(self.store, MemoryBank):
            raise ValueError("CRDLoss(bank='queue') draws no negatives: every queue row is one")
        device = self.store.student.device
        seed, step = (int(v) for v in self.draws.tolist())
        stream = ((seed & 0xFFFFFFFF) << 32) | (step & 0xFFFFFFFF)  # one stream per (seed, step)
        generator = torch.Generator(device=device).manual_seed(stream)
        return self.store.draw(
            indices.to(device=device, dtype=torch.long), labels, self.num_negatives, generator
        )

    def _exp_scores(self, anchors: Tensor, rows: Tensor) -> Tensor:
        """exp(anchor_b · rows[b, k] / τ), (B, 1 + K), in the store's precision (never autocast's half)."""
        with torch.autocast(anchors.device.type, enabled=False):
            dots = torch.bmm(rows, anchors.to(rows.dtype)[:, :, None])[:, :, 0]
            return torch.exp(dots / self.temperature)

    def _queue_scores(self, anchors: Tensor, other: Tensor, queue: Tensor) -> Tensor:
        """exp(·/τ) of each anchor with its positive (the other side's embedding, detached), then every
        queue row: (B, 1 + Q), one matrix product for the negatives. The queue is copied: the backward
        pass needs these rows after the step has enqueued new ones in place."""
        with torch.autocast(anchors.device.type, enabled=False):
            a = anchors.to(queue.dtype)
            positive = (a * other.detach().to(queue.dtype)).sum(dim=1, keepdim=True)
            return torch.exp(torch.cat([positive, a @ queue.clone().T], dim=1) / self.temperature)

    def _z(self, e_s: Tensor, e_t: Tensor) -> Tensor:
        """(Z_S, Z_T): estimated from the first training batch (mean over ranks) and stored."""
        if self.mode == "paper" or bool((self.normaliser > 0).all()):
            return self.normaliser
        estimate = torch.stack([e_s.mean(), e_t.mean()]).detach() * self.noise_size
        if not self.training:  # evaluation before any training step: estimated, not stored
            return estimate
        self.normaliser.copy_(mean_over_ranks(estimate.to(self.normaliser)))
        return self.normaliser

    def _contrast(self, e_s: Tensor, e_t: Tensor) -> Tensor:
        z = self._z(e_s, e_t).to(e_s)
        return crd_nce_loss(e_s / z[0], self.noise_size, self.eps) + crd_nce_loss(
            e_t / z[1], self.noise_size, self.eps
        )

    def _start_step(self) -> None:
        """At the first training step every rank takes rank 0's buffers."""
        if int(self.draws[1]) == 0:
            broadcast_from_first([*self.store.buffers(), self.draws])

    # -- the two stores ---------------------------------------------------------------------------
    def _memory_loss(self, s: Tensor, t: Tensor, indices: Tensor, labels: Tensor | None) -> Tensor:
        store: MemoryBank = self.store
        indices = indices.to(device=s.device, dtype=torch.long)
        if self.training:
            self._start_step()
            all_indices = gather_rows(indices)
            if self.negatives == "other_class":
                store.learn_labels(all_indices, gather_rows(_need_labels(labels).to(indices)))
        contrast = self.contrast_indices(indices, labels)
        e_s = self._exp_scores(s, store.teacher[contrast])
        e_t = self._exp_scores(t, store.student[contrast])
        loss = self._contrast(e_s, e_t)
        if self.training:
            store.update(all_indices, gather_rows(s.detach()), gather_rows(t.detach()))
            self.draws[1] += 1
        return loss

    def _queue_loss(self, s: Tensor, t: Tensor) -> Tensor:
        store: FeatureQueue = self.store
        if self.training:
            self._start_step()
        e_s = self._queue_scores(s, t, store.teacher)
        e_t = self._queue_scores(t, s, store.student)
        loss = self._contrast(e_s, e_t)
        if self.training:
            store.enqueue(gather_rows(s.detach()), gather_rows(t.detach()))
            self.draws[1] += 1
        return loss

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s, t = self._embed(student, teacher)
        if self.bank == "queue":
            return {"crd": self.weight * self._queue_loss(s, t)}
        indices = student.indices if student.indices is not None else teacher.indices
        if indices is None:
            if self.training:
                raise ValueError(
                    "CRDLoss(bank='memory') needs the training batch's dataset indices (Features.indices is "
                    "None): the data module must return (images, labels, indices) for a loss with "
                    "needs_indices; or use bank='queue'"
                )
            return {"crd": sum(p.sum() for p in self.parameters()) * 0.0}  # validation: no indices
        return {"crd": self.weight * self._memory_loss(s, t, indices, labels)}


def _need_labels(labels: Tensor | None) -> Tensor:
    if labels is None:
        raise ValueError("CRDLoss(negatives='other_class') needs the batch's labels to draw other classes")
    return labels


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"CRDLoss: {name} must be > 0, got {value}")
