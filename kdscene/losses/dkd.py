"""Decoupled knowledge distillation (DKD).

Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022, arXiv 2203.08679); authors'
code ``megvii-research/mdistiller`` (``mdistiller/distillers/DKD.py``, ``dkd_loss``).

For a sample with label t and logits z, p_i = softmax(z)_i. The paper (Sec. 3.1) splits the prediction
into the binary target / non-target probabilities b = [p_t, p_\\t] with p_\\t = 1 − p_t, and the
distribution among the non-target classes p̂_i = exp(z_i) / Σ_{j≠t} exp(z_j) (i ≠ t). Then Hinton's KD
decomposes as::

    KD    = KL(b^T ‖ b^S) + (1 − p_t^T) · KL(p̂^T ‖ p̂^S) = TCKD + (1 − p_t^T) · NCKD

and DKD (Sec. 3.2) drops the coupling factor (1 − p_t^T) and weights the two parts freely::

    DKD   = α · TCKD + β · NCKD

What the authors' code computes (this module follows it):

- both distributions are softened with a temperature T (p = softmax(z / T)) and both KL terms are
  multiplied by T², as in Hinton's KD (the paper writes the formulas at T = 1). ``temperature``
  defaults to 4 (mdistiller's default and CIFAR-100 configs); its ImageNet configs use T = 1;
- each KL is summed over its classes and divided by the batch size (``batchmean``);
- NCKD is a softmax over *all* classes of z / T − 1000 · onehot(t): the target class gets
  probability ≈ e^-1000 = 0, which is p̂ over the other classes (the "gt-mask trick"; it is exact
  whenever the logits span less than 1000, and the target entry contributes 0 · log 0 = 0);
- TCKD: the code sums the softmax probabilities under the target / non-target masks and takes their
  log; here log p_t and log p_\\t come from log-sum-exps, the same value without log(0) = −inf when a
  probability underflows;
- the warm-up ``min(epoch / 20, 1)`` (epochs from 1, ``DKD.WARMUP`` 20 on CIFAR, 1 on ImageNet) is not
  part of this loss: it is the ``kdscene.callbacks.LossWeightWarmup`` callback in ``conf/distill/dkd.yaml``.

Hyper-parameters: α = 1 everywhere (``DKD.ALPHA``); β = 8 (``DKD.BETA`` default, CIFAR-100
res32x4→res8x4 and others; 6 for VGG/WRN pairs, 2 for res56→res20 and res110→res32), ImageNet
R34→R18: β = 0.5, T = 1, warm-up 1; R50→MobileNetV1: β = 2, T = 1, warm-up 1. CE weight 1.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, require_logits, upcast

GT_MASK_OFFSET = 1000.0


def _binary_log_probs(scaled: Tensor, gt: Tensor) -> Tensor:
    """(B, K) logits / T and a (B, K) bool one-hot -> (B, 2) log [p_t, p_\\t]."""
    log_z = torch.logsumexp(scaled, dim=1, keepdim=True)
    target = scaled.masked_fill(~gt, float("-inf"))
    others = scaled.masked_fill(gt, float("-inf"))
    log_target = torch.logsumexp(target, dim=1, keepdim=True)
    log_others = torch.logsumexp(others, dim=1, keepdim=True)
    return torch.cat([log_target, log_others], dim=1) - log_z


def _batch_kl(log_p_teacher: Tensor, log_p_student: Tensor) -> Tensor:
    """Σ_classes p_t (log p_t − log p_s), averaged over the batch (0 · log 0 = 0)."""
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """T²-scaled (TCKD, NCKD), each summed over classes and averaged over the batch."""
    s = upcast(student_logits) / temperature
    t = upcast(teacher_logits) / temperature
    gt = F.one_hot(labels.reshape(-1).long(), s.shape[1]).bool()
    tckd = _batch_kl(_binary_log_probs(t, gt), _binary_log_probs(s, gt))
    offset = GT_MASK_OFFSET * gt.to(s.dtype)
    log_p_hat_t = F.log_softmax(t - offset, dim=1)
    log_p_hat_s = F.log_softmax(s - offset, dim=1)
    # the target entry: exp(-1000) underflows to exactly 0 in the teacher, so it adds 0 · (log 0 − x)
    nckd = F.kl_div(log_p_hat_s, log_p_hat_t.exp(), reduction="batchmean")
    return tckd * temperature**2, nckd * temperature**2


class DKDLoss(DistillLoss):
    """DKD on the logits; returns ``{"dkd": weight · (α · TCKD + β · NCKD)}``.

    Args:
        weight: term weight (1; the warm-up callback scales it).
        alpha: TCKD weight α (1.0, ``DKD.ALPHA``).
        beta: NCKD weight β (8.0, ``DKD.BETA`` default and CIFAR-100; ImageNet R34→R18 uses 0.5).
        temperature: softmax temperature T (4.0, mdistiller default/CIFAR-100; ImageNet configs 1.0).
    """

    functional: ClassVar[str] = "dkd_parts"
    cache_fields: ClassVar[tuple[str, ...]] = ("logits",)  # a teacher cache holds the logits

    def __init__(
        self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0
    ) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"weight={self.weight}, alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s, t = require_logits(student, "DKDLoss", "student"), require_logits(teacher, "DKDLoss", "teacher")
        if s.shape != t.shape:
            raise ValueError(
                f"DKDLoss: student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ "
                "(both networks must predict the same classes for the same batch)"
            )
        if labels is None or labels.reshape(-1).shape[0] != s.shape[0]:
            got = None if labels is None else tuple(labels.shape)
            raise ValueError(f"DKDLoss needs one label per sample: logits {tuple(s.shape)}, labels {got}")
        tckd, nckd = dkd_parts(s, t, labels, self.temperature)
        return {"dkd": self.weight * (self.alpha * tckd + self.beta * nckd)}
