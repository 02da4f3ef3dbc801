"""Initialise a backbone from the weights of another task: everything but the classifier must fit.

``init`` files are those :mod:`kdscene.models.checkpoint` reads (torchvision ImageNet state dicts, CSAIL
Places365 ``{"state_dict": {"module.conv1.weight": ...}, "arch": ...}`` files, kdscene checkpoints,
``model``/``net`` containers, ``module.``/``student.`` prefixes). The classifier head is the one part
allowed to differ: its keys whose shape differs from the network's (1000 or 365 classes against the data
set's), or that the file lacks, keep the network's fresh initialisation; any other missing, unexpected or
mis-shaped key is an error. BatchNorm ``num_batches_tracked`` counters, absent from files saved before
PyTorch 0.4.1 (the CSAIL models), are not weights and may be missing.

``weights`` names torchvision weights (``IMAGENET1K_V2``, ``DEFAULT``): torchvision builds its 1000-class
network with them (downloading the file once into ``$TORCH_HOME/hub/checkpoints``, applying its own key
fixes) and that network's state dict goes through the same ``init`` path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torchvision.models as tvm
from torch import Tensor, nn

from kdscene.models.checkpoint import mismatch_lines, read_state_dict, strip_prefixes
from kdscene.models.sources import drop_aux_heads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    """What an ``init``/``weights`` initialisation loaded and what it left to the fresh classifier.

    Args:
        network: the network's label (``resnet50``, ``timm/convnext_atto``, ``MyNet``).
        source: the file path or the torchvision weights' name.
        head: module path of the classifier.
        loaded: keys copied from the source.
        reinitialised: head keys kept freshly initialised, each as ``"key (file shape) -> (own shape)"``
            or ``"key (not in the file)"``.
        ignored: head keys of the source that the network does not have.
    """

    network: str
    source: str
    head: str
    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]
    ignored: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One line for the log: counts, then the re-initialised classifier keys."""
        text = f"init {self.network} from {self.source}: loaded {len(self.loaded)} tensors; "
        if self.reinitialised:
            text += f"re-initialised the classifier {self.head} ({', '.join(self.reinitialised)})"
        else:
            text += f"the classifier {self.head} fits as is (nothing re-initialised)"
        if self.ignored:
            text += f"; ignored the file's classifier keys {', '.join(self.ignored)}"
        return text


def _in(head: str, key: str) -> bool:
    return key.startswith(head + ".")


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def init_from_state(
    model: nn.Module, state: Mapping[str, Tensor], head: str, network: str, source: str
) -> InitReport:
    """Copy every tensor of ``state`` into ``model`` except the classifier's mismatching ones.

    Args:
        model: the freshly built network (its head already sized for the data set).
        state: the source's state dict (a container or known prefixes are removed here).
        head: module path of ``model``'s classifier.
        network: the network's label for the report.
        source: the file path or weights name for the report.

    Returns:
        The :class:`InitReport`, also logged at INFO.
    """
    own = model.state_dict()
    state = strip_prefixes(state, set(own))

    def exempt(key: str) -> bool:
        return _in(head, key) or (key.endswith("num_batches_tracked") and key not in state)

    problems = mismatch_lines(own, state, exempt)
    if problems:
        raise ValueError(
            f"init {network} from {source}: the file does not fit {type(model).__name__} outside its "
            f"classifier {head!r}:\n" + "\n".join(problems)
        )
    fresh = [k for k in own if _in(head, k) and (k not in state or state[k].shape != own[k].shape)]
    loaded = {k: v for k, v in state.items() if k in own and k not in fresh}
    model.load_state_dict(loaded, strict=False)
    report = InitReport(
        network=network,
        source=source,
        head=head,
        loaded=tuple(loaded),
        reinitialised=tuple(
            f"{k} {_shape(state[k])} -> {_shape(own[k])}" if k in state else f"{k} (not in the file)"
            for k in fresh
        ),
        ignored=tuple(k for k in state if k not in own),
    )
    log.info(report.message)
    return report


def init_from_file(model: nn.Module, path: str | Path, head: str, network: str) -> InitReport:
    """:func:`init_from_state` with the state dict read from a local file (module docstring)."""
    state = read_state_dict(path, set(model.state_dict()), what="init file")
    return init_from_state(model, state, head, network, str(path))


def torchvision_weights(name: str, weights: str) -> tuple[dict[str, Tensor], str]:
    """The state dict of torchvision's model ``name`` built with its weights ``weights``.

    Args:
        name: a torchvision classification model (``resnet50``).
        weights: a member of its weights enum (``IMAGENET1K_V2``, ``DEFAULT``; ``ResNet50_Weights.``
            may prefix it).

    Returns:
        The state dict and the weights' full name (``ResNet50_Weights.IMAGENET1K_V2``).
    """
    try:
        enum = tvm.get_model_weights(name)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"weights={weights!r} names torchvision weights, but {name!r} is not a torchvision model; "
            "initialise it from a file with init=<path> instead"
        ) from err
    member = weights.removeprefix(f"{enum.__name__}.")
    if member not in enum.__members__:
        raise ValueError(f"{name} has no weights {weights!r}; torchvision has: {', '.join(enum.__members__)}")
    chosen = enum[member]
    # torchvision's builder applies its own fixes (e.g. DenseNet's renamed keys) while loading
    network = drop_aux_heads(name, tvm.get_model_builder(name)(weights=chosen))
    return network.state_dict(), f"{enum.__name__}.{chosen.name}"
