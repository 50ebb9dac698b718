"""The Shifted Chunk Transformer (Zha et al., NeurIPS 2021): frame-encoder blocks + clip encoder.

Frame encoder (per frame, batched as ``(B*T, ...)``): tiny patch embedding, then ``num_blocks`` blocks;
block b runs, in order and when present,
  local layers (ViLT, Eq. 1-2) -> global layer (image LSH, Eq. 3) -> linear pooling (Eq. 4)
  -> temporal layers (shifted MSA, Eq. 5-7) over ``(B, T, 1 + N, C)`` with a [CLS] per frame.
The frames' [CLS] features then go through the clip encoder (Eq. 8). docs/architecture.md maps each
equation to code and explains the readings chosen where the paper is silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.errors import ConfigError
from sct.models.attention.shifted import TEMPORAL_KINDS, temporal_attention
from sct.models.blocks import WEIGHT_INITS, PatchEmbed, TransformerLayer, init_weights
from sct.models.heads import ClipEncoder
from sct.models.image_layers import GLOBAL_KINDS, LOCAL_KINDS, image_layers
from sct.models.pooling import LinearPooling
from sct.models.registry import register


@dataclass
class SCTConfig:
    """Every hyper-parameter and ablation of the paper as a value (Tables 3-5, 8 and the appendix).

    ``heads`` / ``dim_heads`` are per component, in Table 3's order: ViLT, image LSH (also the dense
    global layer), temporal (shifted MSA), clip encoder. ``dim_heads`` entries of None mean width // heads.
    Stage widths: D doubles at each linear pooling; every MLP is ``mlp_ratio`` x its width.
    ``weight_init`` (the paper is silent; it fine-tunes ImageNet weights): ``xavier`` lets the narrow
    models train from scratch, ``trunc_normal`` is timm's std-0.02 init (see ``blocks.init_weights``).
    """

    num_classes: int = 400
    num_frames: int = 24
    img_size: int = 224
    in_chans: int = 3
    patch_size: int = 4
    chunk_size: int = 7
    embed_dim: int = 96
    mlp_ratio: float = 4.0
    vilt_depth: int = 4
    heads: tuple[int, int, int, int] = (4, 6, 8, 8)
    dim_heads: tuple[int | None, int | None, int | None, int | None] = (None, None, 64, None)
    num_blocks: int = 4
    num_poolings: int = 3
    local_blocks: int = 1
    global_blocks: int = 1
    local_kind: str = "vilt"
    global_kind: str = "lsh"
    temporal_kind: str = "shifted"
    temporal_depth: int = 1
    shift_frames: int = 1
    temporal_residual: bool = True
    lsh_hashes: int = 2
    lsh_buckets: int | None = None
    lsh_chunk_length: int = 64
    clip_dim: int = 192
    clip_mlp_dim: int = 768
    clip_depth: int = 4
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    weight_init: str = "xavier"
    seed: int = 0

    def __post_init__(self):
        self.heads = tuple(self.heads)
        self.dim_heads = tuple(self.dim_heads)
        positive = ("num_classes", "num_frames", "img_size", "in_chans", "patch_size", "chunk_size", "embed_dim",
                    "num_blocks", "clip_dim", "clip_mlp_dim", "lsh_hashes", "lsh_chunk_length")
        for name in positive:
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "a positive integer")
        for name in ("vilt_depth", "num_poolings", "local_blocks", "global_blocks", "temporal_depth",
                     "shift_frames", "clip_depth"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name, "an integer >= 0")
        _check(self.mlp_ratio > 0, "mlp_ratio", "> 0")
        for name in ("drop_rate", "drop_path_rate"):
            _check(0.0 <= getattr(self, name) < 1.0, name, "in [0, 1)")
        _check(self.local_kind in LOCAL_KINDS, "local_kind", f"one of {LOCAL_KINDS}")
        _check(self.global_kind in GLOBAL_KINDS, "global_kind", f"one of {GLOBAL_KINDS}")
        _check(self.weight_init in WEIGHT_INITS, "weight_init", f"one of {WEIGHT_INITS}")
        _check(self.temporal_kind in TEMPORAL_KINDS, "temporal_kind", f"one of {TEMPORAL_KINDS}")
        for name in ("num_poolings", "local_blocks", "global_blocks"):
            _check(getattr(self, name) <= self.num_blocks, name, f"<= num_blocks ({self.num_blocks})")
        _check(self.local_kind == "none" or self.vilt_depth >= 1, "vilt_depth", ">= 1 unless local_kind='none'")
        _check(self.img_size >= self.patch_size, "img_size", f">= patch_size ({self.patch_size})")
        _check(self.lsh_buckets is None or (self.lsh_buckets >= 2 and self.lsh_buckets % 2 == 0),
               "lsh_buckets", "None or an even integer >= 2")
        _check(len(self.heads) == 4 and all(isinstance(h, int) and h >= 1 for h in self.heads),
               "heads", "four positive integers (ViLT, LSH, temporal, clip)")
        _check(len(self.dim_heads) == 4 and all(d is None or (isinstance(d, int) and d >= 1) for d in self.dim_heads),
               "dim_heads", "four entries, each None or a positive integer")
        widths = {0: [self.embed_dim], 1: [self.embed_dim], 2: self.temporal_widths(), 3: [self.clip_dim]}
        for i, component in enumerate(("ViLT", "LSH", "temporal", "clip")):
            if self.dim_heads[i] is None:
                for w in widths[i]:
                    _check(w % self.heads[i] == 0, "heads",
                           f"a divisor of the {component} width {w} (or set dim_heads[{i}])")

    def block_width(self, block: int) -> int:
        """Width of block ``block``'s image part (before its pooling)."""
        return self.embed_dim * 2 ** min(block, self.num_poolings)

    def temporal_widths(self) -> list[int]:
        """Width of each block's temporal layers (after the block's pooling, if any)."""
        return [self.block_width(b + 1) if b < self.num_poolings else self.block_width(b)
                for b in range(self.num_blocks)]

    @property
    def effective_temporal_kind(self) -> str:
        """Table 5: zero shifted layers or zero shifted frames mean one standard MSA (``space``)."""
        if self.temporal_kind == "shifted" and (self.temporal_depth == 0 or self.shift_frames == 0):
            return "space"
        return self.temporal_kind


