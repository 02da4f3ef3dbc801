"""Attention transfer (AT).

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017, arXiv 1612.03928).

Attention map of a feature F ∈ R^{C×H×W} (paper Eq. 1 with F_sum^p):

    Q = vec( Σ_c |F_c|^p )

Paper, Eq. 2, with β the weight::

    L_AT = (β/2) · Σ_j ‖ Q_S^j / ‖Q_S^j‖₂ − Q_T^j / ‖Q_T^j‖₂ ‖_p        (p = 2)

averaged over the batch: a *non-squared* L2 distance between the L2-normalised maps.

Authors' code (``szagoruyko/attention-transfer``, ``utils.at_loss``), copied by RepDistiller and used
by the DCT paper's AT baseline: the map is the channel *mean* of F^p (the scale cancels after
normalisation), and the distance is the *squared* difference averaged over batch and positions,
``(at(x) − at(y)).pow(2).mean()``, summed over layers and multiplied by β (1000 in RepDistiller and
the DCT repo). RepDistiller also adaptive-average-pools the larger map when the spatial sizes differ.

``mode="code"`` (default) reproduces the code; ``mode="paper"`` implements Eq. 2 including β/2 and
requires equal spatial sizes. Both use |F|^p, identical to F^p for the default p = 2. The sum over j runs
over every tapped pair (``select=None``, default; the code's four stage outputs) or over the pairs
``select`` names (indices into ``Features.maps``).

From a teacher cache (:mod:`kdscene.cache`) the teacher's ``Features`` carry, instead of maps, each
tap's channel energy (1/C)·Σ_c F_c², which for p = 2 *is* the attention map before normalisation: the
loss is the same. Other p, or (``mode="code"``) a teacher map larger than the student's, which the
code pools before squaring, need the live teacher and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import (
    DistillLoss,
    as_select,
    check_choice,
    check_same_count,
    pool_to_smaller,
    select_taps,
    upcast,
)
from kdscene.losses.dct import channel_energy

ATMode = Literal["code", "paper"]


def attention_map(fmap: Tensor, p: float = 2.0) -> Tensor:
    """L2-normalised, flattened channel mean of |F|^p; (B, C, H, W) -> (B, H·W).

    For p = 2 the channel mean is DCT's fused :func:`~kdscene.losses.dct.channel_energy` (one read of F,
    no full-size temporaries, a one-multiplication backward): the same values up to float32 summation
    order, several times faster on channels-last maps.
    """
    am = channel_energy(fmap) if p == 2 else upcast(fmap).abs().pow(p).mean(dim=1)
    return F.normalize(am.flatten(1), dim=1)


def _pool_pair(s: Tensor, t: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """:func:`pool_to_smaller` where ``t`` may be a cached energy map (B, H, W): only ``s`` can be pooled."""
    if t.dim() == 4 or s.shape[-2:] == t.shape[-2:]:
        return pool_to_smaller(s, t)
    if s.shape[-2] > t.shape[-2]:
        return F.adaptive_avg_pool2d(s, t.shape[-2:]), t
    raise ValueError(
        f"ATLoss: the cached teacher energy of {name!r} is {tuple(t.shape[-2:])}, larger than the student's "
        f"map {tuple(s.shape[-2:])}; the code pools the teacher's features before squaring, which needs the "
        "live teacher (train without teacher_cache)"
    )


class ATLoss(DistillLoss):
    """Attention transfer over all tapped maps.

    Args:
        weight: β (1000 in RepDistiller and the DCT paper's AT baseline).
        p: exponent of the attention map (2 in the paper's experiments).
        mode: ``"code"`` (default; squared difference averaged over batch and positions, pooling
            on size mismatch) or ``"paper"`` (Eq. 2: (1/2)·batch mean of the L2 distance).
        select: indices of the tapped pairs to use (negative allowed); ``None`` (default) = all.
    """

    functional: ClassVar[str] = "attention_map"
    cache_fields: ClassVar[tuple[str, ...]] = ("energy",)

    def __init__(
        self,
        weight: float = 1000.0,
        p: float = 2.0,
        mode: ATMode = "code",
        select: Sequence[int] | None = None,
    ) -> None:
        super().__init__(weight)
        self.p = p
        self.mode = check_choice("ATLoss", "mode", mode, ATMode)
        self.select = as_select(select, "ATLoss")

    def extra_repr(self) -> str:
        return f"weight={self.weight}, p={self.p}, mode={self.mode!r}, select={self.select}"

    def live_teacher_reason(self) -> str | None:
        """A teacher cache holds the channel energy, i.e. the attention map for p = 2 only."""
        if self.p != 2:
            return f"ATLoss(p={self.p}) needs the channel mean of |F|^p; a cache holds it for p = 2 only"
        return None

    def _teacher_attention(self, t: Tensor) -> Tensor:
        """The teacher's normalised attention map from its map (B, C, H, W) or cached energy (B, H, W)."""
        if t.dim() == 4:
            return attention_map(t, self.p)
        reason = self.live_teacher_reason()
        if reason:
            raise ValueError(reason)
        return F.normalize(upcast(t).flatten(1), dim=1)

    def _one_scale(self, s: Tensor, t: Tensor, name: str) -> Tensor:
        if self.mode == "code":
            s, t = _pool_pair(s, t, name)
            return (attention_map(s, self.p) - self._teacher_attention(t)).pow(2).mean()
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"ATLoss(mode='paper'): student map {name!r} is {tuple(s.shape[-2:])} but the "
                f"teacher's is {tuple(t.shape[-2:])}; the paper's loss needs equal sizes"
            )
        diff = attention_map(s, self.p) - self._teacher_attention(t)
        return 0.5 * diff.norm(dim=1).mean()

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "ATLoss")
        targets = teacher.maps or teacher.energy  # maps from the live teacher, energy from a cache
        total = sum(
            self._one_scale(student.maps[i], targets[i], student.names[i])
            for i in select_taps(len(student.maps), self.select, "ATLoss")
        )
        return {"at": self.weight * total}
