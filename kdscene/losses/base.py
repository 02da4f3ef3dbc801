"""The contract every kdscene loss follows, and the checks the losses share.

A loss is a plain ``nn.Module``: ``loss(student, teacher, labels)`` takes two
:class:`~kdscene.features.Features` and the labels and returns a dict of named, already-weighted
scalar terms. The training loss is the sum of all terms of all losses.

:class:`DistillLoss` checks its inputs once, before ``forward`` runs: both sides must be ``Features``
(raw tensors raise a ``TypeError`` that says how to wrap them), the teacher must be given when the
class sets ``needs_teacher``, and the teacher's tensors are detached, so that no gradient can reach
the teacher whatever the caller did.

A loss that needs the networks' feature shapes (adapters, dictionaries) takes ``student_taps`` and
``teacher_taps`` (lists of :class:`~kdscene.features.TapInfo`), in that order, as its first two
constructor arguments; :func:`kdscene.module.build_term` passes them by keyword to every constructor
whose signature names them. Losses that use some of the tapped maps choose them with ``select``
(indices into ``Features.maps``; negative allowed; ``None`` = all), and, where student and teacher
taps are chosen separately, ``teacher_select`` (``None`` = the same as ``select``).

The helpers below are the only copies of the small checks the losses share: option values
(:func:`check_choice`), tap indices (:func:`select_taps`), size matching (:func:`pool_to_smaller`),
probed shapes (:func:`check_probed`) and optional ``Features`` fields (:func:`require_logits`,
:func:`require_pooled`).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo

T = TypeVar("T")


class DistillLoss(nn.Module):
    """Base class: holds the term weight, checks the inputs and says whether the teacher is needed.

    Args:
        weight: multiplier applied to every term this loss returns. Callbacks (warm-ups) may
            change ``weight`` during training; ``base_weight`` keeps the configured value.

    Subclasses set ``needs_teacher`` (``False`` for terms of the student alone), where one exists
    ``functional``: the name of the plain function in :mod:`kdscene.losses` that computes the loss
    (or its core) on tensors, which the raw-tensor error points to, and ``cache_fields``: the fields
    of the teacher's ``Features`` the loss reads when a teacher cache (:mod:`kdscene.cache`) can supply
    them all (``"logits"``, ``"energy"``: per-tap channel-energy maps); empty (default) means the loss
    needs the live teacher.
    """

    needs_teacher: ClassVar[bool] = True
    functional: ClassVar[str] = ""
    cache_fields: ClassVar[tuple[str, ...]] = ()

    def live_teacher_reason(self) -> str | None:
        """Why this loss, as configured, needs the live teacher; ``None`` when a teacher cache will do."""
        if not self.needs_teacher or self.cache_fields:
            return None
        return "it reads the teacher's full feature maps or pooled vector, which a cache does not hold"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)
        self.base_weight = float(weight)

    def __call__(
        self, student: Features, teacher: Features | None, labels: Tensor | None
    ) -> dict[str, Tensor]:
        """Check the inputs (module docstring), detach the teacher's tensors, then run ``forward``."""
        check_features(self, student, "student")
        if teacher is None:
            if self.needs_teacher:
                raise ValueError(
                    f"{type(self).__name__} needs the teacher's features (teacher is None): pass the "
                    "teacher's Features (DistillationModule builds a teacher when a term needs one)"
                )
        else:
            check_features(self, teacher, "teacher")
            teacher = detached(teacher)
        return super().__call__(student, teacher, labels)

    def forward(
        self, student: Features, teacher: Features | None, labels: Tensor | None
    ) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


def check_features(owner: DistillLoss, features: Any, who: str) -> None:
    """Raise a ``TypeError`` naming ``owner`` when ``features`` is not a :class:`Features`."""
    if isinstance(features, Features):
        return
    if isinstance(features, Tensor):
        got = f"a Tensor of shape {tuple(features.shape)}"
    else:
        got = type(features).__name__
    functional = ""
    if owner.functional:
        functional = f", or use the functional form kdscene.losses.{owner.functional} on tensors"
    raise TypeError(
        f"{type(owner).__name__} takes the {who}'s kdscene.losses.Features, got {got}: wrap the tensors "
        f"as Features(logits=..., maps=(...,), pooled=...) (FeatureTap returns them){functional}"
    )


