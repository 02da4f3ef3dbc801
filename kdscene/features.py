"""Feature taps: capture named intermediate outputs of any ``nn.Module`` with forward hooks.

No backbone is re-implemented to return features. A :class:`FeatureTap` registers forward hooks on
sub-modules named by their ``named_modules()`` path (``"layer3"``, ``"features.13"``,
``"layer4.1.bn2"``) and, optionally, a forward pre-hook on the classifier head to capture the
penultimate (pooled) vector. One forward pass of the model then yields a :class:`Features`.

In-place operations: torchvision ResNets use ``ReLU(inplace=True)``, so the output of an inner
module such as ``layer1.0.bn2`` is overwritten by ``out += identity; relu(out)`` after its hook
has run. The tap records each captured tensor's version counter and raises a clear error if the
tensor was modified in place before it is read; ``clone=True`` captures a copy instead.
Stage outputs (``layer1`` ... ``layer4``) are never modified in place and need no copy. Under
``torch.inference_mode`` tensors carry no version counter, so the check cannot run there: kdscene's
trainer configs set ``inference_mode: false`` (plain ``no_grad``) so that it runs in validation too.

Compiled models: the hooks of a tap on a model compiled in place (``model.compile()``, as
``DistillationModule(compile=...)`` does) are traced into the compiled graph and fill the same
``Features`` as in eager mode, without graph breaks; the in-place check is skipped inside the compiled
forward (it has run on the eager :func:`probe` at construction).

Pre-activation taps: a name ending in ``":pre"`` (``"layer3:pre"``, ``"layer3.5:pre"``) captures the
value *before* the final ReLU of a residual block, which ReviewKD distils. For a ``Sequential`` stage
the last block is used. torchvision's blocks call one shared in-place ``relu`` module several times
(after ``bn1``, [``bn2``,] and after the residual add), so the tap puts a forward *pre*-hook on the
block's ``relu`` that copies its input at every call, and a forward hook on the block that keeps the
copy of the last call, i.e. the input of the final ReLU. The copy is taken before the in-place ReLU
runs, so it is never clobbered; the model's own forward is unchanged. Cost: one copy per ReLU call of
the tapped block (2 for a BasicBlock, 3 for a Bottleneck). Blocks without a ``relu`` sub-module
(MobileNetV2's linear bottlenecks, whose outputs are pre-activation already) are refused with an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TapInfo:
    """Static description of one tapped layer, measured by :func:`probe`.

    Args:
        name: module path inside the network.
        channels: channel count of the captured map.
        stride: input size divided by the map's height.
        size: spatial size (H, W) of the map at the probed input size.
    """

    name: str
    channels: int
    stride: int
    size: tuple[int, int]


@dataclass(frozen=True)
class Features:
    """What a distillation loss sees of one network for one batch.

    Args:
        logits: class scores, shape (B, num_classes); ``None`` for feature-only losses (a loss that
            needs them says so).
        maps: intermediate maps in tap order, each (B, C_l, H_l, W_l).
        names: the module path of each map; empty (default) names them ``map0``, ``map1``, ...
        pooled: the penultimate vector fed to the classifier, (B, D), if tapped.
        indices: the batch's positions in the training set, (B,) int64, when the data module returns
            them (losses that set ``needs_indices``, such as CRD's memory bank, ask for them).
        energy: per-tap channel-energy maps A_l = (1/C_l)·Σ_c F_c², each (B, H_l, W_l), in tap order,
            given *instead of* ``maps`` by a teacher cache (:mod:`kdscene.cache`); AT (p = 2) and DCT
            read them when ``maps`` is empty.

    Raises:
        TypeError: ``maps`` is a single tensor instead of a sequence of maps.
        ValueError: ``names`` is given but does not name every map (or every energy map).
    """

    logits: Tensor | None = None
    maps: tuple[Tensor, ...] = ()
    names: tuple[str, ...] = ()
    pooled: Tensor | None = None
    indices: Tensor | None = None
    energy: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.maps, Tensor):
            raise TypeError(
                f"Features.maps is a sequence of (B, C, H, W) maps, got one Tensor of shape "
                f"{tuple(self.maps.shape)}: write maps=(x,)"
            )
        maps, energy = tuple(self.maps), tuple(self.energy)
        if maps and energy and len(maps) != len(energy):
            raise ValueError(f"Features: {len(maps)} maps but {len(energy)} energy maps; give one per tap")
        count = len(maps) or len(energy)
        names = tuple(self.names) or tuple(f"map{i}" for i in range(count))
        if len(names) != count:
            raise ValueError(
                f"Features: {len(names)} names {list(names)} for {count} maps; give one name per map "
                "(or none for map0, map1, ...)"
            )
        # frozen: the normalised tuples are set the way dataclasses set fields in __init__
        object.__setattr__(self, "maps", maps)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "energy", energy)


PREACT_SUFFIX = ":pre"


def _version(tensor: Tensor) -> int:
    """The tensor's in-place version counter, or -1 where none can be read.

    Inference tensors (``torch.inference_mode``) keep no counter, and inside a ``torch.compile``d
    forward reading one would break the graph (the hooks are traced into it): the in-place check
    then does not run. It runs in every eager forward, e.g. :func:`probe` at construction.
    """
    if torch.compiler.is_compiling() or tensor.is_inference():
        return -1
    return tensor._version


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Return the sub-modules called ``names``; raise listing the valid names if one is missing."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or not n]
    if missing:
        valid = _module_names(model)
        raise KeyError(
            f"unknown layer name(s) {missing} for {type(model).__name__}; valid names are: {', '.join(valid)}"
        )
    return [modules[n] for n in names]


def resolve_preact(model: nn.Module, name: str) -> tuple[nn.Module, nn.Module]:
    """The block and its ``relu`` module for a pre-activation tap ``"<path>:pre"``.

    ``<path>`` names a residual block or a ``Sequential`` stage (whose last block is used).
    """
    (module,) = resolve_modules(model, [name.removesuffix(PREACT_SUFFIX)])
    block = module[-1] if isinstance(module, nn.Sequential) and len(module) else module
    relu = getattr(block, "relu", None)
    if not isinstance(relu, nn.Module):
        raise ValueError(
            f"pre-activation tap {name!r}: {type(block).__name__} has no `relu` sub-module whose input "
            "is the pre-activation; tap a residual block (torchvision or kdscene ResNets) or drop ':pre'"
        )
    return block, relu


class FeatureTap:
    """Forward hooks that collect named intermediate outputs of ``model``.

    Args:
        model: any module; it is not modified apart from the hooks.
        layers: module paths whose outputs become ``Features.maps``, in this order; a path ending in
            ``":pre"`` captures the block's value before its final ReLU (module docstring).
        head: module path of the classifier; a pre-hook captures its input as ``Features.pooled``
            (flattened to (B, D)). ``None`` skips it.
        clone: copy each captured map (needed only for layers whose output is later modified
            in place, such as a ResNet block's ``bn2``).

    Use ``tap(x)`` to run the model and get a :class:`Features`; call :meth:`remove` to detach.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        head: str | None = None,
        clone: bool = False,
    ) -> None:
        self.model = model
        self.layers = tuple(layers)
        self.head = head
        self.clone = clone
        self._store: dict[str, tuple[Tensor, int]] = {}
        self._relu_inputs: dict[str, Tensor] = {}
        self._pooled: Tensor | None = None
        self._handles = []
        plain = [n for n in self.layers if not n.endswith(PREACT_SUFFIX)]
        # partials of bound methods, not closures, so that the model stays picklable (ddp_spawn)
        for name, module in zip(plain, resolve_modules(model, plain)):
            self._handles.append(module.register_forward_hook(partial(self._capture, name)))
        for name in self.layers:
            if name.endswith(PREACT_SUFFIX):
                block, relu = resolve_preact(model, name)
                self._handles.append(relu.register_forward_pre_hook(partial(self._relu_input, name)))
                self._handles.append(block.register_forward_hook(partial(self._capture_preact, name)))
        if head is not None:
            (head_module,) = resolve_modules(model, [head])
            self._handles.append(head_module.register_forward_pre_hook(self._head_hook))

    def _capture(self, name: str, module: nn.Module, args: tuple, output: Tensor) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a Tensor")
        if self.clone:
            output = output.clone()
        self._store[name] = (output, _version(output))

    def _relu_input(self, name: str, module: nn.Module, args: tuple) -> None:
        # copied now: the (in-place) ReLU overwrites its input as soon as this hook returns
        self._relu_inputs[name] = args[0].clone()

    def _capture_preact(self, name: str, module: nn.Module, args: tuple, output: Tensor) -> None:
        if name not in self._relu_inputs:
            raise RuntimeError(f"pre-activation tap {name!r}: the block's relu did not run")
        pre = self._relu_inputs.pop(name)
        self._store[name] = (pre, _version(pre))

    def _head_hook(self, module: nn.Module, args: tuple) -> None:
        self._pooled = torch.flatten(args[0], 1)

    def _collect(self) -> tuple[Tensor, ...]:
        maps = []
        for name in self.layers:
            if name not in self._store:
                raise RuntimeError(f"layer {name!r} did not run in the forward pass")
            tensor, version = self._store[name]
            if version >= 0 and tensor._version != version:
                raise RuntimeError(
                    f"the output of layer {name!r} was modified in place after it was captured "
                    "(an in-place ReLU or residual add); tap a different layer or use clone=True"
                )
            maps.append(tensor)
        return tuple(maps)

    def __call__(self, x: Tensor) -> Features:
        """Run the model on ``x`` and return its logits with the tapped maps."""
        self._store.clear()
        self._relu_inputs.clear()
        self._pooled = None
        logits = self.model(x)
        maps = self._collect()
        pooled, self._pooled = self._pooled, None
        self._store.clear()
        self._relu_inputs.clear()
        return Features(logits=logits, maps=maps, names=self.layers, pooled=pooled)

    def remove(self) -> None:
        """Detach every hook from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def probe(tap: FeatureTap, image_size: int | tuple[int, int], in_chans: int = 3) -> list[TapInfo]:
    """Run one dummy image through ``tap.model`` in eval mode and describe every tapped map.

    The model's train/eval mode is restored afterwards.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    model = tap.model
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model.eval()
    try:
        feats = tap(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        model.train(was_training)
    infos = []
    for name, fmap in zip(feats.names, feats.maps):
        if fmap.dim() != 4:
            raise ValueError(f"layer {name!r} gives a {fmap.dim()}-d tensor; taps must be (B,C,H,W)")
        infos.append(TapInfo(name, fmap.shape[1], max(h // fmap.shape[2], 1), tuple(fmap.shape[2:])))
    return infos
