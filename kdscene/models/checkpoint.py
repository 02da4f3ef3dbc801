"""Load weights from a local checkpoint into a backbone: strictly, and loudly on mismatch.

Accepted files (``torch.load``): a plain ``state_dict``; a dict holding it under ``state_dict``
(Lightning, CSAIL Places365), ``model`` (mdistiller, RepDistiller) or ``net``; keys with a
``module.`` prefix (DataParallel/DDP) or with the ``student.`` prefix of a kdscene
``DistillationModule`` checkpoint (so a trained kdscene student becomes the next teacher).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def mismatch_lines(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], exempt: Callable[[str], bool] = lambda key: False
) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``own``, one line each.

    Args:
        own: the network's state dict.
        state: the file's state dict (prefixes already stripped).
        exempt: keys for which a mismatch is allowed (not reported).

    Returns:
        Up to three indented lines, each listing at most 8 keys; empty when ``state`` fits.
    """
    missing = sorted(k for k in set(own) - set(state) if not exempt(k))
    unexpected = sorted(k for k in set(state) - set(own) if not exempt(k))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape and not exempt(k)
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


def read_state_dict(path: str | Path, expected: set[str], what: str = "checkpoint") -> dict[str, Tensor]:
    """Load ``path`` (any accepted format, module docstring) and fit its key prefixes to ``expected``.

    Args:
        path: a local file written by ``torch.save``.
        expected: the keys of the network it is meant for.
        what: how the error names the file when it does not exist.

    Returns:
        The state dict with its container and known prefixes removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return strip_prefixes(extract_state_dict(obj), expected)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; raise with the mismatching keys and shapes listed."""
    state = read_state_dict(path, set(model.state_dict()))
    problems = mismatch_lines(model.state_dict(), state)
    if problems:
        raise ValueError(
            f"checkpoint {str(Path(path).expanduser())!r} does not fit {type(model).__name__}:\n"
            + "\n".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model
