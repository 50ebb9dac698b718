"""Linear pooling (Eq. 4): squeeze each 2x2 neighbourhood into one token of 4C, then ``E_t``: 4C -> 2C."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.models.attention.rollout import pool_step


def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """Eq. 4's squeeze: ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C)``.

    ``s'_{i,j} = [s_{2i-1,2j-1}, s_{2i-1,2j}, s_{2i,2j-1}, s_{2i,2j}]`` (1-based, as in the paper): the
    channels of the top-left, top-right, bottom-left and bottom-right neighbour, in that order. An odd
    grid is zero-padded at the bottom/right first.
    """
    h, w = x.shape[1:3]
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return rearrange(x, "b (h i) (w j) c -> b h w (i j c)", i=2, j=2)


class LinearPooling(nn.Module):
    """``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)`` with ``out_dim = 2C`` by default.

    ``pool_token`` carries a per-frame [CLS] token ``(B, C)`` across the pooling: it is squeezed as four
    copies of itself, so it goes through the same ``E_t`` (no extra parameters).
    """

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.proj = nn.Linear(4 * dim, out_dim or 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(squeeze2x2(x))

    def relevance(self, r: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Rollout relevance ``(T, h, w)`` back to the ``grid`` before the pooling (its padding cropped)."""
        return pool_step(r)[:, : grid[0], : grid[1]]

    def pool_token(self, token: torch.Tensor) -> torch.Tensor:
        """``(B, C) -> (B, out_dim)``: the token as its own 2x2 neighbourhood (through ``forward``, so that
        counters and hooks see the pooling)."""
        return self(token[:, None, None].expand(-1, 2, 2, -1))[:, 0, 0]
