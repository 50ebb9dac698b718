"""Attention rollout (Abnar and Zuidema, 2020) through SCT's mixed layers, as row-vector steps.

Layer ``l`` maps the tokens of layer ``l-1`` to those of layer ``l`` through a row-stochastic matrix
``M_l = rownorm(0.5 A_l K_l + 0.5 R_l)`` (``N_l x N_{l-1}``): ``A_l`` the head-averaged attention,
``K_l`` where the attended keys/values come from, ``R_l`` the residual path. The relevance of one
output token ``o`` over the input is ``e_o^T M_L ... M_1``. We carry that row vector backwards,
``r <- r M_l``, one layer at a time, so no ``N x N`` product is ever formed; since every ``M_l`` is
row-stochastic, each step keeps the total relevance (the mass) of ``r``.

Every function here is pure: attention tensors in, relevance out, float64 throughout (the method is
written up in the project's attention-rollout spec). Each attention module applies the step that fits it
(its ``relevance`` method, on the weights it recorded, see ``recorder``); ``sct.analysis.visualize``
draws the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

RESIDUAL = 0.5


def head_average(attn: torch.Tensor) -> torch.Tensor:
    """Mean over heads in float64: ``(..., H, N_q, N_k) -> (..., N_q, N_k)``."""
    return attn.detach().to(torch.float64).mean(dim=-3)


def row_normalize(m: torch.Tensor) -> torch.Tensor:
    """Divide each row of ``(..., N, M)`` by its sum (keepdim: rows, not columns)."""
    return m / m.sum(dim=-1, keepdim=True)


def layer_map(attn: torch.Tensor, residual: float = RESIDUAL) -> torch.Tensor:
    """Explicit ``M = rownorm((1 - residual) A + residual I)`` for square attention ``(..., H, N, N)``.

    Returns ``(..., N, N)``. Only for small maps and checks; rollout itself uses :func:`dense_step`.
    """
    a = head_average(attn)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return row_normalize((1 - residual) * a + residual * eye)


def _apply_attention(r: torch.Tensor, a: torch.Tensor, residual: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``r (..., N_q)`` through ``rownorm((1-residual) a + residual I)`` with ``a (..., N_q, N_k)``.

    Returns the attention part ``(..., N_k)`` and the residual part ``(..., N_q)`` separately, so
    callers can route them to different tokens (shifted MSA, pooling).
    """
    w = r / ((1 - residual) * a.sum(dim=-1) + residual)
    attended = (1 - residual) * (w.unsqueeze(-2) @ a).squeeze(-2)
    return attended, residual * w


def dense_step(r: torch.Tensor, attn: torch.Tensor, residual: float = RESIDUAL) -> torch.Tensor:
    """One self-attention layer: ``r (..., N) -> r M (..., N)`` with ``attn (..., H, N, N)``.

    Works for any square, head-wise map: dense MSA, and LSH attention's effective dense weights
    (the sum over hash rounds of round weight times in-round weight).
    """
    attended, kept = _apply_attention(r.to(torch.float64), head_average(attn), residual)
    return attended + kept


def time_step(r: torch.Tensor, time_attn: torch.Tensor, cls_attn: torch.Tensor,
              residual: float = RESIDUAL) -> torch.Tensor:
    """Time attention with a per-frame [CLS]: ``r (T, N) -> (T, N)``, token 0 the [CLS].

    Patch position ``p`` mixes the same position over frames (``time_attn (N - 1, H, T, T)``); the [CLS]
    of frame ``t`` mixes the tokens of its own frame (``cls_attn (T, H, 1, N)``).
    """
    r = r.to(torch.float64)
    out = torch.zeros_like(r)
    out[:, 1:] = dense_step(r[:, 1:].T, time_attn, residual).T
    attended, kept = _apply_attention(r[:, :1], head_average(cls_attn), residual)
    out += attended
    out[:, :1] += kept
    return out


def chunk_step(r: torch.Tensor, attn: torch.Tensor, chunk: tuple[int, int], residual: float = RESIDUAL) -> torch.Tensor:
    """ViLT chunk attention on a token grid: ``r (..., gh*m, gw*n)`` -> same shape.

    ``attn (..., gh, gw, H, m*n, m*n)``: each ``m x n`` chunk's own weights (tokens row-major inside
    the chunk), i.e. a block-sparse map over the grid with zeros between chunks.
    """
    m, n = chunk
    gh, gw = attn.shape[-5], attn.shape[-4]
    chunks = rearrange(r, "... (gh m) (gw n) -> ... gh gw (m n)", m=m, n=n)
    out = dense_step(chunks, attn, residual)
    return rearrange(out, "... gh gw (m n) -> ... (gh m) (gw n)", gh=gh, gw=gw, m=m, n=n)


def chunk_to_dense(attn: torch.Tensor, chunk: tuple[int, int]) -> torch.Tensor:
    """Scatter chunk weights ``(..., gh, gw, H, m*n, m*n)`` into the block-sparse ``(..., H, N, N)``.

    ``N = gh*m * gw*n`` grid tokens in row-major order; entries between different chunks are zero.
    """
    m, n = chunk
    *lead, gh, gw, h, l, _ = attn.shape
    grid = torch.arange(gh * m * gw * n).reshape(gh * m, gw * n)
    index = rearrange(grid, "(gh m) (gw n) -> gh gw (m n)", m=m, n=n)
    dense = attn.new_zeros(*lead, h, gh * m * gw * n, gh * m * gw * n)
    for i in range(gh):
        for j in range(gw):
            ids = index[i, j]
            dense[..., ids[:, None], ids[None, :]] = attn[..., i, j, :, :, :]
    return dense


