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

from sct.models.attention.lsh import LSHConfig
from sct.models.attention.lsh_hashing import is_bucket_spec
from sct.models.attention.shifted import SHIFT_MODES, TEMPORAL_KINDS, temporal_attention
from sct.models.blocks import (
    WEIGHT_INITS,
    PatchEmbed,
    TransformerLayer,
    drop_path_rates,
    init_weights,
    parameters_named,
)
from sct.models.heads import ClipEncoder
from sct.models.image_layers import GLOBAL_KINDS, LOCAL_KINDS, image_layers
from sct.models.options import check, check_choice, check_positive_ints, check_rates
from sct.models.pooling import LinearPooling
from sct.models.registry import register

# The four components with their own head count, in the order of ``SCTConfig.heads`` (Table 3's order).
COMPONENTS = ("ViLT", "LSH", "temporal", "clip")
# Named per-component head fields: ``<prefix>_heads`` / ``<prefix>_dim_head`` read and set entry i of the tuples.
HEAD_PREFIXES = ("vilt", "lsh", "temporal", "clip")


def _entry(tuple_field: str, index: int, doc: str) -> property:
    return property(lambda self: getattr(self, tuple_field)[index], doc=doc)


@dataclass
class SCTConfig:
    """Every hyper-parameter and ablation of the paper as a value (Tables 3-5, 8 and the appendix).

    ``heads`` / ``dim_heads`` are per component, in Table 3's order: ViLT, image LSH (also the dense
    global layer), temporal (shifted MSA), clip encoder. ``dim_heads`` entries of None mean width // heads.
    Stage widths: D doubles at each linear pooling; every MLP is ``mlp_ratio`` x its width.
    ``weight_init`` (the paper is silent; it fine-tunes ImageNet weights): ``xavier`` lets the narrow
    models train from scratch, ``trunc_normal`` is timm's std-0.02 init (see ``blocks.init_weights``).
    ``shift_mode``: ``cyclic`` is Eq. 6 (frame 0 takes its keys from frame T - s); ``causal`` gives the
    first s frames their own keys, so each frame's features depend only on it and earlier frames and a
    stream computes them once per frame (docs/streaming.md).
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
    shift_mode: str = "cyclic"
    temporal_residual: bool = True
    lsh_hashes: int = 2
    lsh_buckets: int | tuple[int, ...] | None = None
    lsh_factorise_above: int | None = None
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
        check_positive_ints(self, ("num_classes", "num_frames", "img_size", "in_chans", "patch_size", "chunk_size",
                                   "embed_dim", "num_blocks", "clip_dim", "clip_mlp_dim", "lsh_hashes",
                                   "lsh_chunk_length"))
        check_positive_ints(self, ("vilt_depth", "num_poolings", "local_blocks", "global_blocks", "temporal_depth",
                                   "shift_frames", "clip_depth"), minimum=0)
        check(self.mlp_ratio > 0, self, "mlp_ratio", "> 0")
        check_rates(self, ("drop_rate", "drop_path_rate"))
        for field, choices in (("local_kind", LOCAL_KINDS), ("global_kind", GLOBAL_KINDS),
                               ("weight_init", WEIGHT_INITS), ("temporal_kind", TEMPORAL_KINDS),
                               ("shift_mode", SHIFT_MODES)):
            check_choice(self, field, choices)
        for name in ("num_poolings", "local_blocks", "global_blocks"):
            check(getattr(self, name) <= self.num_blocks, self, name, f"<= num_blocks ({self.num_blocks})")
        check(self.local_kind == "none" or self.vilt_depth >= 1, self, "vilt_depth", ">= 1 unless local_kind='none'")
        check(self.img_size >= self.patch_size, self, "img_size", f">= patch_size ({self.patch_size})")
        if isinstance(self.lsh_buckets, list):
            self.lsh_buckets = tuple(self.lsh_buckets)
        check(self.lsh_buckets is None or is_bucket_spec(self.lsh_buckets), self,
              "lsh_buckets", "None, an even integer >= 2, or a list of them (factorised buckets)")
        check(self.lsh_factorise_above is None or self.lsh_factorise_above >= 2, self, "lsh_factorise_above",
              "None or an integer >= 2")
        check(len(self.heads) == 4 and all(isinstance(h, int) and h >= 1 for h in self.heads), self,
              "heads", "four positive integers (ViLT, LSH, temporal, clip)")
        check(len(self.dim_heads) == 4 and all(d is None or (isinstance(d, int) and d >= 1) for d in self.dim_heads),
              self, "dim_heads", "four entries, each None or a positive integer")
        # A roll by a multiple of the clip would silently be space attention; one frame has nothing to shift to.
        check(self.num_frames == 1 or self.shift_frames < self.num_frames, self, "shift_frames",
              f"< num_frames ({self.num_frames})")
        for i, (component, widths) in enumerate(zip(COMPONENTS, self.component_widths())):
            if self.dim_heads[i] is None:
                for w in widths:
                    check(w % self.heads[i] == 0, self, "heads",
                          f"a divisor of every {component} width {sorted(set(widths))} (or set dim_heads[{i}])")

    vilt_heads = _entry("heads", 0, "ViLT's head count (``heads[0]``).")
    lsh_heads = _entry("heads", 1, "The image LSH (or dense global) layer's head count (``heads[1]``).")
    temporal_heads = _entry("heads", 2, "The shifted MSA's head count (``heads[2]``).")
    clip_heads = _entry("heads", 3, "The clip encoder's head count (``heads[3]``).")
    vilt_dim_head = _entry("dim_heads", 0, "ViLT's head width, None = width / heads (``dim_heads[0]``).")
    lsh_dim_head = _entry("dim_heads", 1, "The global layer's head width (``dim_heads[1]``).")
    temporal_dim_head = _entry("dim_heads", 2, "The shifted MSA's head width (``dim_heads[2]``).")
    clip_dim_head = _entry("dim_heads", 3, "The clip encoder's head width (``dim_heads[3]``).")

    def named_fields(self, fields: dict) -> dict:
        """``fields`` with the named head fields (``temporal_heads=8``, ``vilt_dim_head=32``) folded into
        ``heads`` / ``dim_heads`` (the registry calls this, so both spellings are config keys)."""
        fields = dict(fields)
        for tuple_field, suffix in (("heads", "_heads"), ("dim_heads", "_dim_head")):
            values = list(fields.get(tuple_field, getattr(self, tuple_field)))
            named = {i: fields.pop(p + suffix) for i, p in enumerate(HEAD_PREFIXES) if p + suffix in fields}
            if named:
                fields[tuple_field] = tuple(named.get(i, v) for i, v in enumerate(values))
        return fields

    def component_widths(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """The widths each component's attention runs at, in ``COMPONENTS`` order (empty when absent)."""
        local = [self.block_width(b) for b in range(self.local_blocks)] if self.local_kind != "none" else []
        global_ = [self.block_width(b) for b in range(self.global_blocks)] if self.global_kind != "none" else []
        return local, global_, self.temporal_widths(), [self.clip_dim]

    @property
    def lsh(self) -> LSHConfig:
        """The image LSH layers' settings (``lsh_hashes``, ``lsh_buckets``, ``lsh_chunk_length``,
        ``lsh_factorise_above``)."""
        return LSHConfig(n_hashes=self.lsh_hashes, n_buckets=self.lsh_buckets, chunk_length=self.lsh_chunk_length,
                         factorise_above=self.lsh_factorise_above)

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


