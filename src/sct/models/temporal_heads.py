"""Clip heads over per-frame features ``(B, T, C) -> (B, classes)`` (X-ViT and TSM aggregation)."""

from __future__ import annotations

import torch
from torch import nn

from sct.models.attention.dense import MultiHeadAttention
from sct.models.blocks import TransformerLayer


class TemporalAveragePooling(nn.Module):
    """TSM's consensus: average the T frame features, dropout, linear classifier."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, C)`` -> logits ``(B, num_classes)``."""
        return self.fc(self.drop(x.mean(dim=1)))


class TemporalAttentionAggregation(nn.Module):
    """X-ViT's temporal attention aggregation.

    A learnable token (zeros) is prepended to the T frame features, one pre-norm transformer layer
    (qkv without bias, MLP x4) mixes them, then token 0 -> LN -> Linear(C, C) -> GELU -> Dropout ->
    Linear(C, classes). No temporal position embedding: the output is invariant to frame order.
    """

    def __init__(self, dim: int, num_classes: int, heads: int = 12, mlp_ratio: float = 4.0, drop: float = 0.5,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layer = TransformerLayer(dim, MultiHeadAttention(dim, heads, qkv_bias=False), int(dim * mlp_ratio),
                                      norm_eps=norm_eps)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pre_logits = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(drop))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, C)`` -> logits ``(B, num_classes)``."""
        x = self.layer(torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1))
        return self.fc(self.pre_logits(self.norm(x[:, 0])))
