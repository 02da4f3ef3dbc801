"""Cross-layer distillation with semantic calibration (SemCKD).

Chen, Mei, Zhang, Wang, Wang, Feng, Chen, "Cross-Layer Distillation with Semantic Calibration" (AAAI 2021,
arXiv 2012.03236). Authors' code ``DefangChen/SemCKD`` (``distiller_zoo/SemCKD.py``, ``models/util.py``
``SelfA``, ``AAEmbed``, ``MLPEmbed``), copied unchanged into the DCT paper's repository
(``Distillation Zoo/SemCKD.py``, ``selfAT.py``) as its "CKD" baseline. The paper's text was not read line
by line; the formulas below are the authors' code, which the paper's method section describes.

Every student layer s_i (i = 1..n_s) is compared with every teacher layer t_j (j = 1..n_t), and a learned,
per-sample attention decides how much each pair counts. For a batch of B samples:

1. Layer descriptors from the batch similarity matrices: A_l = R(F_l) R(F_l)ᵀ ∈ R^{B×B}, with R(F) the
   (B, C·H·W) flattening. Row b of A_l describes sample b in layer l.
2. Query and key: q_b^i = MLP_Q^i(A_{s_i}[b]), k_b^j = MLP_K^j(A_{t_j}[b]), each MLP
   Linear(B, 2d) → ReLU → Linear(2d, d) → L2 normalisation, d = B // factor (factor 4). (The code divides
   by the norm; kdscene's ``F.normalize`` floors it at 1e-12, which matters only for a zero vector.)
3. Attention over the teacher layers: α_b^{ij} = softmax_j( q_b^i · k_b^j ) (no temperature).
4. Projection of each student layer to each teacher layer, P_ij: 1×1 conv (C_s → M) → BN → ReLU →
   3×3 conv (M → M) → BN → ReLU → 1×1 conv (M → C_t), no biases, M = 2·C_t (option ``mid_channels``).
   Sizes: if s_i is larger than t_j (compared on the height) it is adaptive-average-pooled to t_j's size
   before P_ij; otherwise t_j is pooled to s_i's size (a no-op when equal). The code pools to a square
   (H, H); kdscene to (H, W).
5. Loss, with MSE the mean over C, H, W of one sample::

       L_SemCKD = 1/(B · n_s) Σ_b Σ_i Σ_j α_b^{ij} · MSE( P_ij(s_i)_b, t_j,b )

   weighted by β (400 in SemCKD's CIFAR script and the DCT paper's ``config_CKD.yaml``).

Gradients reach the student through the projections and through the queries (A_{s_i}); the keys' MLPs
learn through α only. MLP_Q/K, P_ij and their BatchNorms are owned by the loss and trained with the student.

Batch size. MLP_Q/K take a row of A, of length B, so the loss is built for one batch size
(``batch_size``: the per-process training batch, ``${data.batch_size}`` in ``conf/distill/semckd.yaml``).
The authors skip the whole training step for a batch of another size (the last, smaller one:
``if input.shape[0] < batch_size: continue``). A loss cannot skip a step, so a batch of another size gives
a zero term here (tied to the loss's parameters so that DDP sees them used); the step still trains on the
other terms. The same holds in validation, where an ``eval_batch_size`` other than ``batch_size`` zeroes
``val/loss_semckd``.

Layers (``select`` for the student, ``teacher_select`` for the teacher): the authors and the DCT
repository distil ``feat[1:-1]``; for the DCT repository's (layer1..layer4, pooled) that is layer2..layer4,
i.e. indices [1, 2, 3] of kdscene's four stage taps (the configs write ``select: [-3, -2, -1]``, the same
taps, and leave ``teacher_select`` null). ``select=None`` (default) uses all student taps;
``teacher_select=None`` (default) uses the same indices as ``select`` (all teacher taps when ``select`` is
``None``). Student and teacher may use different numbers of layers.

Size. The n_s·n_t projections are large when the teacher is wide: M = 2·C_t makes P_ij's 3×3 conv
(2·C_t)²·9 weights, about 151 M for a ResNet-50 layer4 target (C_t = 2048), once per student layer. The
authors' configuration does this; ``mid_channels`` bounds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import (
    DistillLoss,
    check_probed,
    pool_to_smaller,
    select_taps,
    teacher_choice,
    upcast,
)


class SimilarityEmbed(nn.Module):
    """MLP_Q / MLP_K: Linear(B, 2d) → ReLU → Linear(2d, d) → L2-normalised rows.

    Args:
        batch_size: B, the length of a similarity-matrix row.
        dim: d, the query/key width.
    """

    def __init__(self, batch_size: int, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(batch_size, 2 * dim)
        self.linear2 = nn.Linear(2 * dim, dim)

    def forward(self, sim: Tensor) -> Tensor:
        return F.normalize(self.linear2(F.relu(self.linear1(sim))), dim=1)


def semckd_projector(in_channels: int, out_channels: int, mid_channels: int) -> nn.Sequential:
    """P_ij: 1×1 conv → BN → ReLU → 3×3 conv → BN → ReLU → 1×1 conv, without biases."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(),
        nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(),
        nn.Conv2d(mid_channels, out_channels, 1, bias=False),
    )


