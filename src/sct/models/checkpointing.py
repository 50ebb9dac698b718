"""Activation (gradient) checkpointing: keep each transformer layer's input, recompute the rest in backward.

Every model family builds its transformer layers from ``blocks.TransformerLayer``, which carries a
``grad_checkpointing`` flag; :func:`set_grad_checkpointing` sets it on all of them. A checkpointed layer
runs its forward pass twice (once without keeping activations, once again in the backward pass), so
modules that draw from their own random state must draw the same thing both times: dropout and drop-path
get that from the global RNG state, which ``torch.utils.checkpoint`` restores; LSH attention's rotations
are counted by the module, which asks :func:`recomputing` not to count the replay as a new draw.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_RECOMPUTING = contextvars.ContextVar("sct_recomputing", default=False)


def recomputing() -> bool:
    """Whether the current forward pass is a checkpointed layer's replay during backward."""
    return _RECOMPUTING.get()


@contextlib.contextmanager
def _replay() -> Iterator[None]:
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def _contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _replay()


def checkpointed(fn: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
    """``fn(*args, **kwargs)`` with its activations recomputed in the backward pass instead of kept."""
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_contexts, **kwargs)


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> int:
    """Turn checkpointing on or off for every transformer layer of ``model``; returns how many layers.

    Raises ``ValueError`` when ``model`` has no layer that can be checkpointed, so the option is never
    silently without effect.
    """
    layers = [m for m in model.modules() if hasattr(m, "grad_checkpointing")]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer that supports gradient checkpointing")
    for layer in layers:
        layer.grad_checkpointing = enable
    return len(layers)
