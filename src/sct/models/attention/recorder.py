"""Attention recording: how every attention module keeps its weights for attention rollout.

Each attention module owns a ``store_attention`` flag and keeps the weights of its last call in
``last_attention`` (and, where it has several maps, in other ``last_*`` attributes), and a
``relevance`` method that carries rollout relevance from its output tokens back to its input tokens
with those weights. :func:`recording` switches the flag on for a whole model; :func:`recorded` reads one
module's weights of the single clip that was run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sct.errors import SCTError


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[None]:
    """Switch ``store_attention`` on for every attention module of ``model`` for the duration of the block."""
    modules = [m for m in model.modules() if hasattr(m, "store_attention")]
    before = [m.store_attention for m in modules]
    for m in modules:
        m.store_attention = True
    try:
        yield
    finally:
        for m, flag in zip(modules, before):
            m.store_attention = flag


def recorded(module: nn.Module, attr: str = "last_attention") -> torch.Tensor:
    """The weights ``module`` kept in its last call (run on one clip under :func:`recording`)."""
    weights = getattr(module, attr)
    if weights is None:
        raise SCTError(f"{type(module).__name__} kept no attention weights (was the model run with them stored?)")
    return weights


def per_frame(weights: torch.Tensor) -> torch.Tensor:
    """Square per-frame maps of one clip, ``(1, T, H, N, N)`` or ``(T, H, N, N)`` -> ``(T, H, N, N)``."""
    return weights.reshape(-1, *weights.shape[-3:])
