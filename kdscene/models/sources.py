"""Where a network comes from: a kdscene preset, torchvision, timm, or the user's own factory.

Names are looked up in that order: a preset (``resnet10``, ``cifar_resnet20``, ...; the ImageNet ResNets
and MobileNetV2 presets are torchvision's own networks), any torchvision classification model
(``torchvision.models.list_models(module=torchvision.models)``), then ``timm/<name>`` for timm models
(an optional dependency: ``pip install kdscene[timm]``). A factory (``model=``, e.g. Hydra's
``_partial_: true``) is called with ``num_classes=`` when its signature has that argument; otherwise it is
called without and the last ``nn.Linear`` of its classifier is replaced when its output size differs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torchvision.models as tvm
from torch import nn

from kdscene.models.presets import PRESETS
from kdscene.models.taps import check_module, linear_layers

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
TIMM_PRETRAINED = "pretrained"


@dataclass(frozen=True)
class Source:
    """A freshly built network and what its origin already knows about it.

    Args:
        model: the network, its classifier sized for the data set.
        kind: ``"preset"``, ``"torchvision"``, ``"timm"`` or ``"model"``.
        label: how logs and errors name it.
        head: the classifier's module path when the origin knows it, else ``None``.
        layers: the preset's taps, else ``None``.
        preferred: timm's ``feature_info`` stages of stride >= 4 (tried before the automatic rule).
    """

    model: nn.Module
    kind: str
    label: str
    head: str | None = None
    layers: tuple[str, ...] | None = None
    preferred: tuple[str, ...] = ()


def torchvision_names() -> list[str]:
    """Every torchvision classification model name."""
    return tvm.list_models(module=tvm)


AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
"""torchvision networks with auxiliary classifiers, which return extra logits in training mode."""


def quirks(name: str, pretrained: bool) -> dict[str, bool]:
    """Builder arguments that make torchvision's ``name`` (built without weights) a plain classifier.

    GoogLeNet and Inception-v3 are built without their auxiliary classifiers. Their ImageNet weights expect
    torchvision's ``transform_input`` re-normalisation, switched on when they are loaded (``pretrained``).
    """
    if name not in AUX_HEADS:
        return {}
    return {"aux_logits": False, "transform_input": pretrained, "init_weights": True}


def drop_aux_heads(name: str, network: nn.Module) -> nn.Module:
    """Remove the auxiliary classifiers torchvision keeps on a pretrained GoogLeNet/Inception-v3."""
    for aux in AUX_HEADS.get(name, ()):
        setattr(network, aux, None)
    return network


def unknown_name(name: str) -> KeyError:
    """The error for a name that is neither a preset, a torchvision model nor ``timm/<name>``."""
    return KeyError(
        f"unknown backbone {name!r}: not a kdscene preset, a torchvision classification model or "
        f"'timm/<name>'. known backbones: the kdscene presets {', '.join(sorted(PRESETS))}; every "
        "torchvision model listed by torchvision.models.list_models(module=torchvision.models); timm "
        "models as 'timm/<name>' (timm.list_models(), with pip install kdscene[timm])"
    )


def from_name(name: str, num_classes: int, weights: str | None) -> Source:
    """Build the preset, torchvision or timm network called ``name`` (timm weights load here)."""
    if name.startswith(TIMM_PREFIX):
        return _timm(name, num_classes, weights)
    if name in PRESETS:
        preset = PRESETS[name]
        return Source(preset.build(num_classes), "preset", name, preset.head, preset.layers)
    if name in torchvision_names():
        builder = tvm.get_model_builder(name)
        model = builder(weights=None, num_classes=num_classes, **quirks(name, weights is not None))
        return Source(model, "torchvision", name)
    raise unknown_name(name)


def _import_timm(name: str) -> ModuleType:
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"backbone {name!r} needs timm, not installed: pip install kdscene[timm]") from err
    return timm


def _timm(name: str, num_classes: int, weights: str | None) -> Source:
    timm = _import_timm(name)
    if weights not in (None, TIMM_PRETRAINED):
        raise ValueError(
            f"{name}: timm models take weights={TIMM_PRETRAINED!r} (timm's pretrained=True, its default "
            f"tag or the one in the name, e.g. timm/resnet18.a1_in1k), not {weights!r}"
        )
    pretrained = weights == TIMM_PRETRAINED
    model = timm.create_model(name.removeprefix(TIMM_PREFIX), pretrained=pretrained, num_classes=num_classes)
    return Source(model, "timm", name, _timm_head(model), preferred=_timm_stages(model))


def _timm_head(model: nn.Module) -> str | None:
    classifier = getattr(model, "get_classifier", lambda: None)()
    if not isinstance(classifier, nn.Module) or isinstance(classifier, nn.Identity):
        return None
    return next((n for n, m in model.named_modules() if m is classifier and n), None)


def _timm_stages(model: nn.Module) -> tuple[str, ...]:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not all(isinstance(i, dict) for i in info):
        return ()
    return tuple(i["module"] for i in info if i.get("reduction", 0) >= 4 and "module" in i)


def factory_label(factory: Callable[..., nn.Module]) -> str:
    """A readable name for a factory: the class or function it calls."""
    target = getattr(factory, "func", factory)
    return getattr(target, "__qualname__", None) or type(target).__name__


def _accepts_num_classes(factory: Callable[..., nn.Module]) -> bool:
    try:
        return "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def from_factory(factory: Callable[..., nn.Module], num_classes: int, head: str | None) -> Source:
    """Call the user's factory; size its classifier for ``num_classes`` (module docstring)."""
    label = factory_label(factory)
    sized = _accepts_num_classes(factory)
    model = factory(num_classes=num_classes) if sized else factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {label} returned {type(model).__name__}, not an nn.Module")
    if sized:
        return Source(model, "model", label, head)
    head = head or _last_linear(model, label)
    rebuild_classifier(model, head, num_classes, label)
    return Source(model, "model", label, head)


def _last_linear(model: nn.Module, label: str) -> str:
    layers = linear_layers(model)
    if not layers:
        raise ValueError(
            f"{label} has no nn.Linear classifier to size for the data set: give it a num_classes "
            "constructor argument, or name its classifier with head=<module path>"
        )
    return layers[-1][0]


def rebuild_classifier(model: nn.Module, head: str, num_classes: int, label: str) -> None:
    """Replace the last ``nn.Linear`` in ``head`` by a fresh one with ``num_classes`` outputs if it differs.

    Args:
        model: the network, changed in place.
        head: module path of its classifier (an ``nn.Linear`` or a container ending in one).
        num_classes: the wanted output size.
        label: the network's name for the log and errors.
    """
    check_module(model, head, "head", label)
    inner = linear_layers(model.get_submodule(head))
    if not inner:
        raise ValueError(f"{label}: the head {head!r} holds no nn.Linear to resize for {num_classes} classes")
    name, old = inner[-1]
    if old.out_features == num_classes:
        return
    path = f"{head}.{name}" if name else head
    parent_path, _, child = path.rpartition(".")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(model.get_submodule(parent_path), child, new)
    log.info(
        "%s: rebuilt the classifier %s for %d classes: Linear(%d -> %d) -> Linear(%d -> %d)",
        label,
        path,
        num_classes,
        old.in_features,
        old.out_features,
        old.in_features,
        num_classes,
    )