def _check(ok: bool, field: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"SCTConfig.{field}: expected {expected}")


class FrameBlock(nn.Module):
    """One block: local -> global -> pooling -> temporal layers.

    ``forward(grid (B*T, H, W, C), cls (B*T, C) | None, frames) -> (grid (B*T, H', W', C'), cls (B*T, C'))``.
    The block that sees no [CLS] yet introduces one (Eq. 5); later poolings carry it through ``E_t``.
    """

    def __init__(self, local: nn.Module | None, global_: nn.Module | None, pool: LinearPooling | None,
                 temporal: list[TransformerLayer], cls_dim: int | None):
        super().__init__()
        self.local, self.global_, self.pool = local, global_, pool
        self.temporal = nn.ModuleList(temporal)
        self.cls_token = None
        if cls_dim is not None:
            self.cls_token = nn.Parameter(torch.zeros(1, cls_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, grid: torch.Tensor, cls: torch.Tensor | None, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        for part in (self.local, self.global_):
            if part is not None:
                grid, cls = part(grid, cls)
        if self.pool is not None:
            grid = self.pool(grid)
            cls = None if cls is None else self.pool.pool_token(cls)
        if cls is None:
            cls = self.cls_token.expand(grid.shape[0], -1)
        h, w = grid.shape[1:3]
        tokens = torch.cat([cls[:, None], rearrange(grid, "n h w c -> n (h w) c")], dim=1)
        tokens = rearrange(tokens, "(b t) n c -> b t n c", t=frames)
        for layer in self.temporal:
            tokens = layer(tokens)
        tokens = rearrange(tokens, "b t n c -> (b t) n c")
        return rearrange(tokens[:, 1:], "n (h w) c -> n h w c", h=h, w=w), tokens[:, 0]


def frame_pathway(c: SCTConfig, extra_depth: int = 0) -> tuple[PatchEmbed, nn.ModuleList, list[float]]:
    """The frame pathway of ``c``: patch embedding and blocks, plus the drop-path rates left for the
    ``extra_depth`` layers that follow it (stochastic depth grows linearly over all layers)."""
    patch_embed = PatchEmbed(c.patch_size, c.embed_dim, c.in_chans)
    n_temporal = max(c.temporal_depth, 1)
    depths = [((c.vilt_depth if b < c.local_blocks and c.local_kind != "none" else 0)
               + (1 if b < c.global_blocks and c.global_kind != "none" else 0) + n_temporal)
              for b in range(c.num_blocks)]
    rates = torch.linspace(0, c.drop_path_rate, sum(depths) + extra_depth).tolist()
    blocks, used, has_cls = [], 0, False
    lsh = {"n_hashes": c.lsh_hashes, "n_buckets": c.lsh_buckets, "chunk_length": c.lsh_chunk_length}
    for b in range(c.num_blocks):
        width = c.block_width(b)
        mlp = int(width * c.mlp_ratio)
        local = global_ = None
        if b < c.local_blocks:
            local = image_layers(c.local_kind, c.vilt_depth, width, c.heads[0], c.dim_heads[0], mlp,
                                 (c.chunk_size, c.chunk_size), lsh, rates[used:used + c.vilt_depth],
                                 seed=c.seed + 100 * b)
            used += c.vilt_depth if local is not None else 0
        if b < c.global_blocks:
            global_ = image_layers(c.global_kind, 1, width, c.heads[1], c.dim_heads[1], mlp,
                                   (c.chunk_size, c.chunk_size), lsh, rates[used:used + 1],
                                   seed=c.seed + 100 * b + 50)
            used += 1 if global_ is not None else 0
        pool = LinearPooling(width) if b < c.num_poolings else None
        t_width = c.temporal_widths()[b]
        temporal = [
            TransformerLayer(t_width, temporal_attention(c.effective_temporal_kind, t_width, c.heads[2],
                                                         c.dim_heads[2], c.shift_frames),
                             int(t_width * c.mlp_ratio), drop_path=rates[used + i], residual=c.temporal_residual)
            for i in range(n_temporal)
        ]
        used += n_temporal
        blocks.append(FrameBlock(local, global_, pool, temporal, None if has_cls else t_width))
        has_cls = True
    return patch_embed, nn.ModuleList(blocks), rates[used:]


def frame_features(patch_embed: PatchEmbed, blocks: nn.ModuleList, patch_size: int, x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` -> per-frame [CLS] features ``(B, T, C)`` (Eq. 7's ``a'_{t,1}``)."""
    frames = x.shape[2]
    x = rearrange(x, "b c t h w -> (b t) c h w")
    x = F.pad(x, (0, -x.shape[-1] % patch_size, 0, -x.shape[-2] % patch_size))
    grid, cls = patch_embed(x), None
    for block in blocks:
        grid, cls = block(grid, cls, frames)
    return rearrange(cls, "(b t) c -> b t c", t=frames)


class SCT(nn.Module):
    """Shifted Chunk Transformer: ``(B, 3, T, H, W) -> (B, num_classes)``. Any H, W (zero padding)."""

    def __init__(self, config: SCTConfig):
        super().__init__()
        self.config = c = config
        self.patch_embed, self.blocks, rates = frame_pathway(c, extra_depth=c.clip_depth)
        self.num_features = c.temporal_widths()[-1]
        self.clip_encoder = ClipEncoder(self.num_features, c.clip_dim, c.clip_depth, c.heads[3], c.clip_mlp_dim,
                                        c.num_frames, c.num_classes, c.dim_heads[3], c.drop_rate, rates)
        init_weights(self, c.weight_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> per-frame [CLS] features ``(B, T, C)`` (Eq. 7's ``a'_{t,1}``)."""
        return frame_features(self.patch_embed, self.blocks, self.config.patch_size, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(B, T, C)`` -> logits ``(B, num_classes)`` (clip encoder, Eq. 8)."""
        return self.clip_encoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` normalised frames -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


SCT_S = SCTConfig()
register("sct_s", SCT, SCT_S)
register("sct_m", SCT, dataclasses.replace(SCT_S, embed_dim=128, vilt_depth=6, heads=(4, 8, 8, 8)))
register("sct_l", SCT, dataclasses.replace(SCT_S, embed_dim=192, heads=(4, 6, 8, 8)))
register("sct_tiny", SCT, dataclasses.replace(
    SCT_S, num_classes=10, num_frames=16, img_size=64, chunk_size=4, embed_dim=32, vilt_depth=1, heads=(2, 2, 2, 2),
    dim_heads=(None, None, None, None), num_blocks=2, num_poolings=2, lsh_hashes=1, lsh_chunk_length=32,
    clip_dim=64, clip_mlp_dim=128, clip_depth=1))
