"""Image LSH attention (SCT paper §3.2, Eq. 3) with Hugging Face Reformer semantics.

Shared query/key ``x``, angular LSH with random rotations, ``n_hashes`` rounds, a stable sort by
(round, bucket, position), chunks of ``chunk_length`` that also see ``chunks_before`` previous and
``chunks_after`` following chunks (circularly), a self mask, and the rounds combined through their
log-sum-exp. See ``specs/lsh-attention.md``.

The sorted sequence is processed in blocks of whole chunks within one round. Each block gathers its
queries and its look-around keys straight from the unsorted tensors, attends, and merges its output
into the result with an online log-sum-exp over rounds, so memory stays ``O(L)`` plus one block.
The backward pass recomputes each block (as flash attention does) instead of keeping the weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.autograd.function import once_differentiable

from sct.errors import ConfigError
from sct.models.attention.lsh_hashing import default_n_buckets, hash_vectors, random_rotations, sort_by_bucket

__all__ = ["LSHSelfAttention", "default_n_buckets", "hash_vectors", "lsh_attention", "random_rotations",
           "sort_by_bucket"]

# Logit given to (padding keys, the query's own position): Hugging Face's values per precision.
_MASK_VALUES = {torch.float32: (-1e9, -1e5), torch.float64: (-1e9, -1e5)}
_LOW_PRECISION_MASK_VALUES = (-1e4, -1e3)
# Flash attention on CPU that also returns the log-sum-exp (which the public SDPA does not).
_FUSED_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
# Query slots per block: large enough to amortise Python overhead, small enough to stay in cache.
BLOCK_SLOTS = 4096


@dataclass(frozen=True)
class _Layout:
    """How each (batch, head) row's sorted sequence of ``n_hashes * padded_len`` slots is cut up."""

    seq_len: int
    padded_len: int
    n_hashes: int
    chunk: int
    before: int
    after: int

    @property
    def window(self) -> int:
        return (1 + self.before + self.after) * self.chunk

    def window_leaves_round(self, first: int, count: int) -> bool:
        """Whether some window of the chunks in slots ``[first, first + count)`` reaches into another round
        (or wraps onto its own round), where a query may meet its own position again."""
        start = first % self.padded_len
        return start < self.before * self.chunk or start + count + self.after * self.chunk > self.padded_len

    def row_groups(self, n_rows: int) -> list[slice]:
        step = max(1, BLOCK_SLOTS // self.padded_len)
        return [slice(start, start + step) for start in range(0, n_rows, step)]

    def slot_ranges(self) -> list[tuple[int, int]]:
        """``(first slot, n slots)`` of each block: whole chunks, never across a round boundary."""
        step = max(1, BLOCK_SLOTS // self.chunk) * self.chunk
        return [(r * self.padded_len + start, min(step, self.padded_len - start))
                for r in range(self.n_hashes) for start in range(0, self.padded_len, step)]


def _key_scale(x: torch.Tensor) -> torch.Tensor:
    """Reformer's key normalisation as a factor per position: ``k = x * scale``, ``scale`` ``(G, L, 1)``.

    ``scale = 1 / sqrt(mean(x^2) + 1e-6) / sqrt(d_h)``; computed once per row, then gathered per block.
    """
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * x.shape[-1] ** -0.5


@functools.lru_cache(maxsize=32)
def _self_diagonal(chunk: int, before: int, after: int, value: float, dtype: torch.dtype, device) -> torch.Tensor:
    """``(c, W)`` additive mask: ``value`` where query ``i`` of a chunk meets slot ``i`` of its own chunk."""
    eye = torch.eye(chunk, dtype=dtype, device=device) * value
    return F.pad(eye, (before * chunk, after * chunk))


def _take(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``t[g, pos[g, s]]`` for ``t`` ``(G, L, ...)`` and ``pos`` ``(G, S)`` -> ``(G, S, ...)``.

    One ``index_select`` of whole rows over the flattened batch: much faster than ``gather`` with an
    expanded index.
    """
    flat = pos + torch.arange(0, t.shape[0] * t.shape[1], t.shape[1], device=pos.device).unsqueeze(-1)
    return t.flatten(0, 1).index_select(0, flat.flatten()).view(*pos.shape, *t.shape[2:])


def _put(t: torch.Tensor, pos: torch.Tensor, values: torch.Tensor) -> None:
    """In place ``t[g, pos[g, s]] = values[g, s]`` for a contiguous ``t`` ``(G, L, ...)``."""
    flat = pos + torch.arange(0, t.shape[0] * t.shape[1], t.shape[1], device=pos.device).unsqueeze(-1)
    t.view(-1, *t.shape[2:]).index_copy_(0, flat.flatten(), values.flatten(0, 1))


class _Block(NamedTuple):
    """One block's attention inputs: ``n`` chunks of ``c`` queries, each with a window of ``W`` keys."""

    queries: torch.Tensor  # (G, n, c, d)
    keys: torch.Tensor  # (G, n, W, d), normalised; a strided view of the gathered slots
    values: torch.Tensor  # (G, n, W, d), a strided view
    bias: torch.Tensor  # additive mask, broadcastable to (G, n, c, W)
    query_pos: torch.Tensor  # (G, n * c) original positions of the queries
    key_pos: torch.Tensor  # (G, n, W)


def _gather_block(x: torch.Tensor, v: torch.Tensor, key_scale: torch.Tensor, sorted_pos: torch.Tensor,
                  pad: torch.Tensor | None, layout: _Layout, first: int, count: int) -> _Block:
    """Queries of the sorted slots ``[first, first + count)`` and their windows, straight from ``x``, ``v``.

    ``x``, ``v``: ``(G, L, d)``; ``key_scale``: ``(G, L, 1)`` from :func:`_key_scale`; ``sorted_pos``:
    ``(G, R * Lp)`` position of each sorted slot; ``pad``: ``(G, L)`` bool or None. The windows are
    overlapping views (``unfold``) of one gather of the block's chunks and their neighbours.
    """
    c, before, window = layout.chunk, layout.before, layout.window
    slots = torch.arange(first - before * c, first + count + layout.after * c, device=x.device)
    pos = sorted_pos[:, slots % sorted_pos.shape[1]]  # (G, S)
    in_seq = pos.clamp(max=layout.seq_len - 1)
    xs, vs = _take(x, in_seq), _take(v, in_seq)
    query_pos = pos[:, before * c:before * c + count]
    key_pos = pos.unfold(1, window, c)
    pad_value, self_value = _MASK_VALUES.get(x.dtype, _LOW_PRECISION_MASK_VALUES)
    if layout.window_leaves_round(first, count):
        is_self = query_pos.unflatten(1, (count // c, c)).unsqueeze(-1) == key_pos.unsqueeze(-2)
        bias = is_self.to(x.dtype) * self_value
    else:  # positions are distinct within a round: a query meets itself only in its own chunk, on the diagonal
        bias = _self_diagonal(c, before, layout.after, self_value, x.dtype, x.device)
    if pad is not None or layout.padded_len > layout.seq_len:
        is_pad = pos >= layout.seq_len
        if pad is not None:
            is_pad |= _take(pad, in_seq)
        bias = bias + is_pad.unfold(1, window, c).unsqueeze(-2).to(x.dtype) * pad_value
    return _Block(xs[:, before * c:before * c + count].unflatten(1, (count // c, c)),
                  (xs * _take(key_scale, in_seq)).unfold(1, window, c).transpose(-1, -2),
                  vs.unfold(1, window, c).transpose(-1, -2), bias, query_pos, key_pos)


def _logits(block: _Block) -> torch.Tensor:
    """Masked logits ``(G, n, c, W)``: ``x_i . k_j`` (no further scale) plus the mask."""
    logits = block.queries @ block.keys.transpose(-1, -2)
    return logits + block.bias if torch.is_grad_enabled() else logits.add_(block.bias)


def _attend(block: _Block) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(logits) @ values`` ``(G, n, c, d)`` and the log-sum-exp of the logits ``(G, n, c)``.

    Without autograd on a CPU this is PyTorch's fused flash-attention kernel, which also returns the
    log-sum-exp. Otherwise it is computed explicitly; the max shift is detached, which is exact since it
    cancels in both results.
    """
    if block.queries.device.type == "cpu" and not torch.is_grad_enabled() and _FUSED_CPU is not None:
        o, z = _FUSED_CPU(block.queries, block.keys, block.values, attn_mask=block.bias, scale=1.0)
        return o, z.to(o.dtype)
    logits = _logits(block)
    top = logits.detach().amax(-1, keepdim=True)
    probs = (logits - top).exp() if torch.is_grad_enabled() else logits.sub_(top).exp_()
    total = probs.sum(-1, keepdim=True)
    return (probs @ block.values) / total, (total.log() + top).squeeze(-1)


def _merge_round(out: torch.Tensor, lse: torch.Tensor, pos: torch.Tensor, o: torch.Tensor, z: torch.Tensor,
                 first_round: bool) -> None:
    """Fold one round's outputs ``o`` ``(G, S, d)`` with log-sum-exp ``z`` ``(G, S)`` at positions ``pos``
    ``(G, S)`` (distinct within a round) into the running ``out`` ``(G, Lp, d)`` and ``lse`` ``(G, Lp)``.

    The result is the logsumexp-weighted sum over rounds, ``sum_r exp(z_r - logsumexp_r z_r) o_r``.
    """
    if first_round:
        _put(out, pos, o)
        _put(lse, pos, z)
        return
    old = _take(lse, pos)
    new = torch.logaddexp(old, z)
    merged = _take(out, pos) * (old - new).exp().unsqueeze(-1) + o * (z - new).exp().unsqueeze(-1)
    _put(out, pos, merged)
    _put(lse, pos, new)


def _blocks(n_rows: int, layout: _Layout):
    for rows in layout.row_groups(n_rows):
        for first, count in layout.slot_ranges():
            yield rows, first, count


def _rows(t: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if t is None else t[rows]


def _lsh_forward(x, v, sorted_pos, pad, layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``(G, Lp, d)`` and log-sum-exp over all rounds and keys ``(G, Lp)``."""
    out = x.new_empty(x.shape[0], layout.padded_len, x.shape[-1])
    lse = x.new_empty(x.shape[0], layout.padded_len)
    key_scale = _key_scale(x)
    for rows, first, count in _blocks(x.shape[0], layout):
        block = _gather_block(x[rows], v[rows], key_scale[rows], sorted_pos[rows], _rows(pad, rows), layout, first,
                              count)
        o, z = _attend(block)
        _merge_round(out[rows], lse[rows], block.query_pos, o.flatten(1, 2), z.flatten(1, 2),
                     first < layout.padded_len)
    return out, lse


class _LSHAttentionFunction(torch.autograd.Function):
    """Blocked LSH attention over rows ``(G, L, d)`` -> ``(G, L, d)`` and the log-sum-exp ``(G, Lp)``.

    The backward pass recomputes each block.
    """

    @staticmethod
    def forward(ctx, x, v, sorted_pos, pad, layout: _Layout):
        out, lse = _lsh_forward(x, v, sorted_pos, pad, layout)
        ctx.save_for_backward(x, v, sorted_pos, pad, out, lse)
        ctx.layout = layout
        ctx.mark_non_differentiable(lse)
        return out[:, :layout.seq_len], lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_lse):
        x, v, sorted_pos, pad, out, lse = ctx.saved_tensors
        layout = ctx.layout
        grad = F.pad(grad, (0, 0, 0, layout.padded_len - layout.seq_len))
        grad_x, grad_v = torch.zeros_like(x), torch.zeros_like(v)
        for rows in layout.row_groups(x.shape[0]):
            x_rows, v_rows = x[rows].detach().requires_grad_(), v[rows].detach().requires_grad_()
            for first, count in layout.slot_ranges():
                with torch.enable_grad():
                    block = _gather_block(x_rows, v_rows, _key_scale(x_rows), sorted_pos[rows], _rows(pad, rows),
                                          layout, first, count)
                    o, z = (t.flatten(1, 2) for t in _attend(block))
                pos = block.query_pos
                # out = sum_r w_r o_r with w_r = exp(z_r - lse): the gradients for this round's o_r and z_r.
                weight = (z.detach() - _take(lse[rows], pos)).exp()
                g = _take(grad[rows], pos)
                grad_o = g * weight.unsqueeze(-1)
                grad_z = weight * (g * (o.detach() - _take(out[rows], pos))).sum(-1)
                gx, gv = torch.autograd.grad((o, z), (x_rows, v_rows), (grad_o, grad_z))
                grad_x[rows] += gx
                grad_v[rows] += gv
        return grad_x, grad_v, None, None, None


@torch.no_grad()
def _effective_attention(x, v, sorted_pos, pad, lse, layout: _Layout) -> torch.Tensor:
    """``(G, Lp, Lp)``: ``A[i, j] = sum_r w_{r,i} * (weight query i gave position j in round r)``.

    With the overall log-sum-exp ``lse`` that is ``sum over (r, window slots holding j) exp(logit - lse_i)``;
    duplicates of a key add up.
    """
    n_rows, padded_len = x.shape[0], layout.padded_len
    attn = x.new_zeros(n_rows, padded_len * padded_len)
    key_scale = _key_scale(x)
    for rows, first, count in _blocks(n_rows, layout):
        block = _gather_block(x[rows], v[rows], key_scale[rows], sorted_pos[rows], _rows(pad, rows), layout, first,
                              count)
        logits = _logits(block)
        query_pos = block.query_pos.unflatten(1, logits.shape[1:3]).unsqueeze(-1)
        weights = (logits - _take(lse[rows], block.query_pos).unflatten(1, logits.shape[1:3]).unsqueeze(-1)).exp()
        flat = query_pos * padded_len + block.key_pos.unsqueeze(-2)
        attn[rows].scatter_add_(1, flat.flatten(1), weights.flatten(1))
    return attn.view(n_rows, padded_len, padded_len)


def _check_inputs(qk, v, n_buckets, chunk_length, buckets, key_padding_mask, n_hashes):
    if qk.ndim != 4 or v.shape != qk.shape:
        raise ValueError(f"lsh_attention: qk and v must both be (B, H, L, d_h), got {tuple(qk.shape)} and "
                         f"{tuple(v.shape)}")
    bsz, heads, seq_len, _ = qk.shape
    if n_buckets < 2 or n_buckets % 2:
        raise ConfigError(f"lsh_attention: n_buckets must be even and >= 2, got {n_buckets}")
    if chunk_length < 1 or n_hashes < 1:
        raise ConfigError(f"lsh_attention: chunk_length and n_hashes must be >= 1, got {chunk_length}, {n_hashes}")
    if buckets is not None and buckets.shape != (bsz, heads, n_hashes * seq_len):
        raise ValueError(f"lsh_attention: buckets must be (B, H, n_hashes * L) = {(bsz, heads, n_hashes * seq_len)}"
                         f", got {tuple(buckets.shape)}")
    if key_padding_mask is not None and key_padding_mask.shape != (bsz, seq_len):
        raise ValueError(f"lsh_attention: key_padding_mask must be (B, L) = {(bsz, seq_len)}, got "
                         f"{tuple(key_padding_mask.shape)}")


def _sorted_positions(qk, layout: _Layout, n_buckets, rotations, buckets, pad, generator) -> torch.Tensor:
    """Original position of every sorted slot, ``(B * H, n_hashes * Lp)``."""
    bsz, heads, seq_len, dim_head = qk.shape
    if seq_len <= layout.chunk:  # one dense chunk: no hashing
        return torch.arange(seq_len, device=qk.device).expand(bsz * heads, seq_len)
    if buckets is None:
        if rotations is None:
            rotations = random_rotations(heads, dim_head, layout.n_hashes, n_buckets, generator, qk.device)
        round_buckets = hash_vectors(qk, rotations)
    else:
        round_buckets = buckets.reshape(bsz, heads, layout.n_hashes, seq_len)
    if pad is not None:
        # Padding goes to a bucket of its own after every real one, as in Hugging Face's Reformer.
        round_buckets = F.pad(round_buckets, (0, layout.padded_len - seq_len))
        is_pad = pad.view(bsz, heads, 1, layout.padded_len)
        round_buckets = torch.where(is_pad, round_buckets.amax() + 1, round_buckets)
    return sort_by_bucket(round_buckets).flatten(2).flatten(0, 1)


def lsh_attention(
    qk: torch.Tensor, v: torch.Tensor, *, n_hashes: int, n_buckets: int, chunk_length: int,
    chunks_before: int = 1, chunks_after: int = 0, rotations: torch.Tensor | None = None,
    buckets: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None, return_attention: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reformer LSH self-attention with shared queries/keys.

    Args:
        qk, v: ``(B, H, L, d_h)``; ``qk`` serves as queries and (normalised) keys.
        rotations: ``(H, d_h, n_hashes, n_buckets // 2)``; drawn from ``generator`` when None.
        buckets: ``(B, H, n_hashes * L)`` with the round offsets added (Hugging Face's layout); skips hashing.
        key_padding_mask: ``(B, L)`` bool, True = padding (never attended to).
        return_attention: also return the effective dense attention ``(B, H, L, L)``: per query the sum over
            rounds of the round weight times the in-round weights (duplicates add up).

    Returns ``out`` ``(B, H, L, d_h)`` (and the attention if asked). L need not be a multiple of
    ``chunk_length``: it is padded internally and the padding is masked. If ``L <= chunk_length`` the
    attention is dense (same key normalisation and self mask, no hashing).
    """
    _check_inputs(qk, v, n_buckets, chunk_length, buckets, key_padding_mask, n_hashes)
    bsz, heads, seq_len, dim_head = qk.shape
    if seq_len <= chunk_length:
        layout = _Layout(seq_len, seq_len, 1, seq_len, 0, 0)
    else:
        layout = _Layout(seq_len, seq_len + (-seq_len % chunk_length), n_hashes, chunk_length, chunks_before,
                         chunks_after)
    pad = None
    if key_padding_mask is not None or layout.padded_len > seq_len:
        pad = torch.ones(bsz, layout.padded_len, dtype=torch.bool, device=qk.device)
        pad[:, :seq_len] = False if key_padding_mask is None else key_padding_mask
        pad = pad.repeat_interleave(heads, dim=0)  # (B * H, Lp)
    sorted_pos = _sorted_positions(qk, layout, n_buckets, rotations, buckets, pad, generator)
    x, values = qk.reshape(bsz * heads, seq_len, dim_head), v.reshape(bsz * heads, seq_len, dim_head)
    key_pad = None if pad is None else pad[:, :seq_len]
    out, lse = _LSHAttentionFunction.apply(x, values, sorted_pos, key_pad, layout)
    out = out.view(bsz, heads, seq_len, dim_head)
    if not return_attention:
        return out
    attn = _effective_attention(x.detach(), values.detach(), sorted_pos, key_pad, lse, layout)
    return out, attn.view(bsz, heads, layout.padded_len, layout.padded_len)[:, :, :seq_len, :seq_len]


class LSHSelfAttention(nn.Module):
    """LSH self-attention block: ``(B, L, C) -> (B, L, C)``.

    Shared query/key and value projections (no bias, as in Reformer), :func:`lsh_attention`, and an
    output projection. ``n_buckets=None`` picks a power of two from L (Hugging Face's rule). Rotations come
    from a generator seeded with ``seed``: a fresh draw per forward in training (reproducible from the seed),
    the same draw in every eval forward. Set ``store_attention = True`` to keep the effective dense
    attention ``(B, H, L, L)`` of the last call in ``last_attention`` (for attention rollout).
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, n_hashes: int = 2,
                 n_buckets: int | None = None, chunk_length: int = 64, chunks_before: int = 1,
                 chunks_after: int = 0, seed: int = 0, proj_drop: float = 0.0):
        super().__init__()
        if n_buckets is not None and (n_buckets < 2 or n_buckets % 2):
            raise ConfigError(f"LSHSelfAttention: n_buckets must be None or even and >= 2, got {n_buckets}")
        if chunk_length < 1 or n_hashes < 1 or chunks_before < 0 or chunks_after < 0:
            raise ConfigError("LSHSelfAttention: chunk_length and n_hashes must be >= 1, chunks_before/after >= 0")
        self.heads = heads
        self.dim_head = dim_head or dim // heads
        inner = heads * self.dim_head
        self.n_hashes, self.n_buckets, self.chunk_length = n_hashes, n_buckets, chunk_length
        self.chunks_before, self.chunks_after = chunks_before, chunks_after
        self.seed = seed
        self.qk = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.train_generator = torch.Generator().manual_seed(seed)
        self.store_attention = False
        self.last_attention: torch.Tensor | None = None

    def rotations(self, n_buckets: int, device=None) -> torch.Tensor:
        """``(H, d_h, n_hashes, n_buckets // 2)``: the next training draw, or the fixed eval draw."""
        generator = self.train_generator if self.training else torch.Generator().manual_seed(self.seed)
        return random_rotations(self.heads, self.dim_head, self.n_hashes, n_buckets, generator, device)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, L, C)``, ``key_padding_mask`` ``(B, L)`` bool (True = padding) -> ``(B, L, C)``."""
        split = "b l (h d) -> b h l d"
        qk = rearrange(self.qk(x), split, h=self.heads)
        v = rearrange(self.v(x), split, h=self.heads)
        n_buckets = self.n_buckets or default_n_buckets(x.shape[-2], self.chunk_length)
        result = lsh_attention(
            qk, v, n_hashes=self.n_hashes, n_buckets=n_buckets, rotations=self.rotations(n_buckets, x.device),
            chunk_length=self.chunk_length, chunks_before=self.chunks_before, chunks_after=self.chunks_after,
            key_padding_mask=key_padding_mask, return_attention=self.store_attention,
        )
        out, self.last_attention = result if self.store_attention else (result, None)
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))
