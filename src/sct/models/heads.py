"""Clip-level heads: per-frame features ``(B, T, C)`` -> logits ``(B, num_classes)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.recorder import recorded
from sct.models.attention.rollout import frame_weights
from sct.models.blocks import TransformerLayer


class ClipEncoder(nn.Module):
    """SCT's clip encoder (Eq. 8): a transformer over the frames' [CLS] features plus a clip [CLS].

    ``b_0 = [b_cls; LN(a'_1) E'; ...; LN(a'_T) E'] + E'_pos``, M' pre-norm layers,
    ``c = head(LN(b_{M'})[0])`` with dropout before the linear classifier. The LN on the frame features
    closes the pre-norm frame encoder (its last layer's output is an un-normalised residual stream), as
    ViT's final norm does; without it the frame features enter ``E'`` at a scale of ~0.05.
    ``(B, T, C_in) -> (B, num_classes)``. The temporal position embedding is learnt for ``num_frames``
    and linearly interpolated for other clip lengths.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_dim: int, num_frames: int,
                 num_classes: int, dim_head: int | None = None, drop_rate: float = 0.0,
                 drop_path: list[float] | None = None):
        super().__init__()
        drop_path = drop_path or [0.0] * depth
        self.frame_norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.frame_embed = nn.Linear(in_dim, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(
            TransformerLayer(dim, MultiHeadAttention(dim, heads, dim_head), mlp_dim, drop_path=drop_path[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)

    def position_embedding(self, frames: int) -> torch.Tensor:
        """``(1, frames + 1, D')``: the learnt table, resampled along time when ``frames`` differs."""
        if frames + 1 == self.pos_embed.shape[1]:
            return self.pos_embed
        cls_pos, frame_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        frame_pos = F.interpolate(frame_pos.transpose(1, 2), size=frames, mode="linear", align_corners=False)
        return torch.cat([cls_pos, frame_pos.transpose(1, 2)], dim=1)

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, C_in)`` -> clip feature ``(B, D')`` (the clip [CLS] after the final norm)."""
        x = self.frame_embed(self.frame_norm(frames))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(frames.shape[1])
        for layer in self.layers:
            x = layer(x)
        return self.norm(x[:, 0])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, C_in)`` -> logits ``(B, num_classes)``."""
        return self.head(self.head_drop(self.forward_features(frames)))

    def frame_weights(self, frames: int) -> torch.Tensor:
        """Rollout of the clip [CLS] over the ``frames`` frame tokens of the recorded clip: ``(T,)``, sum 1."""
        if not self.layers:
            return uniform_weights(frames)
        return frame_weights([recorded(layer.attn)[0] for layer in self.layers])


class TemporalAveragePooling(nn.Module):
    """TSM's consensus: average the T frame features, dropout, linear classifier."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, C)`` -> logits ``(B, num_classes)``."""
        return self.fc(self.drop(x.mean(dim=1)))

    def frame_weights(self, frames: int) -> torch.Tensor:
        """Every frame weighs the same in an average: ``(T,)``."""
        return uniform_weights(frames)


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

    def frame_weights(self, frames: int) -> torch.Tensor:
        """Rollout of the aggregation token over the frames of the recorded clip: ``(T,)``, sum 1."""
        return frame_weights([recorded(self.layer.attn)[0]])


def uniform_weights(frames: int) -> torch.Tensor:
    """``(T,)`` float64, each ``1 / T``."""
    return torch.full((frames,), 1.0 / frames, dtype=torch.float64)
