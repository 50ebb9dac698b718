"""The image part of an SCT block: a local stage (ViLT by default) and a global layer (image LSH by default).

Every module here maps ``(grid (B*T, G_h, G_w, C), cls (B*T, C) | None, frames=T) -> (grid, cls)``, the
frames of B clips of T frames. Attention over the whole frame (LSH, dense) lets the frame's [CLS] take
part when it exists; local and convolutional layers work on the grid and pass the [CLS] through unchanged.

Kinds (the appendix ablations):
- local: ``vilt`` (§3.2), ``conv``/``conv_bn``/``res_conv`` (M 3x3 conv layers, plain, with batch norm,
  residual blocks), ``lsh`` (M image LSH layers instead of ViLT), ``none`` (ViLT removed).
- global: ``lsh`` (Eq. 3), ``dense`` (full MSA over the frame), ``conv``/``conv_bn``/``res_conv`` (one
  conv layer of that kind), ``none`` (LSH layer removed).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from sct.models.attention.chunk import ViLT
from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.lsh import LSHConfig, LSHSelfAttention
from sct.models.blocks import TransformerLayer

CONV_KINDS = ("conv", "conv_bn", "res_conv")
LOCAL_KINDS = ("vilt", *CONV_KINDS, "lsh", "none")
GLOBAL_KINDS = ("lsh", "dense", *CONV_KINDS, "none")


class ConvLayer(nn.Module):
    """One 3x3 conv layer on a token grid, ``(B, H, W, C) -> (B, H, W, C)``.

    ``conv``: conv + GELU; ``conv_bn``: conv + BN + GELU; ``res_conv``: a ResNet basic block
    (two conv + BN, identity shortcut).
    """

    def __init__(self, dim: int, kind: str):
        super().__init__()
        self.kind = kind
        bn = kind != "conv"
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(dim) if bn else nn.Identity()
        self.act = nn.GELU()
        if kind == "res_conv":
            self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(x, "b h w c -> b c h w")
        out = self.act(self.bn1(self.conv1(y)))
        if self.kind == "res_conv":
            out = self.act(y + self.bn2(self.conv2(out)))
        return rearrange(out, "b c h w -> b h w c")


class ConvStack(nn.Sequential):
    """``ConvLayer`` s in sequence: ``(B*T, H, W, C) -> (B*T, H, W, C)``; ``frames`` is unused (no stochastic depth)."""

    def forward(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        return super().forward(x)

    def relevance(self, r: torch.Tensor) -> torch.Tensor:
        """Convolutions have no attention to roll out: relevance ``(T, G_h, G_w)`` passes unchanged."""
        return r


class GridLayers(nn.Module):
    """Layers that see only the grid (``layers(grid, frames)``); the [CLS] passes through."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(self, grid: torch.Tensor, cls: torch.Tensor | None,
                frames: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.layers(grid, frames), cls

    def relevance(self, r_cls: torch.Tensor | None, r: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Rollout relevance of one clip, [CLS] ``(T,)`` or None and grid ``(T, G_h, G_w)``, through the layers."""
        return r_cls, self.layers.relevance(r)


class FrameAttention(nn.Module):
    """Pre-norm transformer layers over all tokens of each frame, ``[CLS]`` first when present (Eq. 3)."""

    def __init__(self, layers: list[TransformerLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, grid: torch.Tensor, cls: torch.Tensor | None,
                frames: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``grid`` ``(B*T, G_h, G_w, C)``, ``cls`` ``(B*T, C)`` or None; ``frames`` = T."""
        h, w = grid.shape[1:3]
        tokens = rearrange(grid, "b h w c -> b (h w) c")
        if cls is not None:
            tokens = torch.cat([cls[:, None], tokens], dim=1)
        for layer in self.layers:
            tokens = layer(tokens, frames)
        if cls is not None:
            cls, tokens = tokens[:, 0], tokens[:, 1:]
        return rearrange(tokens, "b (h w) c -> b h w c", h=h, w=w), cls

    def relevance(self, r_cls: torch.Tensor | None, r: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Rollout relevance of one clip, [CLS] ``(T,)`` or None and grid ``(T, G_h, G_w)``, through the layers."""
        frames, g_h, g_w = r.shape
        tokens = r.reshape(frames, g_h * g_w)
        if r_cls is not None:
            tokens = torch.cat([r_cls[:, None], tokens], dim=1)
        for layer in reversed(self.layers):
            tokens = layer.relevance(tokens)
        if r_cls is not None:
            r_cls, tokens = tokens[:, 0], tokens[:, 1:]
        return r_cls, tokens.reshape(frames, g_h, g_w)


def _attention(kind: str, dim: int, heads: int, dim_head: int | None, lsh: LSHConfig, seed: int) -> nn.Module:
    if kind == "lsh":
        return LSHSelfAttention.from_config(dim, heads, dim_head, lsh, seed)
    return MultiHeadAttention(dim, heads, dim_head)


def image_layers(kind: str, depth: int, dim: int, heads: int, dim_head: int | None, mlp_dim: int,
                 chunk: tuple[int, int], lsh: LSHConfig, drop_path: list[float], seed: int = 0) -> nn.Module | None:
    """``depth`` layers of ``kind`` (a local or global kind) at width ``dim``; None for ``none``.

    ``lsh``: the LSH layers' settings; ``seed`` seeds the LSH rotations of the
    first layer (the next layers take ``seed + 1``, ...); ``drop_path`` has one rate per layer.
    """
    if kind == "none":
        return None
    if kind == "vilt":
        return GridLayers(ViLT(dim, depth, heads, mlp_dim, chunk, dim_head, drop_path))
    if kind in CONV_KINDS:
        return GridLayers(ConvStack(*(ConvLayer(dim, kind) for _ in range(depth))))
    return FrameAttention([
        TransformerLayer(dim, _attention(kind, dim, heads, dim_head, lsh, seed + i), mlp_dim, drop_path=drop_path[i])
        for i in range(depth)
    ])
