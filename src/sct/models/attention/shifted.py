"""Shifted multi-head self-attention (§3.3, Eq. 6-7) and the temporal attentions it is compared with.

All modules map ``(B, T, N, C) -> (B, T, N, C)``: T frames of N tokens (the frame's [CLS] first).

- ``shifted`` (Eq. 6): queries and values from frame t, keys from frame t - s, cyclic (frame 0 takes
  its keys from frame T - s). ``s = 0`` is ordinary per-frame MSA (Table 5's "0 shifted frames").
  With ``shift_mode="causal"`` a frame with no frame s before it (t < s) takes its own keys instead,
  so frame t depends only on frames <= t: what a stream can compute once per frame and reuse.
- ``space``: ordinary MSA over the tokens of each frame (the appendix's "space attention").
- ``time``: each token position attends over the same position in every frame (TimeSformer's time
  attention, the appendix's "time attention").
- ``space_time_concat``: space and time attention side by side, their outputs concatenated and
  projected back to C (the appendix's "concatenated feature from space and time attentions").
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from sct.models.attention.dense import MultiHeadAttention, attention
from sct.models.attention.recorder import recorded
from sct.models.attention.rollout import RESIDUAL, temporal_step, time_step

READINGS = ("keys", "values")

TEMPORAL_KINDS = ("shifted", "space", "time", "space_time_concat")
SHIFT_MODES = ("cyclic", "causal")


class ShiftedMSA(MultiHeadAttention):
    """Eq. 6-7's attention: ``a_t = Concat_i Attention(Q_t^i, K_{t-s}^i, V_t^i) W_O``.

    ``x`` ``(B, T, N, C)`` (already layer-normed by the caller) -> ``(B, T, N, C)``. With
    ``store_attention`` the weights of the last call are kept in ``last_attention`` ``(B, T, H, N, N)``:
    row p of frame t gives the weights over the tokens of frame ``t - s`` (``mode="cyclic"``: modulo T;
    ``mode="causal"``: frame t itself when t < s).
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, shift: int = 1,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, mode: str = "cyclic"):
        super().__init__(dim, heads, dim_head, qkv_bias, attn_drop, proj_drop)
        if mode not in SHIFT_MODES:
            raise ValueError(f"unknown shift mode {mode!r}; expected one of {SHIFT_MODES}")
        self.shift, self.mode = shift, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t n (three h d) -> three b t h n d", three=3, h=self.heads)
        k = shift_keys(k, self.shift, self.mode)
        frames = x.shape[1]
        q, k, v = (rearrange(z, "b t h n d -> (b t) h n d") for z in (q, k, v))
        out, weights = attention(q, k, v, None, self.attn_drop if self.training else 0.0, self.store_attention)
        if weights is not None:
            weights = rearrange(weights, "(b t) h n m -> b t h n m", t=frames)
        self.last_attention = weights
        return self.proj_drop(self.proj(rearrange(out, "(b t) h n d -> b t n (h d)", t=frames)))

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)`` back through the recorded weights ``(1, T, H, N, N)``.

        ``reading``: ``keys`` lets relevance follow the keys to frame t - s (the spec's reading, as in Fig. 4);
        ``values`` keeps it on frame t, whose values the weights actually mix (Eq. 6).
        """
        offsets = {-self.shift: 1.0} if reading == "keys" else {0: 1.0}
        return temporal_step(r, recorded(self)[0], offsets, cyclic=True, residual=residual)


def shift_keys(k: torch.Tensor, shift: int, mode: str) -> torch.Tensor:
    """``k`` ``(B, T, ...)`` -> the keys each frame attends to: ``out[t] = k[t - shift]``.

    Cyclic: ``roll`` (frame 0 takes frame T - s, Eq. 6's ``t'_0 = t'_T``). Causal: frames t < s keep their
    own keys, so no frame ever reads a later one.
    """
    if mode == "cyclic":
        return torch.roll(k, shifts=shift, dims=1)
    return torch.cat([k[:, :shift], k[:, :k.shape[1] - shift]], dim=1) if shift else k


class TimeMSA(nn.Module):
    """Time attention (TimeSformer's): each patch position attends over the same position in every frame.

    ``(B, T, N, C) -> (B, T, N, C)`` with token 0 the frame's [CLS]. A [CLS] taken along time would only
    ever meet other [CLS] tokens, so the frame summary read by the clip encoder would ignore the image;
    as in TimeSformer, the [CLS] token attends over the tokens of its own frame instead. With
    ``store_attention``: ``last_attention`` ``(B, N - 1, H, T, T)`` for the patch positions and
    ``last_cls_attention`` ``(B, T, H, 1, N)`` for the [CLS] tokens.
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None):
        super().__init__()
        self.msa = MultiHeadAttention(dim, heads, dim_head)
        self.last_cls_attention: torch.Tensor | None = None

    @property
    def store_attention(self) -> bool:
        return self.msa.store_attention

    @store_attention.setter
    def store_attention(self, value: bool) -> None:
        self.msa.store_attention = value

    @property
    def last_attention(self) -> torch.Tensor | None:
        return self.msa.last_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        msa = self.msa
        q, k, v = rearrange(msa.qkv(x), "b t n (three h d) -> three b t h n d", three=3, h=msa.heads)
        drop = msa.attn_drop if self.training else 0.0
        qt, kt, vt = (rearrange(z[..., 1:, :], "b t h n d -> b n h t d") for z in (q, k, v))
        patches, msa.last_attention = attention(qt, kt, vt, None, drop, msa.store_attention)
        cls, self.last_cls_attention = attention(q[..., :1, :], k, v, None, drop, msa.store_attention)
        out = torch.cat([cls, rearrange(patches, "b n h t d -> b t h n d")], dim=-2)
        return msa.proj_drop(msa.proj(rearrange(out, "b t h n d -> b t n (h d)")))

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)``: patches along time, each [CLS] over its own frame."""
        return time_step(r, recorded(self)[0], recorded(self, "last_cls_attention")[0], residual)


class SpaceTimeConcat(nn.Module):
    """Space and time attention in parallel, ``Concat(space, time) W``: ``(B, T, N, C) -> (B, T, N, C)``."""

    def __init__(self, dim: int, heads: int, dim_head: int | None = None):
        super().__init__()
        self.space = MultiHeadAttention(dim, heads, dim_head)
        self.time = TimeMSA(dim, heads, dim_head)
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.space(x), self.time(x)], dim=-1))

    def relevance(self, r: torch.Tensor, residual: float = RESIDUAL, reading: str = "keys") -> torch.Tensor:
        """The concatenated halves are projected back together: each carries half of the relevance."""
        return 0.5 * self.space.relevance(r, residual, reading) + 0.5 * self.time.relevance(r, residual, reading)


def temporal_attention(kind: str, dim: int, heads: int, dim_head: int | None = None, shift: int = 1,
                       shift_mode: str = "cyclic") -> nn.Module:
    """The attention module of one temporal layer, by ``kind`` (one of :data:`TEMPORAL_KINDS`)."""
    if kind == "shifted":
        return ShiftedMSA(dim, heads, dim_head, shift=shift, mode=shift_mode)
    if kind == "space":
        return MultiHeadAttention(dim, heads, dim_head)
    if kind == "time":
        return TimeMSA(dim, heads, dim_head)
    if kind == "space_time_concat":
        return SpaceTimeConcat(dim, heads, dim_head)
    raise ValueError(f"unknown temporal attention kind {kind!r}; expected one of {TEMPORAL_KINDS}")
