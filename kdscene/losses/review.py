"""Knowledge review (ReviewKD): attention-based fusion (ABF) and the hierarchical context loss (HCL).

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021, arXiv 2104.09044);
authors' code ``dvlab-research/ReviewKD`` (``ImageNet/models/reviewkd.py``, ``CIFAR-100/model/reviewkd.py``)
and its port ``megvii-research/mdistiller`` (``mdistiller/distillers/ReviewKD.py``).

Levels, deepest first: the student's pooled vector as a 1×1 map, then its tapped maps from the deepest
to the shallowest. Level l (the paper's residual learning framework with ABF):

    x_l = BN(Conv1×1(F_s^l))                                   (to the mid width, no ReLU)
    a, b = σ(Conv1×1([x_l, up(r_{l−1})]))                      (two spatial attention maps)
    r_l = a·x_l + b·up(r_{l−1})                                (deepest level: r_l = x_l)
    y_l = BN(Conv3×3(resize(r_l, size of F_t^l)))              (output, compared with F_t^l)

``up`` is nearest upsampling to F_s^l's size, ``resize`` nearest interpolation (only when sizes differ).
HCL, the paper's hierarchical context loss, compares each output with the teacher map on a pyramid
of average-pooled grids::

    HCL(y, t) = [ MSE(y, t) + Σ_{k=1..} 2^{-k} MSE(P_{n_k}(y), P_{n_k}(t)) ] / (1 + Σ_k 2^{-k})

with P_n adaptive average pooling to n×n and n_k running over 4, 2, 1, skipping every n ≥ the map's
height (so a 7×7 map uses 4, 2, 1; a 2×2 map only 1; a 1×1 map none). The loss is
weight · Σ_l HCL(y_l, t_l); MSE is the mean over all elements.

As in the authors' code (both repositories agree; the paper's text was not checked line by line):
- The teacher targets are the teacher's *pre-activation* stage outputs (before the last ReLU) and its
  pooled vector. The loss does not know how maps were tapped: tap ``"layer1:pre"`` ... in the teacher
  (``conf/distill/review.yaml`` sets ``teacher_layers``; see :mod:`kdscene.features`). mdistiller's
  ImageNet config also feeds the student's pre-activations (``STU_PREACT: True``), as does the dvlab
  ImageNet code; the same config sets ``student_layers``.
- One mid width for all levels: ``min(512, C)`` with C the deepest student channels (CIFAR code; the
  ImageNet code writes 512 for ResNet-18 and 256 for MobileNet). Option ``mid_channels``.
- Warm-up ``min(epoch / W, 1)`` of the weight (W = 20 on CIFAR; mdistiller's ImageNet config 1; dvlab's
  ImageNet code none) lives outside the loss: :class:`kdscene.callbacks.LossWeightWarmup`. dvlab's CIFAR
  code counts epochs from 0 (first epoch weight 0), mdistiller and kdscene from 1.
- Conv init: Kaiming-uniform with a = 1 for both ABF convolutions, PyTorch defaults elsewhere.

Pooled level (option ``pooled``): ``"loss"`` (default, the authors') supervises it with the teacher's
pooled vector; ``"residual"`` keeps it only as the residual source of the next level (no output, no
loss); ``"off"`` drops it. When ``Features.pooled`` is ``None`` it is derived from the deepest map by
global average pooling; the channel counts default to the deepest tap's (true for every kdscene preset)
and can be set with ``student_pooled_channels`` / ``teacher_pooled_channels``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import DistillLoss, check_choice, check_probed, check_same_count, upcast

PooledMode = Literal["loss", "residual", "off"]
HCL_GRIDS = (4, 2, 1)


LevelBlock = Callable[[Tensor, Tensor | None], tuple[Tensor | None, Tensor]]
Distance = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ReviewLevel:
    """One level of a review pyramid (deepest first).

    Args:
        student: the student map entering the level (channels, H×W as probed).
        teacher: the target map (its channels are the level's output width).
        supervised: whether the level has an output compared with the teacher.
    """

    student: TapInfo
    teacher: TapInfo
    supervised: bool = True


def _pooled_tap(taps: Sequence[TapInfo], channels: int | None) -> TapInfo:
    """The pooled vector as a 1×1 tap; its channels default to the deepest tap's."""
    deepest = taps[-1]
    return TapInfo("pooled", channels or deepest.channels, deepest.stride * deepest.size[0], (1, 1))


def review_levels(
    student_taps: Sequence[TapInfo],
    teacher_taps: Sequence[TapInfo],
    pooled: PooledMode = "loss",
    student_pooled_channels: int | None = None,
    teacher_pooled_channels: int | None = None,
    owner: str = "review_levels",
) -> list[ReviewLevel]:
    """The levels, deepest first: the pooled 1×1 level (unless ``pooled="off"``), then the taps reversed."""
    check_choice(owner, "pooled", pooled, PooledMode)
    if not student_taps or len(student_taps) != len(teacher_taps):
        raise ValueError(
            f"{owner}: the student taps {[t.name for t in student_taps]} and the teacher taps "
            f"{[t.name for t in teacher_taps]} must pair up one to one (and not be empty)"
        )
    levels = [ReviewLevel(s, t) for s, t in zip(reversed(student_taps), reversed(teacher_taps))]
    if pooled != "off":
        s_tap = _pooled_tap(student_taps, student_pooled_channels)
        t_tap = _pooled_tap(teacher_taps, teacher_pooled_channels)
        levels.insert(0, ReviewLevel(s_tap, t_tap, supervised=pooled == "loss"))
    return levels


def pooled_map(feats: Features) -> Tensor:
    """The penultimate vector as a (B, D, 1, 1) map; global average of the deepest map if not tapped."""
    if feats.pooled is not None:
        return feats.pooled.reshape(*feats.pooled.shape[:2], 1, 1)
    return F.adaptive_avg_pool2d(feats.maps[-1], 1)


def review_inputs(feats: Features, pooled: PooledMode) -> list[Tensor]:
    """The maps entering the levels, deepest first: the pooled 1×1 map (unless ``"off"``), then the taps."""
    maps = list(reversed(feats.maps))
    if pooled != "off":
        maps.insert(0, pooled_map(feats))
    return maps


def review_fuse(
    levels: Sequence[ReviewLevel], blocks: Iterable[LevelBlock], inputs: Sequence[Tensor], owner: str
) -> list[Tensor | None]:
    """Walk the pyramid deepest first: each level's block fuses its map with the deeper level's residual.

    Args:
        levels: the levels (:func:`review_levels`).
        blocks: one per level, called ``block(x, residual) -> (output or None, next residual)``
            (:class:`ABF`, :class:`~kdscene.losses.fam.FAMFusion`).
        inputs: the student's maps entering the levels (:func:`review_inputs`).
        owner: the loss, named in shape errors.

    Returns:
        Every level's output, deepest first (``None`` for an unsupervised level).
    """
    outputs: list[Tensor | None] = []
    residual = None
    for i, (x, level, block) in enumerate(zip(inputs, levels, blocks)):
        check_probed(x, level.student, owner, f"student level {i}")
        out, residual = block(x, residual)
        outputs.append(out)
    return outputs


def level_losses(
    outputs: Sequence[Tensor | None],
    teacher_inputs: Sequence[Tensor],
    levels: Sequence[ReviewLevel],
    distance: Distance,
    owner: str,
) -> Tensor:
    """Σ over the supervised levels of ``distance(output, teacher map)``, both in float32 or better.

    Args:
        outputs: :func:`review_fuse`'s outputs.
        teacher_inputs: the teacher's maps of the levels (:func:`review_inputs`).
        levels: the levels.
        distance: the per-level loss (:func:`hcl_loss`, ``F.mse_loss``).
        owner: the loss, named in shape errors.
    """
    terms = []
    for i, (out, t, level) in enumerate(zip(outputs, teacher_inputs, levels)):
        if out is None:
            continue
        check_probed(t, level.teacher, owner, f"teacher level {i}")
        terms.append(distance(upcast(out), upcast(t)))
    return torch.stack(terms).sum()


def _conv_bn(cin: int, cout: int, kernel: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


class ABF(nn.Module):
    """Attention-based fusion of one level (paper Fig. 3b).

    Args:
        in_channels: student channels of the level.
        mid_channels: width of the fused (residual) feature.
        out_channels: output channels (the teacher's); ``None`` builds no output (a level that only
            passes its residual on, so that no parameter is left without a gradient under DDP).
        fuse: whether a deeper level's residual is fused in (every level but the deepest).
        out_size: (H, W) the fused map is resized to before the output convolution when ``forward``
            is given none (the teacher's size of the level); ``None`` keeps the input's size.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int | None,
        fuse: bool,
        out_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.out_size = None if out_size is None else tuple(out_size)
        self.conv1 = _conv_bn(in_channels, mid_channels, 1)
        self.conv2 = _conv_bn(mid_channels, out_channels, 3) if out_channels else None
        self.att_conv = nn.Conv2d(2 * mid_channels, 2, 1) if fuse else None

    def forward(
        self, x: Tensor, residual: Tensor | None = None, out_size: Sequence[int] | None = None
    ) -> tuple[Tensor | None, Tensor]:
        """Return ``(output, fused)``; ``fused`` is the next level's residual."""
        out_size = self.out_size if out_size is None else out_size
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("ABF: this level fuses a residual from the deeper level; none was given")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = torch.sigmoid(self.att_conv(torch.cat([x, residual], dim=1)))
            x = x * att[:, :1] + residual * att[:, 1:]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return (self.conv2(x) if self.conv2 is not None else None), x


def hcl_loss(student: Tensor, teacher: Tensor, grids: Sequence[int] = HCL_GRIDS) -> Tensor:
    """Hierarchical context loss of one level (module docstring), in float32 or better."""
    s, t = upcast(student), upcast(teacher)
    loss, weight, total = F.mse_loss(s, t), 1.0, 1.0
    for n in grids:
        if n >= s.shape[-2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(s, n), F.adaptive_avg_pool2d(t, n))
        total += weight
    return loss / total


class ReviewKDLoss(DistillLoss):
    """ReviewKD: ABF fusion of the student's levels, HCL against the teacher's maps.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps, paired one to one with the student's.
        weight: loss weight (1.0 on ImageNet R34→R18; 0.6–8 on CIFAR pairs).
        mid_channels: ABF width; ``None`` = ``min(512, deepest student channels)`` (authors' code).
        pooled: ``"loss"`` (default), ``"residual"`` or ``"off"`` (module docstring).
        student_pooled_channels: width of ``Features.pooled``; ``None`` = deepest student tap's.
        teacher_pooled_channels: same for the teacher.
    """

    functional: ClassVar[str] = "hcl_loss"

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        weight: float = 1.0,
        mid_channels: int | None = None,
        pooled: PooledMode = "loss",
        student_pooled_channels: int | None = None,
        teacher_pooled_channels: int | None = None,
    ) -> None:
        super().__init__(weight)
        self.pooled = pooled
        self.levels = review_levels(
            student_taps,
            teacher_taps,
            pooled,
            student_pooled_channels,
            teacher_pooled_channels,
            "ReviewKDLoss",
        )
        mid = mid_channels or min(512, self.levels[0].student.channels)
        self.abfs = nn.ModuleList(self._abf(lv, mid, fuse=i > 0) for i, lv in enumerate(self.levels))

    @staticmethod
    def _abf(level: ReviewLevel, mid: int, fuse: bool) -> ABF:
        out_channels = level.teacher.channels if level.supervised else None
        return ABF(level.student.channels, mid, out_channels, fuse, out_size=level.teacher.size)

    def fuse(self, student: Features) -> list[Tensor | None]:
        """The ABF output of every level, deepest first (``None`` for an unsupervised level)."""
        return review_fuse(self.levels, self.abfs, review_inputs(student, self.pooled), "ReviewKDLoss")

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "ReviewKDLoss")
        teacher_inputs = review_inputs(teacher, self.pooled)
        total = level_losses(self.fuse(student), teacher_inputs, self.levels, hcl_loss, "ReviewKDLoss")
        return {"review": self.weight * total}
