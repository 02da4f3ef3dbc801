"""Non-finite values caught and named: a diverging run stops before anything is saved as best.

A NaN or infinite loss term otherwise trains on silently (NaN gradients make NaN weights), the
checkpoint callback saves the NaN weights as "best" and evaluation reports a plausible accuracy,
because ``argmax`` of a NaN row is class 0. :func:`check_terms` runs on every training step (one
device-to-host sync for all terms together) and :func:`check_weights` before every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


class NonFiniteError(FloatingPointError):
    """A loss term or a weight is NaN or infinite; the message names it and where it happened."""


def nonfinite_terms(terms: Mapping[str, Tensor]) -> dict[str, float]:
    """The terms (name -> value) that are NaN or infinite; empty when all are finite."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if bool(torch.isfinite(values).all()):  # the one sync of a healthy step
        return {}
    return {k: v for k, v in zip(terms, values.tolist()) if not math.isfinite(v)}


def check_terms(terms: Mapping[str, Tensor], epoch: int, batch: int) -> None:
    """Raise :class:`NonFiniteError` naming every non-finite term, the epoch and the batch."""
    bad = nonfinite_terms(terms)
    if bad:
        named = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteError(
            f"non-finite loss term(s) {named} at epoch {epoch}, batch {batch}; the run stops before "
            "anything is saved from it. Lower the learning rate, set trainer.gradient_clip_val, check the "
            "inputs, or set nonfinite=skip to skip such steps (counted as train/nonfinite_skips)"
        )


def check_weights(named: Iterable[tuple[str, Tensor]], epoch: int) -> None:
    """Raise :class:`NonFiniteError` naming the first tensors that hold NaN or infinite values."""
    bad = [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteError(
            f"the weights became non-finite by the end of epoch {epoch} ({', '.join(bad[:5])}{more}); "
            "no checkpoint is written from them. Lower the learning rate or set trainer.gradient_clip_val"
        )
