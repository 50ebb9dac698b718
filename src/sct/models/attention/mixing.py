"""X-ViT's space-time mixing attention (Bulat et al., NeurIPS 2021).

Each frame attends over its own ``N`` tokens, but its keys and values are mixed from frames
t-1, t, t+1 by channel groups (the shift trick applied to K and V only; queries untouched). The cost
is that of a spatial-only ViT, O(T N^2), while the temporal receptive field grows one frame per layer.
"""

from __future__ import annotations

import torch
from einops import rearrange

from sct.errors import ConfigError
from sct.models.attention.dense import MultiHeadAttention, attention
from sct.models.attention.recorder import recorded
from sct.models.attention.rollout import RESIDUAL, temporal_step
from sct.models.temporal_shift import shift_fold, shift_offsets, temporal_shift

LAYOUTS = ("global", "per_head")


def mix_frames(x: torch.Tensor, n_div: int, layout: str = "global") -> torch.Tensor:
    """Mix keys or values from neighbouring frames: ``(B, T, H, N, d) -> (B, T, H, N, d)``.

    ``global``: groups of ``H*d // n_div`` channels of the concatenated heads (the public X-ViT code,
    whose checkpoints put the first heads wholly on frame t+1). ``per_head``: groups of
    ``d // n_div`` channels inside every head (the paper's description). ``n_div == 0``: no mixing.
    """
    if layout == "per_head":
        return temporal_shift(x, shift_fold(x.shape[-1], n_div), time_dim=1)
    if layout != "global":
        raise ConfigError(f"mixing layout must be one of {LAYOUTS}, got {layout!r}")
    heads = x.shape[2]
    flat = rearrange(x, "b t h n d -> b t n (h d)")
    flat = temporal_shift(flat, shift_fold(flat.shape[-1], n_div), time_dim=1)
    return rearrange(flat, "b t n (h d) -> b t h n d", h=heads)


class SpaceTimeMixingAttention(MultiHeadAttention):
    """Space-time mixing MSA: ``(B, T, N, C) -> (B, T, N, C)``.

    Same parameters as ``MultiHeadAttention`` (``qkv``, ``proj``), so image ViT weights load as they
    are. ``summary_token``: every frame's keys/values also get the T per-frame summaries (mean over the
    frame's tokens of its un-mixed keys/values; the paper's phi, R = 1), a global exchange at T extra
    keys per frame. ``last_attention`` (with ``store_attention``): ``(B, T, H, N, N [+ T])``.
    """

    def __init__(self, dim: int, heads: int, n_div: int = 8, layout: str = "global", summary_token: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        if layout not in LAYOUTS:
            raise ConfigError(f"mixing layout must be one of {LAYOUTS}, got {layout!r}")
        shift_fold(dim if layout == "global" else dim // heads, n_div)
        self.n_div = n_div
        self.layout = layout
        self.summary_token = summary_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, N, C)``, frames of one clip along dim 1."""
        q, k, v = rearrange(self.qkv(x), "b t n (three h d) -> three b t h n d", three=3, h=self.heads)
        k_mix, v_mix = mix_frames(k, self.n_div, self.layout), mix_frames(v, self.n_div, self.layout)
        if self.summary_token:
            k_mix = torch.cat([k_mix, _summaries(k)], dim=-2)
            v_mix = torch.cat([v_mix, _summaries(v)], dim=-2)
        out, weights = attention(q, k_mix, v_mix, None, self.attn_drop if self.training else 0.0,
                                 self.store_attention)
        self.last_attention = weights
        return self.proj_drop(self.proj(rearrange(out, "b t h n d -> b t n (h d)")))

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)``: the mixed keys/values bring 1/n_div from each neighbouring frame."""
        if self.summary_token:
            raise ConfigError("visualize: rollout through X-ViT summary tokens is not supported")
        return temporal_step(r, recorded(self)[0], shift_offsets(self.n_div), cyclic=False, residual=residual)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, n_div={self.n_div}, layout={self.layout}, summary_token={self.summary_token}"


def _summaries(x: torch.Tensor) -> torch.Tensor:
    """Per-frame mean token, shown to every frame: ``(B, T, H, N, d) -> (B, T, H, T, d)``."""
    summary = rearrange(x.mean(dim=-2), "b t h d -> b h t d")
    return summary.unsqueeze(1).expand(-1, x.shape[1], -1, -1, -1)
