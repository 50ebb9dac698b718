"""Dense multi-head self-attention on ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.models.attention.recorder import per_frame, recorded
from sct.models.attention.rollout import RESIDUAL, temporal_step


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    dropout_p: float = 0.0, return_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over ``(..., H, N, d)`` tensors.

    ``mask`` is boolean (True = may attend) or additive, broadcastable to ``(..., H, N_q, N_k)``.
    With ``return_weights`` the softmax weights ``(..., H, N_q, N_k)`` are computed explicitly (for
    attention rollout); otherwise SDPA's fused kernel is used and the weights are ``None``.
    """
    if not return_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    weights = logits.softmax(dim=-1)
    return F.dropout(weights, dropout_p) @ v, weights


class MultiHeadAttention(nn.Module):
    """Standard MSA over the last two dims: ``(..., N, C) -> (..., N, C)``.

    Set ``store_attention = True`` to keep the head-wise weights of the last call in
    ``last_attention`` ``(..., H, N, N)`` (used by attention rollout).
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads = heads
        dim_head = dim_head or dim // heads
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.store_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "... n (three h d) -> three ... h n d", three=3, h=self.heads)
        out, weights = attention(q, k, v, mask, self.attn_drop if self.training else 0.0, self.store_attention)
        self.last_attention = weights
        return self.proj_drop(self.proj(rearrange(out, "... h n d -> ... n (h d)")))

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)`` of one clip's frames back through the recorded per-frame weights."""
        return frame_relevance(self, r, residual)


def frame_relevance(module: nn.Module, r: torch.Tensor, residual: float = RESIDUAL) -> torch.Tensor:
    """``r (T, N)`` back through the square per-frame weights ``module`` recorded (each frame its own tokens)."""
    return temporal_step(r, per_frame(recorded(module)), {0: 1.0}, cyclic=False, residual=residual)