def _detach(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach()


def detached(features: Features) -> Features:
    """The same features with every tensor detached (views: no copy)."""
    return dataclasses.replace(
        features,
        logits=_detach(features.logits),
        maps=tuple(m.detach() for m in features.maps),
        pooled=_detach(features.pooled),
        energy=tuple(e.detach() for e in features.energy),
    )


def require_logits(features: Features, owner: str, who: str) -> Tensor:
    """``features.logits``, or a clear error naming ``owner`` when they are ``None``."""
    if features.logits is None:
        raise ValueError(
            f"{owner} needs the {who}'s logits (Features.logits is None): pass logits=... "
            "(FeatureTap fills them from the model's output)"
        )
    return features.logits


def require_pooled(features: Features, owner: str, who: str) -> Tensor:
    """``features.pooled``, or a clear error naming ``owner`` when the penultimate vector was not tapped."""
    if features.pooled is None:
        raise ValueError(
            f"{owner} needs the {who}'s penultimate vector (Features.pooled), which is None: tap the "
            "classifier head (BackboneSpec.head / FeatureTap(head=...), set by every preset)"
        )
    return features.pooled


def check_choice(owner: str, name: str, value: T, choices: Any) -> T:
    """Return ``value`` if it is one of the values of the ``Literal`` type ``choices``, else raise.

    Args:
        owner: the class or function whose option it is (named in the error).
        name: the option's name.
        value: the value given.
        choices: a ``typing.Literal[...]`` type.

    Returns:
        ``value``, unchanged.
    """
    options = get_args(choices)
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{owner}: {name} must be one of {listed}; got {value!r}")
    return value


def as_select(select: int | Sequence[int] | None, owner: str, name: str = "select") -> tuple[int, ...] | None:
    """Normalise a tap selection at construction: ``None``, or a non-empty tuple of ints.

    Indices are checked against the number of maps later, by :func:`select_taps`.
    """
    if select is None:
        return None
    chosen = (select,) if isinstance(select, int) else tuple(select)
    try:
        chosen = tuple(operator.index(i) for i in chosen)
    except TypeError:
        raise TypeError(f"{owner}: {name} takes integer tap indices, got {select!r}") from None
    if not chosen:
        raise ValueError(f"{owner}: {name} is empty: name at least one tap index, or None for every tap")
    return chosen


def select_taps(
    n: int, select: int | Sequence[int] | None, owner: str, name: str = "select"
) -> tuple[int, ...]:
    """Indices into ``n`` tapped maps: validated and made non-negative.

    Args:
        n: number of tapped maps.
        select: indices (negative count from the end), one index, or ``None`` for all ``n``.
        owner: the loss, named in the error.
        name: the option's name, named in the error.

    Returns:
        The indices in ``range(n)``, in the order given.
    """
    chosen = as_select(select, owner, name)
    if chosen is None:
        return tuple(range(n))
    bad = [i for i in chosen if not -n <= i < n]
    if bad:
        raise ValueError(
            f"{owner}: {name} {bad} out of range for {n} tapped maps (indices {-n}..{n - 1}; negative "
            "ones count from the end)"
        )
    return tuple(i % n for i in chosen)


def teacher_choice(select: T, teacher_select: T | None) -> tuple[T, str]:
    """The teacher's tap selection (``teacher_select``, or ``select`` when it is ``None``) and its name.

    The name is what :func:`select_taps` reports when the selection does not fit the teacher.
    """
    if teacher_select is None:
        return select, "select (teacher_select=None uses it for the teacher too)"
    return teacher_select, "teacher_select"


def pool_to_smaller(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger of two maps to the smaller one's (H, W).

    "Larger" is decided on the height: ``s`` is pooled when it is taller than ``t``; otherwise ``t``
    is pooled to ``s``'s (H, W) (also when only the widths differ). Equal sizes are returned as they
    are, which is what pooling to the same size gives: AT, VID and SemCKD share this one rule.

    Returns:
        ``(s, t)`` with equal spatial sizes.
    """
    if s.shape[-2:] == t.shape[-2:]:
        return s, t
    if s.shape[-2] > t.shape[-2]:
        return F.adaptive_avg_pool2d(s, t.shape[-2:]), t
    return s, F.adaptive_avg_pool2d(t, s.shape[-2:])


def check_probed(x: Tensor, info: TapInfo, owner: str, who: str, size: bool = True) -> None:
    """Raise a clear error when a map does not have the shape probed at construction.

    Args:
        x: the map, expected (B, ``info.channels``, ``*info.size``).
        info: the probed tap.
        owner: the loss, named in the error.
        who: which map it is (``"student"``, ``"teacher level 2"``), named in the error.
        size: also check H×W (``False`` for losses whose adapters work at any size).
    """
    if x.dim() == 4 and x.shape[1] == info.channels and (not size or tuple(x.shape[-2:]) == tuple(info.size)):
        return
    hw = f"{info.size[0]}, {info.size[1]}" if size else "H, W"
    raise ValueError(
        f"{owner}: the {who} map {info.name!r} was probed as (B, {info.channels}, {hw}) but is "
        f"{tuple(x.shape)}; the loss is built for the shapes probed at construction"
    )


def tap_count(features: Features) -> int:
    """How many taps ``features`` carries: its maps, or its energy maps when it has no maps (a cache)."""
    return len(features.maps) or len(features.energy)


def check_same_count(student: Features, teacher: Features, what: str) -> None:
    """Raise a clear error when student and teacher tap a different number of maps."""
    if tap_count(student) != tap_count(teacher):
        raise ValueError(
            f"{what}: the student taps {tap_count(student)} maps {list(student.names)} but the "
            f"teacher taps {tap_count(teacher)} {list(teacher.names)}; they must pair up one to one"
        )


def upcast(x: Tensor) -> Tensor:
    """Half-precision tensors (autocast) to float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
