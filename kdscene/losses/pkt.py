"""Probabilistic knowledge transfer (PKT).

Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV 2018,
arXiv 1803.10837); authors' code ``passalis/probabilistic_kt`` (``nn/pkt.py``,
``cosine_similarity_loss``), copied unchanged into RepDistiller (``distiller_zoo/PKT.py``) and the DCT
paper's repository (``Distillation Zoo/PKT.py``).

The student's and the teacher's penultimate vectors x_1..x_B of a batch (``Features.pooled``) define two
distributions over pairs of samples through a kernel; PKT matches them with a KL divergence (RepDistiller
and the DCT repository use the pooled vector, their ``feat[-1]``). Paper,
cosine-similarity kernel and conditional probabilities::

    K(a, b) = ½ ( aᵀb / (‖a‖₂‖b‖₂) + 1 )                     ∈ [0, 1]
    p_{j|i} = K(x_i, x_j) / Σ_{k≠i} K(x_i, x_k)              (j ≠ i)
    L_PKT   = Σ_i Σ_{j≠i} p^t_{j|i} · log( p^t_{j|i} / p^s_{j|i} )

Authors' code (``mode="code"``, the default, used by RepDistiller and the DCT paper with weight 30000):

- the self-similarity K(x_i, x_i) = 1 is kept: the rows are normalised over all k including k = i, and
  the diagonal terms enter the sum;
- the divergence is ``mean`` over all B² entries (the paper's double sum divided by B²);
- ε = 1e-7 is added to each vector's norm, x / (‖x‖ + ε), and inside the log, log((p^t + ε)/(p^s + ε));
  entries that come out NaN after the normalisation are set to 0.

``mode="paper"`` drops the diagonal (k ≠ i and j ≠ i as above) and averages the per-sample divergences
Σ_{j≠i} over the B anchors i (the paper writes a plain sum, whose size grows with B; the batch mean keeps
the scale of one sample's KL). ε is used in both modes (``eps``; 0 gives the formulas exactly, with
0·log 0 = 0). A batch of one sample has no pair: ``"paper"`` returns 0 for it, ``"code"`` gives 0 anyway.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, check_choice, require_pooled, upcast

PKTMode = Literal["code", "paper"]


def cosine_kernel(x: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, D) -> (B, B) matrix ½(cos(x_i, x_j) + 1), rows normalised by ``‖x‖ + eps`` (NaN -> 0)."""
    unit = x / (x.norm(dim=1, keepdim=True) + eps)
    unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
    return (unit @ unit.T + 1.0) / 2.0


def conditional_probabilities(kernel: Tensor, mode: PKTMode) -> Tensor:
    """Row-normalised kernel; ``"paper"`` zeroes the diagonal first (k ≠ i)."""
    if mode == "paper":
        kernel = kernel * (1.0 - torch.eye(kernel.shape[0], dtype=kernel.dtype, device=kernel.device))
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_divergence(student: Tensor, teacher: Tensor, eps: float = 1e-7, mode: PKTMode = "code") -> Tensor:
    """KL between the teacher's and the student's pairwise conditional probabilities (module docstring)."""
    if mode == "paper" and student.shape[0] < 2:
        return student.sum() * 0.0
    p_t = conditional_probabilities(cosine_kernel(upcast(teacher), eps), mode)
    p_s = conditional_probabilities(cosine_kernel(upcast(student), eps), mode)
    kl = torch.xlogy(p_t, p_t + eps) - torch.xlogy(p_t, p_s + eps)
    if mode == "code":
        return kl.mean()
    return kl.sum() / kl.shape[0]


class PKTLoss(DistillLoss):
    """PKT on the penultimate (pooled) vectors; returns ``{"pkt": weight · L_PKT}``.

    Args:
        weight: term weight (30000 in RepDistiller's CIFAR script and the DCT paper's
            ``Config/Distillation/config_PKT.yaml``; the DCT repo's 2022 dev branch re-tuned it to 54000).
        eps: ε of the norm and the log (1e-7, as the authors' code).
        mode: ``"code"`` (default, authors' code) or ``"paper"`` (module docstring).
    """

    functional: ClassVar[str] = "pkt_divergence"

    def __init__(self, weight: float = 30000.0, eps: float = 1e-7, mode: PKTMode = "code") -> None:
        super().__init__(weight)
        self.mode = check_choice("PKTLoss", "mode", mode, PKTMode)
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = eps

    def extra_repr(self) -> str:
        return f"weight={self.weight}, eps={self.eps}, mode={self.mode!r}"

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s = require_pooled(student, "PKTLoss", "student").flatten(1)
        t = require_pooled(teacher, "PKTLoss", "teacher").flatten(1)
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"PKTLoss: batch sizes differ, student {s.shape[0]} vs teacher {t.shape[0]}")
        return {"pkt": self.weight * pkt_divergence(s, t, self.eps, self.mode)}
