"""Find a network's distillation taps and classifier head without knowing its class.

:func:`find_taps` runs one dummy image through the network with a forward hook on every sub-module and
reads the module tree as a feature pyramid. A *map* is a square (B, C, H, W) output larger than 1×1; its
stride is the input size over H, rounded to a power of two. For each of the deepest four strides >= 4 the
tap is the module that finishes last at that stride, the outermost one when nested modules return the
same tensor (a stage, not its last block). Modules are skipped when they

- are *trunks*: containers whose inside passes through two or more other strides (MobileNet's
  ``features``, RegNet's ``trunk_output``): their output is the last stage's, under a vaguer name;
- sit inside a module of another stride (the 1×1 stride-4 convolution that opens a stride-8 Bottleneck)
  or inside a pooled (1×1) module (SqueezeNet's convolutional classifier);
- run more than once per forward (a shared pooling module): a tap by name would see only the last call;
- return a tensor that is modified in place later (DenseNet's ``norm5``, followed by an in-place ReLU).

An ImageNet ResNet gives ``layer1``..``layer4``, MobileNetV2 ``features.3/6/13/18``, DenseNet its four
dense blocks. A module outside every map-producing module that gives a token (3-D) or channels-last output
(ViT's encoder, Swin's stages) means the network is not a convolutional feature pyramid: the caller must
then name ``layers``. timm models list their stages in ``feature_info``; those names are preferred when
every one of them yields a map.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PROBE_SIZE = 224
"""Side of the dummy image: large enough that only global pooling gives 1×1 maps."""
MAX_TAPS = 4
MIN_STRIDE = 4


@dataclass
class Event:
    """One module call of the dummy forward, in completion order."""

    name: str
    output: Tensor | None
    version: int
    stride: int | None  # None: not a map; 0: a pooled 1×1 map


@dataclass
class Trace:
    """Every module call of one dummy forward and the network's output."""

    image_size: int
    events: list[Event]
    calls: dict[str, int]
    output: object
    strides: dict[str, int | None] = field(default_factory=dict)  # each module's first-call stride
    trunks: set[str] = field(default_factory=set)


def _stride(output: object, image_size: int) -> int | None:
    if not isinstance(output, Tensor) or output.dim() != 4 or output.shape[2] != output.shape[3]:
        return None
    if output.shape[2] == 1:
        return 0
    return 2 ** round(math.log2(image_size / output.shape[2]))


def _record(trace: Trace, name: str, module: nn.Module, args: tuple, output: object) -> None:
    trace.calls[name] = trace.calls.get(name, 0) + 1
    tensor = output if isinstance(output, Tensor) else None
    version = tensor._version if tensor is not None else -1
    trace.events.append(Event(name, tensor, version, _stride(output, trace.image_size)))


@torch.no_grad()
def trace_forward(model: nn.Module, image_size: int = PROBE_SIZE) -> Trace:
    """Run one zero image of ``image_size`` pixels through ``model`` in eval mode, hooking every module.

    Plain ``no_grad`` (not inference mode), so that in-place writes show in the tensors' version
    counters. The model's train/eval mode is restored afterwards.
    """
    trace = Trace(image_size, [], {}, None)
    handles = [
        module.register_forward_hook(partial(_record, trace, name))
        for name, module in model.named_modules()
        if name
    ]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        trace.output = model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for event in trace.events:
        trace.strides.setdefault(event.name, event.stride)
    trace.trunks = _trunks(trace)
    return trace


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _inner_strides(trace: Trace) -> dict[str, set[int]]:
    inner: dict[str, set[int]] = {}
    for event in trace.events:
        if event.stride:
            for parent in _ancestors(event.name):
                inner.setdefault(parent, set()).add(event.stride)
    return inner


def _trunks(trace: Trace) -> set[str]:
    return {
        name
        for name, strides in _inner_strides(trace).items()
        if len(strides - {trace.strides.get(name)}) >= 2
    }


def _is_candidate(trace: Trace, event: Event) -> bool:
    trunks = trace.trunks
    if not event.stride or trace.calls[event.name] > 1 or event.name in trunks:
        return False
    if event.output is None or event.output._version != event.version:
        return False
    for parent in _ancestors(event.name):
        stride = trace.strides.get(parent)
        if parent not in trunks and stride is not None and stride != event.stride:
            return False
    return True