def literal(config: SCTConfig) -> SCTConfig:
    """The paper's letter (§4): every block is M ViLT layers, an image LSH layer and a linear pooling,
    then its shifted MSA; every head is width / heads wide (Table 3 gives head counts only)."""
    n = config.num_blocks
    return dataclasses.replace(config, local_blocks=n, global_blocks=n, num_poolings=n,
                               dim_heads=(None, None, None, None))


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
        tokens, (h, w) = self.frame_part(grid, cls, frames)
        tokens = rearrange(tokens, "(b t) n c -> b t n c", t=frames)
        for layer in self.temporal:
            tokens = layer(tokens)
        return split_tokens(rearrange(tokens, "b t n c -> (b t) n c"), h, w)

    def frame_part(self, grid: torch.Tensor, cls: torch.Tensor | None,
                   frames: int = 1) -> tuple[torch.Tensor, tuple[int, int]]:
        """The block's per-frame work, before its temporal layers: ``grid (B*T, H, W, C)``, ``cls (B*T, C)``
        or None -> tokens ``(B*T, 1 + H'W', C')`` ([CLS] first) and the grid size ``(H', W')``. ``frames``
        is T, which groups rows by clip for per-clip stochastic depth."""
        for part in (self.local, self.global_):
            if part is not None:
                grid, cls = part(grid, cls, frames)
        if self.pool is not None:
            grid = self.pool(grid)
            cls = None if cls is None else self.pool.pool_token(cls)
        if cls is None:
            cls = self.cls_token.expand(grid.shape[0], -1)
        tokens = torch.cat([cls[:, None], rearrange(grid, "n h w c -> n (h w) c")], dim=1)
        return tokens, tuple(grid.shape[1:3])

    def relevance(self, r_cls: torch.Tensor, r: torch.Tensor, grid: tuple[int, int],
                  reading: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Rollout relevance of one clip from the block's output, [CLS] ``(T,)`` and grid ``(T, h', w')``, to its
        input grid ``grid``: temporal layers, pooling, global and local parts, each by its own rule. The
        returned [CLS] relevance is None where the [CLS] starts (a learnt token: its relevance leaves the input)."""
        frames = r.shape[0]
        tokens = torch.cat([r_cls[:, None], r.reshape(frames, -1)], dim=1)
        for layer in reversed(self.temporal):
            tokens = layer.relevance(tokens, reading)
        r_cls, r = (None if self.cls_token is not None else tokens[:, 0]), tokens[:, 1:].reshape(r.shape)
        if self.pool is not None:
            r = self.pool.relevance(r, grid)
        for part in (self.global_, self.local):
            if part is not None:
                r_cls, r = part.relevance(r_cls, r)
        return r_cls, r


def split_tokens(tokens: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``(N, 1 + h*w, C)`` -> grid ``(N, h, w, C)`` and [CLS] ``(N, C)``."""
    return rearrange(tokens[:, 1:], "n (h w) c -> n h w c", h=h, w=w), tokens[:, 0]


def frame_pathway(c: SCTConfig, extra_depth: int = 0) -> tuple[PatchEmbed, nn.ModuleList, list[float]]:
    """The frame pathway of ``c``: patch embedding and blocks, plus the drop-path rates left for the
    ``extra_depth`` layers that follow it (stochastic depth grows linearly over all layers)."""
    patch_embed = PatchEmbed(c.patch_size, c.embed_dim, c.in_chans)
    n_temporal = max(c.temporal_depth, 1)
    depths = [((c.vilt_depth if b < c.local_blocks and c.local_kind != "none" else 0)
               + (1 if b < c.global_blocks and c.global_kind != "none" else 0) + n_temporal)
              for b in range(c.num_blocks)]
    rates = drop_path_rates(c.drop_path_rate, sum(depths) + extra_depth)
    blocks, used, has_cls = [], 0, False
    lsh = c.lsh
    for b in range(c.num_blocks):
        width = c.block_width(b)
        mlp = int(width * c.mlp_ratio)
        local = global_ = None
        if b < c.local_blocks:
            local = image_layers(c.local_kind, c.vilt_depth, width, c.vilt_heads, c.vilt_dim_head, mlp,
                                 (c.chunk_size, c.chunk_size), lsh, rates[used:used + c.vilt_depth],
                                 seed=c.seed + 100 * b)
            used += c.vilt_depth if local is not None else 0
        if b < c.global_blocks:
            global_ = image_layers(c.global_kind, 1, width, c.lsh_heads, c.lsh_dim_head, mlp,
                                   (c.chunk_size, c.chunk_size), lsh, rates[used:used + 1],
                                   seed=c.seed + 100 * b + 50)
            used += 1 if global_ is not None else 0
        pool = LinearPooling(width) if b < c.num_poolings else None
        t_width = c.temporal_widths()[b]
        temporal = [
            TransformerLayer(t_width, temporal_attention(c.effective_temporal_kind, t_width, c.temporal_heads,
                                                         c.temporal_dim_head, c.shift_frames, c.shift_mode),
                             int(t_width * c.mlp_ratio), drop_path=rates[used + i], residual=c.temporal_residual)
            for i in range(n_temporal)
        ]
        used += n_temporal
        blocks.append(FrameBlock(local, global_, pool, temporal, None if has_cls else t_width))
        has_cls = True
    return patch_embed, nn.ModuleList(blocks), rates[used:]


def embed_frames(patch_embed: PatchEmbed, patch_size: int, x: torch.Tensor) -> torch.Tensor:
    """Frames ``(N, 3, H, W)`` -> tiny-patch grid ``(N, H / p, W / p, C)`` (zero-padded to a multiple of p)."""
    p = patch_size
    return patch_embed(F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p)))