def batch_similarity(fmap: Tensor) -> Tensor:
    """A = R(F) R(F)ᵀ, (B, C, H, W) -> (B, B)."""
    flat = upcast(fmap).flatten(1)
    return flat @ flat.T


class SemCKDLoss(DistillLoss):
    """SemCKD over all (student layer, teacher layer) pairs; returns ``{"semckd": weight · L_SemCKD}``.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps.
        batch_size: the batch size the query/key MLPs are built for (module docstring).
        weight: β (400 in the authors' and the DCT paper's configs).
        select: indices of the student taps used (negative allowed); ``None`` = all.
        teacher_select: indices of the teacher taps used; ``None`` = the same as ``select``.
        factor: d = batch_size // factor (4).
        mid_channels: width M of every projection; ``None`` = 2 × the target's channels (authors').
    """

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        batch_size: int,
        weight: float = 400.0,
        select: Sequence[int] | None = None,
        teacher_select: Sequence[int] | None = None,
        factor: int = 4,
        mid_channels: int | None = None,
    ) -> None:
        super().__init__(weight)
        if batch_size // factor < 1:
            raise ValueError(f"SemCKDLoss: batch_size // factor must be >= 1, got {batch_size} // {factor}")
        self.batch_size = int(batch_size)
        self.select = select_taps(len(student_taps), select, "SemCKDLoss")
        chosen, name = teacher_choice(select, teacher_select)
        self.teacher_select = select_taps(len(teacher_taps), chosen, "SemCKDLoss", name)
        self.student_taps = [student_taps[i] for i in self.select]
        self.teacher_taps = [teacher_taps[j] for j in self.teacher_select]
        dim = batch_size // factor
        self.queries = nn.ModuleList(SimilarityEmbed(batch_size, dim) for _ in self.select)
        self.keys = nn.ModuleList(SimilarityEmbed(batch_size, dim) for _ in self.teacher_select)
        self.projectors = nn.ModuleList(
            nn.ModuleList(
                semckd_projector(s.channels, t.channels, mid_channels or 2 * t.channels)
                for t in self.teacher_taps
            )
            for s in self.student_taps
        )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, batch_size={self.batch_size}, select={self.select}, "
            f"teacher_select={self.teacher_select}"
        )

    def attention(self, s_maps: Sequence[Tensor], t_maps: Sequence[Tensor]) -> Tensor:
        """α, shape (B, n_s, n_t): softmax over the teacher layers of the query·key products."""
        q = torch.stack([mlp(batch_similarity(f)) for mlp, f in zip(self.queries, s_maps)], dim=1)
        k = torch.stack([mlp(batch_similarity(f)) for mlp, f in zip(self.keys, t_maps)], dim=1)
        return torch.softmax(q @ k.transpose(1, 2), dim=-1)

    def pair_losses(self, s_maps: Sequence[Tensor], t_maps: Sequence[Tensor]) -> Tensor:
        """Per-sample MSE of every projected pair, shape (B, n_s, n_t)."""
        rows = []
        for s, projs in zip(s_maps, self.projectors):
            row = []
            for t, proj in zip(t_maps, projs):
                s_in, target = pool_to_smaller(s, t)
                diff = upcast(proj(s_in)) - upcast(target)
                row.append(diff.pow(2).flatten(1).mean(dim=1))
            rows.append(torch.stack(row, dim=1))
        return torch.stack(rows, dim=1)

    @staticmethod
    def _maps(feats: Features, select: tuple[int, ...], taps: list[TapInfo], who: str) -> list[Tensor]:
        maps = [feats.maps[i] for i in select]
        for m, tap in zip(maps, taps):
            check_probed(m, tap, "SemCKDLoss", who, size=False)  # the projections work at any size
        return maps

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s_maps = self._maps(student, self.select, self.student_taps, "student")
        t_maps = self._maps(teacher, self.teacher_select, self.teacher_taps, "teacher")
        if s_maps[0].shape[0] != self.batch_size:
            # the authors skip such a batch; keep every parameter in the graph for DDP
            return {"semckd": sum(p.sum() for p in self.parameters()) * 0.0}
        alpha = self.attention(s_maps, t_maps)
        loss = (alpha * self.pair_losses(s_maps, t_maps)).sum() / (self.batch_size * len(s_maps))
        return {"semckd": self.weight * loss}
