"""Relational knowledge distillation (RKD).

Park, Kim, Lu, Cho, "Relational Knowledge Distillation" (CVPR 2019, arXiv 1904.05068); authors' code
``lenscloth/RKD`` (``metric/loss.py``), and RepDistiller's ``distiller_zoo/RKD.py`` (CIFAR-100 baseline,
weights 25 / 50), which this module follows.

RKD transfers the geometry of a batch of penultimate vectors t_1..t_B (teacher) and s_1..s_B (student,
``Features.pooled``) rather than the vectors themselves, so the two may have different widths.

Distance-wise potential (paper Sec. 3.2.1, Eq. 3-4), normalised by the mean distance μ over the pairs::

    ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ,      μ = mean_{i≠j} ‖t_i − t_j‖₂
    L_RKD-D      = Σ_{(i,j)} l_δ(ψ_D(t_i, t_j), ψ_D(s_i, s_j))

Angle-wise potential (paper Sec. 3.2.2, Eq. 6-7), the cosine of the angle at the middle vertex::

    ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_kj⟩,     e_ij = (t_i − t_j) / ‖t_i − t_j‖₂
    L_RKD-A      = Σ_{(i,j,k)} l_δ(ψ_A(t_i, t_j, t_k), ψ_A(s_i, s_j, s_k))

l_δ is the Huber loss with δ = 1 (Eq. 5) (``smooth_l1_loss``), both in the paper and in the code. The total
is w_D · L_RKD-D + w_A · L_RKD-A (paper, metric learning: 1 and 2; RepDistiller: 25 and 50, outer β 1).

The code (``mode="code"``, default) differs from the paper's sums:

- the Huber loss is averaged over all B² pairs and all B³ triplets, degenerate ones included (i = j:
  distance 0 on both sides; a zero difference vector normalises to 0, so its cosines are 0 on both
  sides; these entries add nothing but count in the mean);
- squared distances are clamped at ``eps`` = 1e-12 before the square root (the diagonal is then set
  to 0); μ averages the distances that are > 0 (the off-diagonal ones unless two vectors coincide);
  ``F.normalize`` divides by max(‖·‖, 1e-12).

``mode="paper"`` averages the Huber loss over the B(B−1) ordered pairs i ≠ j and the B(B−1)(B−2)
triplets of distinct indices instead (the paper writes plain sums, whose size grows with B and B³;
the mean keeps the scale of the code). The clamps are shared. Fewer than 2 (distance) or 3 (angle)
samples give 0 in paper mode.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, check_choice, require_pooled, upcast

RKDMode = Literal["code", "paper"]


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances, squared values clamped at ``eps``, zero diagonal."""
    sq = x.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * x @ x.T).clamp(min=eps)
    off = 1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    return d2.sqrt() * off


def normalised_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Distances divided by the mean of the positive ones (ψ_D)."""
    d = pairwise_distances(x, eps)
    positive = d[d > 0]
    if positive.numel() == 0:
        return d
    return d / positive.mean()


def triplet_cosines(x: Tensor) -> Tensor:
    """(B, D) -> (B, B, B) with [a, b, c] = ⟨e(x_b − x_a), e(x_c − x_a)⟩ (angle at vertex a)."""
    diff = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return diff @ diff.transpose(1, 2)


def _distinct(b: int, order: int, like: Tensor) -> Tensor:
    """Boolean mask of index tuples with pairwise different entries (order 2 or 3)."""
    i = torch.arange(b, device=like.device)
    ne = i.unsqueeze(1) != i.unsqueeze(0)
    if order == 2:
        return ne
    return ne.unsqueeze(2) & ne.unsqueeze(1) & ne.unsqueeze(0)


def _huber(s: Tensor, t: Tensor, mode: RKDMode, order: int) -> Tensor:
    if mode == "code":
        return F.smooth_l1_loss(s, t)
    mask = _distinct(s.shape[0], order, s)
    if not mask.any():
        return s.sum() * 0.0
    return F.smooth_l1_loss(s[mask], t[mask])


def rkd_distance(student: Tensor, teacher: Tensor, eps: float = 1e-12, mode: RKDMode = "code") -> Tensor:
    """Distance-wise RKD: Huber between the normalised distance matrices."""
    s = normalised_distances(upcast(student), eps)
    t = normalised_distances(upcast(teacher).detach(), eps)
    return _huber(s, t, mode, order=2)


def rkd_angle(student: Tensor, teacher: Tensor, mode: RKDMode = "code") -> Tensor:
    """Angle-wise RKD: Huber between the triplet cosines."""
    s = triplet_cosines(upcast(student))
    t = triplet_cosines(upcast(teacher).detach())
    return _huber(s, t, mode, order=3)


class RKDLoss(DistillLoss):
    """RKD on the penultimate (pooled) vectors; returns ``{"rkd": weight · (w_D · L_D + w_A · L_A)}``.

    Args:
        weight: outer term weight (1, RepDistiller's ``-b 1``; SRM's fork also runs β 1).
        distance_weight: w_D (25, RepDistiller; the paper's metric-learning runs use 1).
        angle_weight: w_A (50, RepDistiller; paper 2).
        eps: clamp of the squared distances (1e-12, as the code).
        mode: ``"code"`` (default) or ``"paper"`` (module docstring).
    """

    functional: ClassVar[str] = "rkd_distance / rkd_angle"

    def __init__(
        self,
        weight: float = 1.0,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        eps: float = 1e-12,
        mode: RKDMode = "code",
    ) -> None:
        super().__init__(weight)
        self.mode = check_choice("RKDLoss", "mode", mode, RKDMode)
        if eps <= 0:
            raise ValueError(f"eps must be > 0 (it keeps the square root differentiable), got {eps}")
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, distance_weight={self.distance_weight}, "
            f"angle_weight={self.angle_weight}, eps={self.eps}, mode={self.mode!r}"
        )

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s = require_pooled(student, "RKDLoss", "student").flatten(1)
        t = require_pooled(teacher, "RKDLoss", "teacher").flatten(1)
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"RKDLoss: batch sizes differ, student {s.shape[0]} vs teacher {t.shape[0]}")
        loss = self.distance_weight * rkd_distance(s, t, self.eps, self.mode)
        loss = loss + self.angle_weight * rkd_angle(s, t, self.mode)
        return {"rkd": self.weight * loss}
