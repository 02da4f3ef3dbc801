"""``torch.compile`` of a network in place, so that forward hooks (feature taps) keep working."""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn


def compile_network(network: nn.Module, backend: str = "inductor", device_type: str = "cpu") -> bool:
    """Compile ``network`` in place with ``network.compile(backend=...)``; idempotent.

    In-place compilation keeps the module and its sub-modules, so hooks registered on them (a
    :class:`~kdscene.features.FeatureTap`) are traced into the compiled graph and still fill their
    ``Features`` (``tests/models/test_compiled.py`` checks the maps against eager ones).

    Args:
        network: the model.
        backend: a ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` for a quick check).
        device_type: where the network will run (``"cpu"``, ``"cuda"``): inductor needs a C++ compiler
            for CPU code only.

    Returns:
        ``True`` when compiled (now or before); ``False``, with a warning, where this platform cannot
        compile (no TorchDynamo, or inductor on CPU without a C++ compiler): the network runs eagerly.
    """
    if getattr(network, "_compiled_call_impl", None) is not None:
        return True
    compilers = (os.environ.get("CXX", "c++"), "g++", "clang++")
    if not torch._dynamo.is_dynamo_supported():
        warnings.warn("[kdscene] compile: torch.compile is not supported here; running eagerly", stacklevel=2)
        return False
    if backend == "inductor" and device_type == "cpu" and not any(shutil.which(c) for c in compilers):
        message = (
            "[kdscene] compile: inductor on CPU needs a C++ compiler and none was found; running eagerly"
        )
        warnings.warn(message, stacklevel=2)
        return False
    network.compile(backend=backend)
    return True
