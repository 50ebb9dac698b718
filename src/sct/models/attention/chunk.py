"""ViLT: the visual local transformer of §3.2 (Eq. 1-2), attention inside non-overlapping chunks.

The token grid of every frame is cut into ``m x n`` chunks; all chunks of all frames form one batch
``(B * n_chunks, m * n, C)``, so one ``scaled_dot_product_attention`` call serves the whole clip and the
weights are shared across chunks. The last chunks of each row and column are zero-padded when the
grid does not divide; padded tokens are masked as keys, so real tokens never see them, and cropped after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.recorder import recorded
from sct.models.attention.rollout import chunk_step
from sct.models.blocks import TransformerLayer


def chunk_grid(grid: tuple[int, int], chunk: tuple[int, int]) -> tuple[int, int]:
    """Number of chunks ``(n_rows, n_cols)`` covering a ``(G_h, G_w)`` token grid (the paper's ``m' x n'``)."""
    # Ceiling division without negative operands: traced (ONNX export), integer division truncates.
    return (grid[0] + chunk[0] - 1) // chunk[0], (grid[1] + chunk[1] - 1) // chunk[1]


def chunk_partition(x: torch.Tensor, chunk: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cut a token grid into chunks.

    ``x`` ``(B, G_h, G_w, C)`` -> ``chunks`` ``(B, n_chunks, m*n, C)`` (chunks row-major, tokens row-major
    inside a chunk) and ``padding`` ``(n_chunks, m*n)`` bool (True = zero padding), or None when the grid
    divides.
    """
    (m, n), (g_h, g_w) = chunk, x.shape[1:3]
    n_rows, n_cols = chunk_grid((g_h, g_w), chunk)
    pad_h, pad_w = n_rows * m - g_h, n_cols * n - g_w
    padding = None
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        real = torch.zeros(n_rows * m, n_cols * n, dtype=torch.bool, device=x.device)
        real[:g_h, :g_w] = True
        padding = ~rearrange(real, "(gh m) (gw n) -> (gh gw) (m n)", m=m, n=n)
    return rearrange(x, "b (gh m) (gw n) c -> b (gh gw) (m n) c", m=m, n=n), padding


def chunk_merge(chunks: torch.Tensor, grid: tuple[int, int], chunk: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`chunk_partition`: ``(B, n_chunks, m*n, C)`` -> ``(B, G_h, G_w, C)`` (padding cropped)."""
    m, n = chunk
    n_rows, n_cols = chunk_grid(grid, chunk)
    x = rearrange(chunks, "b (gh gw) (m n) c -> b (gh m) (gw n) c", gh=n_rows, gw=n_cols, m=m, n=n)
    return x[:, : grid[0], : grid[1]]


class ViLT(nn.Module):
    """M pre-norm transformer layers (Eq. 2) inside every chunk, shared weights, chunk position embedding (Eq. 1).

    ``(B, G_h, G_w, C) -> (B, G_h, G_w, C)``. With ``store_attention`` set on a layer's ``attn``, its
    ``last_attention`` is ``(B * n_chunks, H, m*n, m*n)`` (chunks row-major per frame).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, chunk: tuple[int, int],
                 dim_head: int | None = None, drop_path: list[float] | None = None):
        super().__init__()
        self.chunk = chunk
        self.pos_embed = nn.Parameter(torch.zeros(chunk[0] * chunk[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        drop_path = drop_path or [0.0] * depth
        self.layers = nn.ModuleList(
            TransformerLayer(dim, MultiHeadAttention(dim, heads, dim_head), mlp_dim, drop_path=drop_path[i])
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """``x`` ``(B*T, G_h, G_w, C)`` with ``T = frames`` per clip (for per-clip stochastic depth)."""
        grid = x.shape[1:3]
        chunks, padding = chunk_partition(x, self.chunk)
        n_chunks = chunks.shape[1]
        z = rearrange(chunks + self.pos_embed, "b k l c -> (b k) l c")
        mask = None
        if padding is not None:
            # True = may attend; (B * n_chunks, 1, 1, m*n) broadcasts over heads and queries.
            mask = (~padding).repeat(x.shape[0], 1)[:, None, None, :]
        for layer in self.layers:
            z = layer(z, frames * n_chunks, mask=mask)
        return chunk_merge(rearrange(z, "(b k) l c -> b k l c", k=n_chunks), grid, self.chunk)

    def relevance(self, r: torch.Tensor) -> torch.Tensor:
        """Rollout relevance ``(T, G_h, G_w)`` of one clip back through the layers (on the padded grid)."""
        frames, g_h, g_w = r.shape
        m, n = self.chunk
        rows, cols = chunk_grid((g_h, g_w), self.chunk)
        padded = F.pad(r, (0, cols * n - g_w, 0, rows * m - g_h))
        for layer in reversed(self.layers):
            attn = recorded(layer.attn)
            padded = chunk_step(padded, attn.reshape(frames, rows, cols, *attn.shape[1:]), (m, n),
                                layer.residual_weight())
        return padded[:, :g_h, :g_w]
