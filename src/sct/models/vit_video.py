"""ViT video models: a frame-wise ViT encoder plus a clip head (X-ViT, TSM-ViT, TimeSformer, ViT frames).

One class, ``VideoViT``; the variants are config values (``temporal``: how frames interact inside
the encoder, ``head``: how the per-frame CLS features become clip logits). ``xvit.py`` registers X-ViT
and TSM-ViT; this module registers TimeSformer and the plain per-frame ViT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sct.errors import ConfigError
from sct.models.registry import register
from sct.models.temporal_heads import TemporalAttentionAggregation, TemporalAveragePooling
from sct.models.vit_encoder import TEMPORAL_KINDS, ViTEncoder

HEADS = ("temporal_attention", "summary_token", "average")


@dataclass
class VideoViTConfig:
    """A ViT on video frames. ``head="summary_token"`` adds X-ViT's summary tokens to every mixing
    attention layer and averages the frames' features (the paper's alternative to temporal attention)."""

    num_classes: int = 400
    num_frames: int = 8
    img_size: int = 224
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    temporal: str = "mixing"
    n_div: int = 8
    mixing_layout: str = "global"
    head: str = "temporal_attention"
    drop_rate: float = 0.5
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL_KINDS:
            raise ConfigError(f"model option temporal must be one of {TEMPORAL_KINDS}, got {self.temporal!r}")
        if self.head not in HEADS:
            raise ConfigError(f"model option head must be one of {HEADS}, got {self.head!r}")
        if self.head == "summary_token" and self.temporal not in ("mixing", "space"):
            raise ConfigError(f"model option head='summary_token' needs temporal='mixing' or 'space', "
                              f"got temporal={self.temporal!r}")
        if self.dim % self.heads:
            raise ConfigError(f"model option dim={self.dim} is not divisible by heads={self.heads}")


class VideoViT(nn.Module):
    """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""

    def __init__(self, config: VideoViTConfig):
        super().__init__()
        self.config = c = config
        summary = c.head == "summary_token"
        temporal, n_div = c.temporal, c.n_div
        if summary and temporal == "space":
            temporal, n_div = "mixing", 0
        self.encoder = ViTEncoder(
            img_size=c.img_size, num_frames=c.num_frames, patch_size=c.patch_size, dim=c.dim, depth=c.depth,
            heads=c.heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, temporal=temporal, n_div=n_div,
            mixing_layout=c.mixing_layout, summary_token=summary, attn_drop_rate=c.attn_drop_rate,
            drop_path_rate=c.drop_path_rate, norm_eps=c.norm_eps,
        )
        if c.head == "temporal_attention":
            self.head = TemporalAttentionAggregation(c.dim, c.num_classes, c.heads, c.mlp_ratio, c.drop_rate,
                                                     c.norm_eps)
        else:
            self.head = TemporalAveragePooling(c.dim, c.num_classes, c.drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> per-frame CLS features ``(B, T, C)`` (after the final LayerNorm)."""
        return self.encoder(x)[:, :, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""
        return self.head(self.forward_features(x))


register("timesformer_b16", VideoViT, VideoViTConfig(temporal="divided", head="average", drop_rate=0.0))
register("vit_b16_frames", VideoViT, VideoViTConfig(temporal="space", head="average"))
