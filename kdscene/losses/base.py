"""The contract every kdscene loss follows.

A loss is a plain ``nn.Module``: ``forward(student, teacher, labels)`` takes two
:class:`~kdscene.features.Features` and the labels and returns a dict of named, already-weighted
scalar terms. The training loss is the sum of all terms of all losses. A loss that needs the
networks' feature shapes (adapters, dictionaries) takes ``student_taps`` / ``teacher_taps``
(lists of :class:`~kdscene.features.TapInfo`) as constructor arguments.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from kdscene.features import Features


class DistillLoss(nn.Module):
    """Base class: holds the term weight and says whether the teacher is needed.

    Args:
        weight: multiplier applied to every term this loss returns. Callbacks (warm-ups) may
            change ``weight`` during training; ``base_weight`` keeps the configured value.
    """

    needs_teacher: ClassVar[bool] = True

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)
        self.base_weight = float(weight)

    def forward(
        self, student: Features, teacher: Features | None, labels: Tensor
    ) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


def check_same_count(student: Features, teacher: Features, what: str) -> None:
    """Raise a clear error when student and teacher tap a different number of maps."""
    if len(student.maps) != len(teacher.maps):
        raise ValueError(
            f"{what}: the student taps {len(student.maps)} maps {list(student.names)} but the "
            f"teacher taps {len(teacher.maps)} {list(teacher.names)}; they must pair up one to one"
        )


def upcast(x: Tensor) -> Tensor:
    """Half-precision tensors (autocast) to float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
