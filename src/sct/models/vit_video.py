"""ViT video models: a frame-wise ViT encoder plus a clip head.

- ``VideoViT``: the variants are config values (``temporal``: how frames interact inside the encoder,
  ``head``: how the per-frame CLS features become clip logits). ``xvit.py`` registers X-ViT and TSM-ViT;
  this module registers TimeSformer and the plain per-frame ViT.
- ``ViTSCT``: the baseline of SCT's Tables 1 and 4, SCT with its ViLT/LSH frame encoder replaced by a
  ViT (patch 16/12/8, B or L): ViT frame encoder -> shifted MSA -> SCT's clip encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sct.models.attention.mixing import LAYOUTS as MIXING_LAYOUTS
from sct.models.attention.shifted import TEMPORAL_KINDS as SCT_TEMPORAL_KINDS
from sct.models.attention.shifted import temporal_attention
from sct.models.blocks import TransformerLayer, drop_path_rates, init_weights, parameters_named
from sct.models.heads import ClipEncoder, TemporalAttentionAggregation, TemporalAveragePooling
from sct.models.options import check, check_choice, check_positive_ints, check_rates
from sct.models.registry import register
from sct.models.vit_encoder import TEMPORAL_KINDS, ViTBackboneConfig, ViTEncoder

HEADS = ("temporal_attention", "summary_token", "average")
# Learnt tokens and embeddings of the ViT encoder and the heads: never weight-decayed.
NO_DECAY_LEAVES = ("cls_token", "pos_embed", "temporal_embed", "token")


@dataclass
class VideoViTConfig(ViTBackboneConfig):
    """A ViT on video frames: X-ViT, TSM-ViT, TimeSformer or the plain per-frame ViT. The frame ViT's
    fields (``img_size``, ``patch_size``, ``dim``, ``depth``, ``heads``, ...) are ``ViTBackboneConfig``'s.

    - ``temporal``: frame interaction inside the encoder, ``space`` | ``mixing`` (X-ViT) | ``tsm``
      (TSM-ViT) | ``divided`` (TimeSformer).
    - ``n_div``: 1/n_div of the channels come from each neighbouring frame (``mixing``: of the keys and
      values; ``tsm``: of the tokens); 0 turns the shift off. X-ViT uses 8 on Kinetics, 4 on SSv2.
    - ``mixing_layout``: ``global`` (the public X-ViT code; its checkpoints) | ``per_head`` (the paper).
    - ``head``: ``temporal_attention`` (X-ViT) | ``average`` (TSM; for ``divided`` the frames hold one
      clip CLS, so this is TimeSformer's head) | ``summary_token`` (X-ViT's summary tokens added to every
      mixing attention layer, then ``average``).
    - ``drop_rate``: dropout before the classifier (X-ViT's temporal attention head uses 0.5).
    - ``frame_drop_rate``: dropout on each frame's CLS feature before the clip head. X-ViT's public code
      (github.com/1adrianb/video-transformers, ``XVIT._prepare_classifier``) replaces the ViT's classifier
      by ``Dropout(MODEL.DROPOUT_RATE)``, 0.5 in its Kinetics and SSv2 configs, and feeds the frame
      features through it to the temporal attention head; ``xvit_b16`` sets 0.5.
    """

    num_classes: int = 400
    num_frames: int = 8
    temporal: str = "mixing"
    n_div: int = 8
    mixing_layout: str = "global"
    head: str = "temporal_attention"
    drop_rate: float = 0.5
    frame_drop_rate: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(self, ("num_classes", "num_frames"))
        check_rates(self, ("drop_rate", "frame_drop_rate"))
        check_choice(self, "temporal", TEMPORAL_KINDS)
        check_choice(self, "head", HEADS)
        check_choice(self, "mixing_layout", MIXING_LAYOUTS)
        check_positive_ints(self, ("n_div",), minimum=0)
        check(self.head != "summary_token" or self.temporal in ("mixing", "space"), self, "head",
              f"not 'summary_token' with temporal={self.temporal!r} (it needs 'mixing' or 'space')")


class VideoViT(nn.Module):
    """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""

    def __init__(self, config: VideoViTConfig):
        super().__init__()
        self.config = c = config
        summary = c.head == "summary_token"
        temporal, n_div = c.temporal, c.n_div
        if summary and temporal == "space":
            temporal, n_div = "mixing", 0
        self.encoder = ViTEncoder.from_config(c, c.num_frames, temporal=temporal, n_div=n_div,
                                              mixing_layout=c.mixing_layout, summary_token=summary)
        if c.head == "temporal_attention":
            self.head = TemporalAttentionAggregation(c.dim, c.num_classes, c.heads, c.mlp_ratio, c.drop_rate,
                                                     c.norm_eps)
        else:
            self.head = TemporalAveragePooling(c.dim, c.num_classes, c.drop_rate)
        self.frame_drop = nn.Dropout(c.frame_drop_rate)
        init_weights(self.head, c.weight_init)

    def no_weight_decay(self) -> set[str]:
        """The encoder's CLS, position and temporal embeddings and the aggregation head's token."""
        return parameters_named(self, NO_DECAY_LEAVES)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> per-frame CLS features ``(B, T, C)`` (after the final LayerNorm)."""
        return self.encoder(x)[:, :, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(B, T, C)`` -> logits ``(B, num_classes)`` (frame dropout, then the head)."""
        return self.head(self.frame_drop(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def relevance(self, frames: int, size: tuple[int, int], reading: str = "keys") -> tuple[torch.Tensor, torch.Tensor]:
        """Attention rollout of the clip just run under ``recording``: ``(relevance (T, g, g)`` over the
        patch grid, ``frame weights (T,))`` from the head."""
        weights = self.head.frame_weights(frames)
        return encoder_relevance(self.encoder, weights, [], reading), weights


@dataclass
class ViTSCTConfig(ViTBackboneConfig):
    """SCT Tables 1/4: ViT-B (or L) frames (``ViTBackboneConfig``'s fields) -> ``temporal_depth`` shifted-MSA
    layers -> clip encoder.

    Everything after the frame encoder is SCT's (Table 3: shifted MSA with 8 heads of 64, clip encoder
    D' = 192, MLP 768, 4 layers, 8 heads; the shifted layer keeps its attention residual as SCT's does
    by default, see docs/architecture.md reading 4; ``temporal_residual=False`` is Eq. 7 literally).
    """

    num_classes: int = 400
    num_frames: int = 24
    temporal_kind: str = "shifted"
    temporal_depth: int = 1
    temporal_heads: int = 8
    temporal_dim_head: int | None = 64
    shift_frames: int = 1
    temporal_residual: bool = True
    clip_dim: int = 192
    clip_mlp_dim: int = 768
    clip_depth: int = 4
    clip_heads: int = 8
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(self, ("num_classes", "num_frames"))
        check_rates(self, ("drop_rate",))
        check_choice(self, "temporal_kind", SCT_TEMPORAL_KINDS)
        check(0 <= self.shift_frames < self.num_frames, self, "shift_frames", f"in [0, num_frames={self.num_frames})")
        check_positive_ints(self, ("temporal_heads", "clip_dim", "clip_mlp_dim", "clip_heads"))
        check_positive_ints(self, ("temporal_depth", "clip_depth"), minimum=0)
        check(self.temporal_dim_head is not None or self.dim % self.temporal_heads == 0, self, "temporal_heads",
              f"a divisor of dim={self.dim} (or set temporal_dim_head)")
        check(self.clip_dim % self.clip_heads == 0, self, "clip_heads", f"a divisor of clip_dim={self.clip_dim}")


class ViTSCT(nn.Module):
    """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""

    def __init__(self, config: ViTSCTConfig):
        super().__init__()
        self.config = c = config
        # One stochastic-depth schedule over the frame encoder, the shifted layers and the clip encoder, as SCT.
        rates = drop_path_rates(c.drop_path_rate, c.depth + c.temporal_depth + c.clip_depth)
        self.encoder = ViTEncoder.from_config(c, c.num_frames, temporal="space", drop_path_rate=rates[:c.depth])
        kind = "space" if c.shift_frames == 0 and c.temporal_kind == "shifted" else c.temporal_kind
        self.temporal = nn.ModuleList(
            TransformerLayer(c.dim, temporal_attention(kind, c.dim, c.temporal_heads, c.temporal_dim_head,
                                                       c.shift_frames),
                             int(c.dim * c.mlp_ratio), drop_path=rates[c.depth + i], norm_eps=c.norm_eps,
                             residual=c.temporal_residual)
            for i in range(c.temporal_depth)
        )
        self.clip_encoder = ClipEncoder(c.dim, c.clip_dim, c.clip_depth, c.clip_heads, c.clip_mlp_dim,
                                        c.num_frames, c.num_classes, drop_rate=c.drop_rate,
                                        drop_path=rates[c.depth + c.temporal_depth:])
        init_weights(self.temporal, c.weight_init)
        init_weights(self.clip_encoder, c.weight_init)

    def no_weight_decay(self) -> set[str]:
        """The encoder's CLS, position and temporal embeddings, the clip encoder's [CLS] and ``E'_pos``."""
        return parameters_named(self, NO_DECAY_LEAVES)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> per-frame CLS features after the shifted MSA ``(B, T, C)``."""
        tokens = self.encoder(x)
        for layer in self.temporal:
            tokens = layer(tokens)
        return tokens[:, :, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(B, T, C)`` -> logits ``(B, num_classes)`` (SCT's clip encoder)."""
        return self.clip_encoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def relevance(self, frames: int, size: tuple[int, int], reading: str = "keys") -> tuple[torch.Tensor, torch.Tensor]:
        """Attention rollout of the clip just run under ``recording``: ``(relevance (T, g, g)`` over the
        patch grid, ``frame weights (T,))`` from the clip encoder, through the shifted layers and the ViT."""
        weights = self.clip_encoder.frame_weights(frames)
        return encoder_relevance(self.encoder, weights, list(self.temporal), reading), weights


def encoder_relevance(encoder: ViTEncoder, weights: torch.Tensor, temporal: list[TransformerLayer],
                      reading: str) -> torch.Tensor:
    """Relevance ``(T, g, g)`` over the patch grid: the frames' CLS tokens seeded with ``weights (T,)``, then
    back through ``temporal`` layers (last first) and the encoder."""
    n_tokens = encoder.pos_embed.shape[1]
    r = torch.zeros(len(weights), n_tokens, dtype=torch.float64)
    r[:, 0] = weights
    for layer in reversed(temporal):
        r = layer.relevance(r, reading)
    r = encoder.relevance(r, reading)
    grid = int(round((n_tokens - 1) ** 0.5))
    return r[:, 1:].reshape(len(weights), grid, grid)


# TimeSformer checkpoints -> ``timesformer_b16``'s names: (pattern, replacement) on Hugging Face's
# ``TimesformerForVideoClassification`` and facebookresearch/TimeSformer's names (``sct.models.weights``
# applies them, the first matching rule per key).
TIMESFORMER_KEYS = [
    (r"^timesformer\.embeddings\.cls_token$", "encoder.cls_token"),
    (r"^timesformer\.embeddings\.position_embeddings$", "encoder.pos_embed"),
    (r"^timesformer\.embeddings\.time_embeddings$", "encoder.temporal_embed"),
    (r"^timesformer\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_layernorm\.", r"encoder.blocks.\1.attn.temporal_norm."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.attention\.qkv\.",
     r"encoder.blocks.\1.attn.temporal_attn.qkv."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.output\.dense\.",
     r"encoder.blocks.\1.attn.temporal_attn.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_dense\.", r"encoder.blocks.\1.attn.temporal_fc."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.blocks.\1.attn.norm."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.attention\.attention\.qkv\.", r"encoder.blocks.\1.attn.attn.qkv."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.blocks.\1.attn.attn.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.blocks.\1.norm2."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.blocks.\1.mlp.fc1."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.blocks.\1.mlp.fc2."),
    (r"^timesformer\.layernorm\.", "encoder.norm."),
    (r"^classifier\.", "head.fc."),
    (r"^model\.(cls_token|pos_embed|patch_embed\.proj\.\w+)$", r"encoder.\1"),
    (r"^model\.time_embed$", "encoder.temporal_embed"),
    (r"^model\.blocks\.(\d+)\.temporal_norm1\.", r"encoder.blocks.\1.attn.temporal_norm."),
    (r"^model\.blocks\.(\d+)\.temporal_attn\.", r"encoder.blocks.\1.attn.temporal_attn."),
    (r"^model\.blocks\.(\d+)\.temporal_fc\.", r"encoder.blocks.\1.attn.temporal_fc."),
    (r"^model\.blocks\.(\d+)\.norm1\.", r"encoder.blocks.\1.attn.norm."),
    (r"^model\.blocks\.(\d+)\.attn\.", r"encoder.blocks.\1.attn.attn."),
    (r"^model\.blocks\.(\d+)\.(norm2|mlp)\.", r"encoder.blocks.\1.\2."),
    (r"^model\.norm\.", "encoder.norm."),
    (r"^model\.head\.", "head.fc."),
]

register("timesformer_b16", VideoViT, VideoViTConfig(temporal="divided", head="average", drop_rate=0.0))
register("vit_b16_frames", VideoViT, VideoViTConfig(temporal="space", head="average"))
register("vit_b16_sct", ViTSCT, ViTSCTConfig(patch_size=16))
register("vit_b12_sct", ViTSCT, ViTSCTConfig(patch_size=12))
register("vit_b8_sct", ViTSCT, ViTSCTConfig(patch_size=8))
register("vit_l16_sct", ViTSCT, ViTSCTConfig(patch_size=16, dim=1024, depth=24, heads=16))