def pool_step(r: torch.Tensor) -> torch.Tensor:
    """Linear pooling (2x2 squeeze + linear): ``r (..., h, w) -> (..., 2h, 2w)``.

    Both the attention and the residual path go through the squeeze, so the map is the pooling
    matrix itself: each output token's row has four entries of 1/4, one per child.
    """
    r = r.to(torch.float64) / 4
    return r.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def pool_matrix(h: int, w: int) -> torch.Tensor:
    """Explicit pooling map ``(h*w, 2h*2w)`` from the ``2h x 2w`` grid to the ``h x w`` grid (row-major)."""
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, h, w)
    return rearrange(pool_step(eye), "o hh ww -> o (hh ww)")


def _valid_sources(t: int, num_frames: int, offsets: dict[int, float], cyclic: bool) -> dict[int, float]:
    """Source frame -> fraction for query frame ``t``; zero-padded offsets past the clip are dropped."""
    sources: dict[int, float] = {}
    for offset, fraction in offsets.items():
        s = t + offset
        if cyclic:
            s %= num_frames
        elif not 0 <= s < num_frames:
            continue
        sources[s] = sources.get(s, 0.0) + fraction
    return sources


def temporal_step(r: torch.Tensor, attn: torch.Tensor, offsets: dict[int, float], cyclic: bool,
                  residual: float = RESIDUAL) -> torch.Tensor:
    """Attention whose keys/values come from other frames: ``r (..., T, N) -> (..., T, N)``.

    ``attn (..., T, H, N, N)``: frame ``t``'s queries over ``N`` key positions. ``offsets`` maps a
    frame offset to the fraction of the attended values taken from frame ``t + offset``:
    SCT's shifted MSA with ``s`` shifted frames is ``{-s: 1.0}`` (cyclic, Eq. 6), X-ViT's space-time
    mixing with a quarter of the channels from the neighbours is ``{0: 0.75, 1: 0.125, -1: 0.125}``
    (zero-padded, not cyclic). The residual keeps frame ``t``'s own tokens. Where zero padding drops a
    source, the row is renormalised over what is left.
    """
    r = r.to(torch.float64)
    num_frames = r.shape[-2]
    a = head_average(attn)
    out = torch.zeros_like(r)
    for t in range(num_frames):
        sources = _valid_sources(t, num_frames, offsets, cyclic)
        total = sum(sources.values())
        # Row sums of the unnormalised map: (1-res) * total * rowsum(A_t) + res.
        w = r[..., t, :] / ((1 - residual) * total * a[..., t, :, :].sum(dim=-1) + residual)
        attended = (1 - residual) * (w.unsqueeze(-2) @ a[..., t, :, :]).squeeze(-2)
        for s, fraction in sources.items():
            out[..., s, :] += fraction * attended
        out[..., t, :] += residual * w
    return out


def shift_step(r: torch.Tensor, offsets: dict[int, float], cyclic: bool = False) -> torch.Tensor:
    """A token shift without attention (TSM): ``r (..., T, N) -> (..., T, N)``.

    Token ``(t, p)`` after the shift holds ``offsets[o]`` of its channels from ``(t + o, p)``; rows
    whose sources fall off the clip (zero padding) are renormalised over the remaining sources.
    """
    r = r.to(torch.float64)
    num_frames = r.shape[-2]
    out = torch.zeros_like(r)
    for t in range(num_frames):
        sources = _valid_sources(t, num_frames, offsets, cyclic)
        total = sum(sources.values())
        for s, fraction in sources.items():
            out[..., s, :] += fraction / total * r[..., t, :]
    return out


def rollout_dense(attns: list[torch.Tensor], token: int = 0, residual: float = RESIDUAL) -> torch.Tensor:
    """Rollout of token ``token`` through square layers ``attns[l] (..., H, N, N)`` (first layer first).

    Returns ``(..., N)``: the relevance of every input token for output token ``token``.
    """
    a = attns[-1]
    r = torch.zeros(*a.shape[:-3], a.shape[-1], dtype=torch.float64, device=a.device)
    r[..., token] = 1.0
    for attn in reversed(attns):
        r = dense_step(r, attn, residual)
    return r


def frame_weights(clip_attns: list[torch.Tensor], residual: float = RESIDUAL) -> torch.Tensor:
    """The clip encoder's weight per frame: ``clip_attns[l] (..., H, T+1, T+1)`` -> ``(..., T)``.

    Rollout of row 0 (the clip [CLS]) over the ``T+1`` tokens, without the clip token's own column
    (a learnt token carries no frame), renormalised to sum to 1 over the frames.
    """
    r = rollout_dense(clip_attns, token=0, residual=residual)[..., 1:]
    total = r.sum(dim=-1, keepdim=True)
    # A clip token that attends only to itself says nothing about the frames: weigh them equally.
    return torch.where(total > 0, r / total.clamp_min(1e-300), torch.full_like(r, 1.0 / r.shape[-1]))


def heatmaps(relevance: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample per-frame relevance ``(T, h, w)`` to ``(T, H, W)`` in [0, 1], normalised over the clip.

    One minimum and one maximum for the whole clip (not per frame), so frames the model ignores stay
    dark and near-uniform relevance does not saturate every pixel.
    """
    maps = F.interpolate(relevance.to(torch.float64)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low, span = maps.min(), maps.max() - maps.min()
    return (maps - low) / span if span > 0 else torch.zeros_like(maps)
