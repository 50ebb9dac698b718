"""Temporal shift (TSM, Lin et al. 2019): move channel groups one frame forward/backward in time.

Used twice: on the keys and values of X-ViT's space-time mixing attention, and on the token stream of
TSM-ViT (X-ViT supplementary Eq. 1). Zero-parameter, zero-FLOP: it only copies memory.
"""

from __future__ import annotations

import torch
from torch import nn

from sct.errors import ConfigError
from sct.models.attention.rollout import shift_step


def shift_fold(channels: int, n_div: int) -> int:
    """Channels per shifted group, ``channels // n_div`` (0 when ``n_div == 0``: no shift).

    Raises ``ConfigError`` when ``n_div`` is negative or larger than ``channels`` (an empty group
    would silently turn the shift off).
    """
    if n_div < 0:
        raise ConfigError(f"n_div must be >= 0 (0 = no shift), got {n_div}")
    if n_div == 0:
        return 0
    if n_div > channels:
        raise ConfigError(f"n_div={n_div} leaves no channel to shift out of {channels}")
    return channels // n_div


def temporal_shift(x: torch.Tensor, fold: int, time_dim: int = 1) -> torch.Tensor:
    """Shift channel groups of ``x`` along ``time_dim``; channels are the LAST dim.

    ``x``: ``(..., T, ..., C)``. Channels ``[0, fold)`` of frame t take frame t+1, channels
    ``[fold, 2 fold)`` take frame t-1, the rest stay at t; zeros past the clip's ends.
    Returns a new tensor of the same shape (``x`` itself when ``fold == 0``).
    """
    if fold == 0:
        return x
    t = time_dim % x.ndim
    length = x.shape[t]
    future, past, rest = x[..., :fold], x[..., fold : 2 * fold], x[..., 2 * fold :]
    # Built from slices and concatenation (no in-place writes into views), so a tracer records it exactly.
    future = torch.cat([future.narrow(t, 1, length - 1), torch.zeros_like(future.narrow(t, 0, 1))], dim=t)
    past = torch.cat([torch.zeros_like(past.narrow(t, 0, 1)), past.narrow(t, 0, length - 1)], dim=t)
    return torch.cat([future, past, rest], dim=-1)


def shift_offsets(n_div: int) -> dict[int, float]:
    """Frame offset -> fraction of the channels a shifted token takes from frame ``t + offset``."""
    if n_div == 0:
        return {0: 1.0}
    return {1: 1.0 / n_div, -1: 1.0 / n_div, 0: 1.0 - 2.0 / n_div}


class TemporalShift(nn.Module):
    """TSM's shift of ``1/n_div`` of the channels each way: ``(B, T, ..., C) -> (B, T, ..., C)``."""

    def __init__(self, n_div: int = 8):
        super().__init__()
        self.n_div = n_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, shift_fold(x.shape[-1], self.n_div), time_dim=1)

    def relevance(self, r: torch.Tensor) -> torch.Tensor:
        """Rollout relevance ``(T, N)`` back through the shift (1/n_div of the channels from each neighbour)."""
        return shift_step(r, shift_offsets(self.n_div))

    def extra_repr(self) -> str:
        return f"n_div={self.n_div}"
