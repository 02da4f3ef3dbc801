"""Which distill terms a teacher cache can feed, and the refusal of those that need the live teacher."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

LossFactory = Callable[..., nn.Module]


def _needs_teacher(term: LossFactory | nn.Module) -> bool:
    return bool(getattr(getattr(term, "func", term), "needs_teacher", True))


def live_teacher_reason(term: LossFactory | nn.Module) -> str | None:
    """Why a term (a built loss or a factory) needs the live teacher; ``None`` when a teacher cache will do.

    A factory is judged by its class (``needs_teacher``, ``cache_fields``), a built loss by its
    ``live_teacher_reason()`` (``ATLoss`` with p != 2 needs the live teacher).

    Args:
        term: a loss, or a factory of one (a class or ``functools.partial``).

    Returns:
        ``None``, or the reason in words.
    """
    if not _needs_teacher(term):
        return None
    if isinstance(term, nn.Module):
        reason = getattr(term, "live_teacher_reason", None)
        return reason() if reason else "it declares no cache_fields (not a kdscene DistillLoss)"
    if getattr(getattr(term, "func", term), "cache_fields", ()):
        return None
    return "it reads the teacher's full feature maps or pooled vector, which a cache does not hold"


def check_cacheable(terms: Mapping[str, LossFactory | nn.Module]) -> None:
    """Raise a ``ValueError`` naming every term that needs the live teacher (the run has a teacher cache)."""
    refused = {key: reason for key, term in terms.items() if (reason := live_teacher_reason(term))}
    if refused:
        named = "; ".join(f"{key!r}: {reason}" for key, reason in refused.items())
        raise ValueError(
            "teacher_cache replaces the teacher by its recorded logits and channel-energy maps, but these "
            f"distill terms need the live teacher: {named}. Train them without teacher_cache"
        )
