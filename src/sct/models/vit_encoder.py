"""A ViT applied to the frames of a clip, with a choice of how frames talk to each other.

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) so image checkpoints map
one-to-one (see ``sct.models.weights``). ``temporal`` picks the frame interaction:

- ``space``: none, the image ViT on every frame;
- ``mixing``: X-ViT's space-time mixing attention in every layer;
- ``tsm``: TSM-ViT, the token stream shifted in time before every block (X-ViT suppl. Eq. 1-3);
- ``divided``: TimeSformer's divided space-time attention (one clip CLS token).
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.errors import ConfigError
from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.divided import DividedSpaceTimeAttention
from sct.models.attention.mixing import SpaceTimeMixingAttention
from sct.models.blocks import WEIGHT_INITS, PatchEmbed, TransformerLayer, drop_path_rates, init_weights
from sct.models.options import check, check_choice, check_positive_ints, check_rates
from sct.models.temporal_shift import TemporalShift

TEMPORAL_KINDS = ("space", "mixing", "tsm", "divided")


# ------------------------------------------------ checkpoint key maps: other image-ViT layouts -> these names
# The encoder's names are timm's; ``sct.models.weights.to_timm_vit`` applies these maps to other layouts.
# Hugging Face ViT layer names: the hub files' ``encoder.layer.i.*`` and transformers 5's ``layers.i.*``.
HF_VIT_LAYER_KEYS = {
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
HF_VIT_QKV_KEYS = {
    "attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
    "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v",
}
# big_vision / vit_jax block sub-layers (LayerNorm, attention, LayerNorm, MLP): the older files number them
# 0-3 (old style: True), the newer 0 and 1 per kind.
BIG_VISION_LAYERS = {
    True: ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    False: ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
# The public X-ViT code's names (github.com/1adrianb/video-transformers) for this encoder's parameters.
XVIT_KEYS = {"temp_embed": "temporal_embed"}


def big_vision_block_keys(old_style: bool) -> dict[str, str]:
    """A block's timm names (after ``blocks.i.``) -> big_vision names (after ``Transformer/encoderblock_i/``),
    for the tensors that need no reshaping (norms and biases; kernels are transposed by the loader)."""
    ln1, mha, ln2, mlp = BIG_VISION_LAYERS[old_style]
    return {
        "norm1.weight": f"{ln1}/scale", "norm1.bias": f"{ln1}/bias",
        "norm2.weight": f"{ln2}/scale", "norm2.bias": f"{ln2}/bias",
        "attn.proj.bias": f"{mha}/out/bias",
        "mlp.fc1.bias": f"{mlp}/Dense_0/bias", "mlp.fc2.bias": f"{mlp}/Dense_1/bias",
    }


@dataclasses.dataclass
class ViTBackboneConfig:
    """The frame ViT of both ViT video families: ``VideoViTConfig`` (X-ViT, TSM-ViT, TimeSformer, per-frame
    ViT) and ``ViTSCTConfig`` (SCT Tables 1/4) extend it, so its fields are flat keys of theirs
    (``dim=384``, ``model.depth=6``) and ``config.backbone`` is this part alone. timm's ViT-B/16 by default.

    - ``drop_path_rate``: the last layer's stochastic-depth rate (linear from 0 over the layers).
    - ``weight_init``: ``trunc_normal`` (timm's, for pretrained-size models) | ``xavier`` (narrow models
      from scratch).
    """

    img_size: int = 224
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    weight_init: str = "trunc_normal"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("img_size", "patch_size", "dim", "depth", "heads"))
        check_rates(self, ("attn_drop_rate", "drop_path_rate"))
        check(self.mlp_ratio > 0, self, "mlp_ratio", "> 0")
        check_choice(self, "weight_init", WEIGHT_INITS)
        check(self.dim % self.heads == 0, self, "dim", f"a multiple of heads={self.heads}")

    @property
    def backbone(self) -> ViTBackboneConfig:
        """The backbone fields alone (of a video config that extends this one)."""
        return ViTBackboneConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ViTBackboneConfig)})


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ViT position embedding on its 2-D grid; the CLS entry is kept.

    ``pos_embed``: ``(1, 1 + g*g, C)`` (square grid) -> ``(1, 1 + grid[0]*grid[1], C)``.
    """
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not a square grid")
    if (old, old) == tuple(grid):
        return pos_embed
    patches = rearrange(patches, "1 (h w) c -> 1 c h w", h=old)
    patches = F.interpolate(patches.float(), size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, rearrange(patches, "1 c h w -> 1 (h w) c").to(pos_embed.dtype)], dim=1)