def frame_features(patch_embed: PatchEmbed, blocks: nn.ModuleList, patch_size: int, x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` -> per-frame [CLS] features ``(B, T, C)`` (Eq. 7's ``a'_{t,1}``)."""
    frames = x.shape[2]
    grid, cls = embed_frames(patch_embed, patch_size, rearrange(x, "b c t h w -> (b t) c h w")), None
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
        self.clip_encoder = ClipEncoder(self.num_features, c.clip_dim, c.clip_depth, c.clip_heads, c.clip_mlp_dim,
                                        c.num_frames, c.num_classes, c.clip_dim_head, c.drop_rate, rates)
        init_weights(self, c.weight_init)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, H, W)`` -> tiny-patch grid ``(N, H / p, W / p, C)`` (zero-padded to a multiple of p)."""
        return embed_frames(self.patch_embed, self.config.patch_size, x)

    # Table 3's components, by the submodule (or parameter) name that holds each one.
    components = {"patch_embed": "patch embedding", "local": "ViLT (local)", "global_": "image LSH (global)",
                  "pool": "linear pooling", "temporal": "shifted MSA", "cls_token": "shifted MSA",
                  "clip_encoder": "clip encoder"}

    def no_weight_decay(self) -> set[str]:
        """Learnt tokens and position embeddings (ViLT's chunk positions, the [CLS] tokens, ``E'_pos``)."""
        return parameters_named(self, ("pos_embed", "cls_token"))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> per-frame [CLS] features ``(B, T, C)`` (Eq. 7's ``a'_{t,1}``)."""
        return frame_features(self.patch_embed, self.blocks, self.config.patch_size, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(B, T, C)`` -> logits ``(B, num_classes)`` (clip encoder, Eq. 8)."""
        return self.clip_encoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` normalised frames -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def relevance(self, frames: int, size: tuple[int, int], reading: str = "keys") -> tuple[torch.Tensor, torch.Tensor]:
        """Attention rollout of the clip just run under ``recording``: ``(relevance (T, G_h, G_w)`` over the
        tiny-patch grid, ``frame weights (T,))``; the clip encoder's frame weights seed each frame's [CLS]."""
        grids = [-(-size[0] // self.config.patch_size), -(-size[1] // self.config.patch_size)]
        inputs = []
        for block in self.blocks:
            inputs.append(tuple(grids))
            if block.pool is not None:
                grids = [-(-g // 2) for g in grids]
        weights = self.clip_encoder.frame_weights(frames)
        r_cls, r = weights.clone(), torch.zeros(frames, *grids, dtype=torch.float64)
        for block, grid in zip(reversed(self.blocks), reversed(inputs)):
            r_cls, r = block.relevance(r_cls, r, grid, reading)
        return r, weights


SCT_S = SCTConfig()
SCT_M = dataclasses.replace(SCT_S, embed_dim=128, vilt_depth=6, heads=(4, 8, 8, 8))
SCT_L = dataclasses.replace(SCT_S, embed_dim=192, heads=(4, 6, 8, 8))
SCT_TINY = dataclasses.replace(
    SCT_S, num_classes=10, num_frames=16, img_size=64, chunk_size=4, embed_dim=32, vilt_depth=1, heads=(2, 2, 2, 2),
    dim_heads=(None, None, None, None), num_blocks=2, num_poolings=2, lsh_hashes=1, lsh_chunk_length=32,
    clip_dim=64, clip_mlp_dim=128, clip_depth=1)
register("sct_s", SCT, SCT_S)
register("sct_m", SCT, SCT_M)
register("sct_l", SCT, SCT_L)
register("sct_tiny", SCT, SCT_TINY)
# The paper's letter (docs/architecture.md, reading 1): ViLT, LSH and pooling in every block.
register("sct_s_literal", SCT, literal(SCT_S))
register("sct_m_literal", SCT, literal(SCT_M))
register("sct_l_literal", SCT, literal(SCT_L))
register("sct_tiny_literal", SCT, literal(SCT_TINY))
