"""TimeSformer's divided space-time attention (Bertasius et al., ICML 2021).

Per block: temporal attention (each patch position over the T frames) with its own LayerNorm and an
output projection ``temporal_fc`` initialised to zero, then spatial attention (each frame over its
tokens, the clip's CLS token included). Tokens are kept frame-major as ``(B, T, 1 + S, C)``; the clip
has ONE CLS token, stored as T identical copies: every frame's spatial attention reads it and its update
is the mean over frames, exactly as TimeSformer averages the per-frame CLS outputs.

The module normalises internally (the spatial LayerNorm sits between its two stages), so it plugs
into ``TransformerLayer(..., attn_norm=False)`` and returns the residual update of both stages. One
difference from TimeSformer, in training only: stochastic depth drops both stages' updates together.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.recorder import recorded
from sct.models.attention.rollout import RESIDUAL, dense_step, temporal_step


class DividedSpaceTimeAttention(nn.Module):
    """``(B, T, 1 + S, C)`` raw tokens -> their residual update ``(B, T, 1 + S, C)``.

    ``store_attention`` switches on both stages; ``last_attention`` is the spatial weights
    ``(B, T, H, N, N)``, ``last_temporal_attention`` the temporal ones ``(B, S, H, T, T)``.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.temporal_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = MultiHeadAttention(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                                proj_drop=proj_drop)
        self.temporal_fc = nn.Linear(dim, dim)
        self.zero_temporal_fc()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)

    def zero_temporal_fc(self) -> None:
        """Zero the temporal output projection: the block then starts as the image ViT's block."""
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)

    @property
    def store_attention(self) -> bool:
        return self.attn.store_attention

    @store_attention.setter
    def store_attention(self, value: bool) -> None:
        self.attn.store_attention = value
        self.temporal_attn.store_attention = value

    @property
    def last_attention(self) -> torch.Tensor | None:
        return self.attn.last_attention

    @property
    def last_temporal_attention(self) -> torch.Tensor | None:
        return self.temporal_attn.last_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, 1 + S, C)`` (CLS copies first) -> update ``(B, T, 1 + S, C)``."""
        cls, patches = x[:, :, :1], x[:, :, 1:]
        along_time = rearrange(patches, "b t s c -> b s t c")
        temporal = self.temporal_fc(self.temporal_attn(self.temporal_norm(along_time)))
        temporal = rearrange(temporal, "b s t c -> b t s c")
        spatial = self.attn(self.norm(torch.cat([cls, patches + temporal], dim=2)))
        cls_update = spatial[:, :, :1].mean(dim=1, keepdim=True).expand_as(cls)
        return torch.cat([cls_update, temporal + spatial[:, :, 1:]], dim=2)

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, 1 + S)`` back through the spatial, then the temporal stage.

        The clip's one [CLS] is stored as T copies: relevance on it is shared evenly by the copies.
        """
        r = r.clone()
        r[:, 0] = r[:, 0].mean()
        r = temporal_step(r, recorded(self)[0], {0: 1.0}, cyclic=False, residual=residual)
        r[:, 0] = r[:, 0].mean()
        r[:, 1:] = dense_step(r[:, 1:].T, recorded(self, "last_temporal_attention")[0], residual).T
        return r
