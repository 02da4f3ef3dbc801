"""Backbone factory: a :class:`BackboneSpec` names any network and becomes an ``nn.Module``.

A spec names a kdscene preset, a torchvision classification model or ``timm/<name>`` (``name``), or
carries the user's own factory (``model``). Its taps and head default to the preset's; for any other
network :func:`build_backbone` finds them on the built network (:mod:`kdscene.models.taps`) and records
them in ``spec.resolved``, which :attr:`BackboneSpec.tap_layers` and :attr:`BackboneSpec.tap_head` read.

Weights come from at most one of: ``checkpoint`` (this task's network, loaded strictly), ``init``
(another task's file: everything but the classifier must fit) or ``weights`` (torchvision's named
weights, through the ``init`` path; ``pretrained`` for timm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from kdscene.models.checkpoint import load_checkpoint
from kdscene.models.presets import PRESETS
from kdscene.models.pretrained import init_from_file, init_from_state, torchvision_weights
from kdscene.models.sources import Source, factory_label, from_factory, from_name
from kdscene.models.taps import check_module, find_head, preferred_taps, taps_from_trace, trace_forward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedBackbone:
    """What :func:`build_backbone` chose for a spec (module paths and a log line, no tensors).

    Args:
        layers: the tapped module paths.
        head: the classifier's module path.
        kind: ``"preset"``, ``"torchvision"``, ``"timm"`` or ``"model"``.
        init: the ``init``/``weights`` report line, when the network was initialised that way.
    """

    layers: tuple[str, ...]
    head: str
    kind: str
    init: str | None = None


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a network, and nothing that is a tensor.

    Args:
        name: a kdscene preset (``resnet10``, ``cifar_resnet20`` ...), a torchvision classification model
            (``resnet50``, ``convnext_tiny``, ``efficientnet_b0`` ...) or ``timm/<name>``.
        num_classes: classifier size; ``None`` means "take it from the data module".
        layers: module paths to tap (``":pre"`` suffixes allowed); ``None`` uses the preset's taps, or
            finds the deepest four stage outputs of any other network.
        head: the classifier module whose input is the pooled vector; ``None`` uses the preset's, timm's
            ``get_classifier()``, or the last ``nn.Linear`` with ``num_classes`` outputs.
        checkpoint: weights of this very network (e.g. a trained kdscene teacher), loaded strictly.
        init: a checkpoint of another task (ImageNet, Places365, a kdscene run): loaded except for the
            classifier keys whose shape differs, which stay freshly initialised.
        weights: torchvision weights of ``name`` (``IMAGENET1K_V2``, ``DEFAULT``), downloaded once into
            the torch hub cache and loaded as ``init``; for timm, ``pretrained``.
        model: instead of ``name``, a factory of the user's own ``nn.Module`` (a class or a
            ``functools.partial``; Hydra ``_partial_: true``), called with ``num_classes=`` if it takes it.
    """

    name: str | None = None
    num_classes: int | None = None
    layers: list[str] | None = None
    head: str | None = None
    checkpoint: str | None = None
    init: str | None = None
    weights: str | None = None
    model: Callable[..., nn.Module] | None = None
    resolved: ResolvedBackbone | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def label(self) -> str:
        """The network's name in logs: ``name``, or the factory's class/function name."""
        return self.name if self.name else factory_label(self.model)

    def validate(self) -> None:
        """Raise unless exactly one of ``name``/``model`` and at most one weight source is set."""
        if bool(self.name) == (self.model is not None):
            raise ValueError(
                "BackboneSpec needs exactly one of name (a preset, torchvision or timm/<name> network) and "
                f"model (a factory of your own nn.Module); got name={self.name!r}, model={self.model!r}. "
                "With model= set name=null (teacher.name=null)"
            )
        self._validate_weights()

    def _validate_weights(self) -> None:
        if self.model is not None and self.weights:
            raise ValueError(
                f"weights={self.weights!r} names torchvision or timm weights; initialise your own network "
                f"{self.label} from a file with init=<path>"
            )
        given = [k for k in ("checkpoint", "init", "weights") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(
                f"backbone {self.label}: set at most one of checkpoint (this network, strict), init (another "
                f"task's file) and weights (torchvision/timm); got {', '.join(given)}"
            )

    @property
    def tap_layers(self) -> tuple[str, ...]:
        """The tapped module paths: ``layers``, else the preset's or those :func:`build_backbone` found."""
        if self.layers:
            return tuple(self.layers)
        if self.resolved is not None:
            return self.resolved.layers
        if self.name in PRESETS:
            return PRESETS[self.name].layers
        raise self._unresolved("taps")

    @property
    def tap_head(self) -> str:
        """The classifier's module path: ``head``, else the preset's or the one found when built."""
        if self.head:
            return self.head
        if self.resolved is not None:
            return self.resolved.head
        if self.name in PRESETS:
            return PRESETS[self.name].head
        raise self._unresolved("head")

    def _unresolved(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.label}: {what} found on the built network; call build_backbone first")


def _check_logits(output: object, num_classes: int, label: str) -> None:
    if not isinstance(output, Tensor) or tuple(output.shape) != (1, num_classes):
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"{label} returns {got} for one image; expected logits of shape (1, {num_classes})")


def _resolve_taps(spec: BackboneSpec, source: Source, head: str) -> tuple[str, ...]:
    """The preset's or the given taps; for any other network, one dummy forward checks it and finds them."""
    if source.kind == "preset":
        return tuple(spec.layers) if spec.layers else source.layers
    trace = trace_forward(source.model)
    _check_logits(trace.output, spec.num_classes, source.label)
    if spec.layers:
        return tuple(spec.layers)
    taps = preferred_taps(trace, source.preferred)
    how = "timm feature_info"
    if taps is None:
        taps, how = taps_from_trace(trace, head, source.label), "found automatically"
    log.info("%s: taps %s (%s), head %s", source.label, ", ".join(taps), how, head)
    return taps


def _load_weights(spec: BackboneSpec, source: Source, head: str) -> str | None:
    if spec.checkpoint:
        load_checkpoint(source.model, spec.checkpoint)
    elif spec.init:
        return init_from_file(source.model, spec.init, head, source.label).message
    elif spec.weights and source.kind != "timm":
        state, weights = torchvision_weights(spec.name, spec.weights)
        return init_from_state(source.model, state, head, source.label, weights).message
    return None


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Build the network of ``spec``, load its weights and record its taps and head in ``spec.resolved``.

    Args:
        spec: the backbone's spec; ``num_classes`` must be set.

    Returns:
        The network. ``spec.tap_layers`` and ``spec.tap_head`` then name its taps and classifier.
    """
    spec.validate()
    if spec.num_classes is None or spec.num_classes < 1:
        raise ValueError(f"backbone {spec.label!r} needs num_classes >= 1, got {spec.num_classes}")
    if spec.model is not None:
        source = from_factory(spec.model, spec.num_classes, spec.head)
    else:
        source = from_name(spec.name, spec.num_classes, spec.weights)
    head = spec.head or source.head or find_head(source.model, spec.num_classes)
    check_module(source.model, head, "head", source.label)
    layers = _resolve_taps(spec, source, head)
    init = _load_weights(spec, source, head)
    spec.resolved = ResolvedBackbone(layers, head, source.kind, init)
    return source.model
