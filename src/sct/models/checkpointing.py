"""Activation (gradient) checkpointing: keep each transformer layer's input, recompute the rest in backward.

During the backward pass one layer at a time is recomputed, and the largest part of that layer would be its
MLP's hidden activations (4x the width, before and after GELU) with their gradients. A checkpointed layer
therefore runs its MLP through :func:`recomputed_mlp`, which keeps only the MLP's input and recomputes the
hidden activations a block of rows at a time while its gradients are taken, so the layer being recomputed
never holds them whole. The layer's replay then needs nothing from its MLP but that input (the MLP is the
layer's last step, and the replay's outputs are discarded), so the replay skips the MLP: recomputation costs
the attention half of each layer plus one ``fc1`` and GELU, less than a whole forward pass.

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
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

# Hidden activations per block of rows in :func:`recomputed_mlp` (elements): 16 MiB in fp32, large enough
# that each block's matmuls run at full speed.
HIDDEN_BLOCK = 1 << 22

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


class _RecomputedMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` over rows ``x`` ``(R, C)`` that keeps only ``x``; the hidden activations are
    recomputed a block of rows at a time in backward, under the autocast state of the forward pass."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, approximate: str):
        ctx.save_for_backward(x, w1, b1, w2, b2)
        ctx.approximate = approximate
        device, enabled = x.device.type, torch.is_autocast_enabled(x.device.type)
        ctx.autocast = (device, enabled, torch.get_autocast_dtype(device))
        if recomputing():  # a checkpointed layer's replay keeps what is saved above and discards the output
            return x.new_zeros(x.shape[0], w2.shape[0], dtype=ctx.autocast[2] if enabled else x.dtype)
        return torch.cat([F.linear(F.gelu(F.linear(rows, w1, b1), approximate=approximate), w2, b2)
                          for rows in x.split(_block_rows(w1))])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w1, b1, w2, b2 = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        grads = [torch.zeros_like(t) for t in (x, w1, b1, w2, b2)]
        gx, gw1, gb1, gw2, gb2 = grads
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            for start in range(0, x.shape[0], _block_rows(w1)):
                rows = slice(start, start + _block_rows(w1))
                h = F.linear(x[rows], w1, b1)
                g_out = grad[rows]
                gw2 += g_out.t() @ F.gelu(h, approximate=ctx.approximate)
                gb2 += g_out.sum(0)
                gh = torch.ops.aten.gelu_backward(g_out @ w2, h, approximate=ctx.approximate)
                gw1 += gh.t() @ x[rows]
                gb1 += gh.sum(0)
                gx[rows] = gh @ w1
        return (*(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad)), None)


def _block_rows(w1: torch.Tensor) -> int:
    return max(1, HIDDEN_BLOCK // w1.shape[0])


def recomputed_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)`` for ``x`` ``(..., C)`` keeping only ``x`` for backward (see the module's docstring).

    ``mlp`` is a ``blocks.Mlp`` with GELU and no dropout (dropout's masks would have to be replayed too). Inside
    a replay (:func:`recomputing`) the output is zeros of its shape: only for a checkpointed function in which
    nothing that autograd keeps is computed from the MLP's output, as in ``blocks.TransformerLayer``."""
    out = _RecomputedMlp.apply(x.reshape(-1, x.shape[-1]), mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
                               mlp.fc2.bias, mlp.act.approximate)
    return out.view(*x.shape[:-1], out.shape[-1])
