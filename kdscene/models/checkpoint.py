"""Load weights from a local checkpoint into a backbone: strictly, and loudly on mismatch.

Accepted files (``torch.load``): a plain ``state_dict``; a dict holding it under ``state_dict``
(Lightning, CSAIL Places365), ``model`` (mdistiller, RepDistiller) or ``net``; keys with a
``module.`` prefix (DataParallel/DDP) or with the ``student.`` prefix of a kdscene
``DistillationModule`` checkpoint (so a trained kdscene student becomes the next teacher).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

_CONTAINER_KEYS = ("state_dict", "model", "net")
_PREFIXES = ("module.", "student.", "model.")


def extract_state_dict(obj: object) -> dict[str, Tensor]:
    """Find the tensor mapping inside a loaded checkpoint object."""
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return extract_state_dict(obj[key])
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
    raise ValueError(
        "checkpoint holds no state dict: expected a mapping of tensors, or one under "
        f"{' / '.join(repr(k) for k in _CONTAINER_KEYS)}"
    )


def strip_prefixes(state: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Remove a known prefix from every key when that makes the keys fit ``expected``.

    A kdscene Lightning checkpoint also holds distiller keys (``distill.*``); once the ``student.``
    prefix is chosen, keys without it are dropped.
    """
    if set(state) & expected:
        return dict(state)
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if set(stripped) & expected:
                return strip_prefixes(stripped, expected)
    return dict(state)


def _mismatch_report(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    lines = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:8])}{more}")
    return lines


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; raise with the mismatching keys and shapes listed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    state = strip_prefixes(extract_state_dict(obj), set(model.state_dict()))
    problems = _mismatch_report(model, state)
    if problems:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__}:\n" + "\n".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model