def _covered(trace: Trace, name: str) -> bool:
    return any(trace.strides.get(p) and p not in trace.trunks for p in _ancestors(name))


def _check_pyramid(trace: Trace, head: str | None, label: str) -> None:
    for event in trace.events:
        out = event.output
        if out is None or out.dim() <= 2 or event.stride is not None:
            continue
        inside_head = head is not None and (event.name == head or event.name.startswith(head + "."))
        if not inside_head and not _covered(trace, event.name):
            raise ValueError(
                f"{label} has no convolutional feature maps to tap: module {event.name!r} gives a "
                f"{tuple(out.shape)} tensor (tokens or channels-last), not (B, C, H, W). Name the layers "
                "to tap with layers=[...] (module paths whose outputs are (B, C, H, W) maps)"
            )


def taps_from_trace(trace: Trace, head: str | None = None, label: str = "the network") -> tuple[str, ...]:
    """The automatic taps (module docstring) of a traced network; ``head`` is exempt from the checks."""
    _check_pyramid(trace, head, label)
    candidates = [e for e in trace.events if _is_candidate(trace, e)]
    strides = sorted({e.stride for e in candidates if e.stride >= MIN_STRIDE})[-MAX_TAPS:]
    if not strides:
        raise ValueError(
            f"{label} gives no (B, C, H, W) feature map of stride >= {MIN_STRIDE} on a "
            f"{trace.image_size}-pixel image; name the layers to tap with layers=[...]"
        )
    taps = []
    for stride in strides:
        last = [e for e in candidates if e.stride == stride][-1]
        same = [e.name for e in candidates if e.output is last.output]
        taps.append(min(same, key=lambda n: n.count(".")))
    return tuple(taps)


def preferred_taps(trace: Trace, names: Sequence[str]) -> tuple[str, ...] | None:
    """The last four of ``names`` (timm's ``feature_info`` stages of stride >= 4) if each yields a clean map.

    Returns ``None`` when any of them does not, so that the caller falls back to the automatic rule.
    """
    by_name = {e.name: e for e in trace.events}
    if not names or any(n not in by_name or not _is_candidate(trace, by_name[n]) for n in names):
        return None
    return tuple(names)[-MAX_TAPS:]


def find_taps(model: nn.Module, image_size: int = PROBE_SIZE) -> tuple[str, ...]:
    """Module paths of the deepest (up to four) stage outputs of ``model``, found by one dummy forward.

    Args:
        model: any image classifier taking (B, 3, H, W).
        image_size: side of the dummy image.

    Returns:
        The taps, shallowest first (module docstring for the rule).
    """
    return taps_from_trace(trace_forward(model, image_size), label=type(model).__name__)


def check_module(model: nn.Module, path: str, what: str, label: str) -> None:
    """Raise a ``KeyError`` listing the valid module paths if ``model`` has no sub-module ``path``."""
    names = [n for n, _ in model.named_modules() if n]
    if path not in names:
        raise KeyError(f"{label} has no module {path!r} ({what}); valid names are: {', '.join(names)}")


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` of ``model`` with its module path, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def find_head(model: nn.Module, num_classes: int) -> str:
    """The module path of the classifier: the last ``nn.Linear`` with ``out_features == num_classes``.

    Args:
        model: the network.
        num_classes: the number of classes it predicts.

    Returns:
        The head's module path (its input is the penultimate, pooled vector).
    """
    matches = [name for name, m in linear_layers(model) if m.out_features == num_classes]
    if not matches:
        found = ", ".join(f"{n} ({m.in_features}->{m.out_features})" for n, m in linear_layers(model))
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear with out_features={num_classes} to serve as the "
            f"classifier head (its nn.Linear layers: {found or 'none'}); name it with head=<module path>"
        )
    return matches[-1]


def split_parameters(model: nn.Module, head: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The parameters of ``model`` outside and inside the module ``head``, in ``named_parameters`` order.

    Args:
        model: the network.
        head: module path of its classifier (``BackboneSpec.tap_head``).

    Returns:
        ``(backbone, head)`` parameter lists, e.g. for two learning rates.
    """
    check_module(model, head, "head", type(model).__name__)
    backbone, classifier = [], []
    for name, param in model.named_parameters():
        (classifier if name.startswith(head + ".") else backbone).append(param)
    return backbone, classifier
