"""Parameter and multiply-accumulate (MAC) counts, the papers' "GFLOPs" convention.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC and ignores the CPU SDPA kernel;
we register a formula for it and halve the totals.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of ``softmax(q k^T) v`` for ``(B, H, N_q, d)`` x ``(B, H, N_k, d)`` shapes (2 per MAC)."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n_q * n_k * (d + d_v)


def _custom_mapping() -> dict:
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: torch.Tensor, depth: int = 1) -> tuple[int, dict[str, int]]:
    """MACs of one forward pass of ``model(*inputs)``: the total and per module up to ``depth``.

    Module names are FlopCounterMode's (``"Global"`` for the total, then dotted child names).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, depth=depth, custom_mapping=_custom_mapping())
    with counter:
        model(*inputs)
    model.train(was_training)
    per_module: dict[str, int] = defaultdict(int)
    for name, ops in counter.get_flop_counts().items():
        per_module[name] = sum(ops.values()) // 2
    return counter.get_total_flops() // 2, dict(per_module)