class ViTEncoder(nn.Module):
    """Frame-wise ViT: clip ``(B, 3, T, H, W)`` -> normalised tokens ``(B, T, 1 + S, C)``.

    Token 0 of every frame is its CLS token (for ``divided``: T copies of the clip's CLS token).
    The patch grid is ``img_size // patch_size`` (a remainder is cropped by the strided patch conv, as
    SCT's Table 4 has 18 x 18 tokens for 12 x 12 patches at 224).
    A temporal embedding ``(1, T, 1, C)`` initialised to zero is added to every token (patch tokens
    only for ``divided``, as TimeSformer does). ``drop_path_rate``: the last layer's stochastic-depth rate
    (linear from 0), or a list with one rate per layer.
    """

    def __init__(self, *, img_size: int, num_frames: int, patch_size: int = 16, dim: int = 768, depth: int = 12,
                 heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, temporal: str = "space",
                 n_div: int = 8, mixing_layout: str = "global", summary_token: bool = False,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float | list[float] = 0.0,
                 norm_eps: float = 1e-6, weight_init: str = "trunc_normal"):
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ConfigError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        if not 1 <= patch_size <= img_size:
            raise ConfigError(f"patch_size={patch_size} must be in [1, img_size={img_size}]")
        self.temporal = temporal
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, 1, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.shift = TemporalShift(n_div) if temporal == "tsm" else nn.Identity()

        def make_attention() -> nn.Module:
            if temporal == "mixing":
                return SpaceTimeMixingAttention(dim, heads, n_div, mixing_layout, summary_token, qkv_bias,
                                                attn_drop_rate, drop_rate)
            if temporal == "divided":
                return DividedSpaceTimeAttention(dim, heads, qkv_bias, attn_drop_rate, drop_rate, norm_eps)
            return MultiHeadAttention(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, proj_drop=drop_rate)

        rates = drop_path_rate if isinstance(drop_path_rate, list) else drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            TransformerLayer(dim, make_attention(), int(dim * mlp_ratio), drop_rate, rate, norm_eps,
                             attn_norm=temporal != "divided")
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_weights(self, weight_init)
        for block in self.blocks:
            if isinstance(block.attn, DividedSpaceTimeAttention):
                block.attn.zero_temporal_fc()

    @classmethod
    def from_config(cls, config: ViTBackboneConfig, num_frames: int, **frame_interaction) -> ViTEncoder:
        """The encoder of ``config``'s backbone for clips of ``num_frames``; ``frame_interaction``: ``temporal``,
        ``n_div``, ``mixing_layout``, ``summary_token``, or a per-layer ``drop_path_rate`` list."""
        return cls(num_frames=num_frames, **{**dataclasses.asdict(config.backbone), **frame_interaction})

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> embedded tokens ``(B, T, 1 + S, C)`` (before the blocks)."""
        frames = x.shape[2]
        patches = self.patch_embed(rearrange(x, "b c t h w -> (b t) c h w"))
        grid = patches.shape[1:3]
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches.flatten(1, 2)], dim=1)
        tokens = rearrange(tokens + resize_pos_embed(self.pos_embed, grid), "(b t) n c -> b t n c", t=frames)
        time = self._temporal_embed(frames)
        if self.temporal == "divided":
            tokens = torch.cat([tokens[:, :, :1], tokens[:, :, 1:] + time], dim=2)
        else:
            tokens = tokens + time
        return self.pos_drop(tokens)

    def _temporal_embed(self, frames: int) -> torch.Tensor:
        """``(1, T, 1, C)``, linearly resampled when the clip length differs from ``num_frames``."""
        embed = self.temporal_embed
        if embed.shape[1] == frames:
            return embed
        resized = F.interpolate(rearrange(embed, "1 t 1 c -> 1 c t"), size=frames, mode="linear")
        return rearrange(resized, "1 c t -> 1 t 1 c")

    def image_key_targets(self, key: str) -> list[str]:
        """Where an image ViT's timm key goes: in TimeSformer blocks the image attention (and its norm) also
        seeds the temporal one."""
        match = re.match(r"^blocks\.(\d+)\.(norm1|attn)\.(.+)$", key)
        if match is None or self.temporal != "divided":
            return [key]
        i, part, rest = match.groups()
        if part == "norm1":
            return [f"blocks.{i}.attn.norm.{rest}", f"blocks.{i}.attn.temporal_norm.{rest}"]
        return [f"blocks.{i}.attn.attn.{rest}", f"blocks.{i}.attn.temporal_attn.{rest}"]

    def relevance(self, r: torch.Tensor, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, 1 + S)`` of the clip just recorded, back through the blocks (and shifts)."""
        for block in reversed(self.blocks):
            r = block.relevance(r, reading)
            if self.temporal == "tsm":
                r = self.shift.relevance(r)
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(B, 3, T, H, W)`` -> tokens after the final LayerNorm ``(B, T, 1 + S, C)``."""
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(self.shift(tokens))
        return self.norm(tokens)
