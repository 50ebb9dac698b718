"""Image LSH attention (SCT paper §3.2, Eq. 3) with Hugging Face Reformer semantics.

Shared query/key ``x``, angular LSH with random rotations, ``n_hashes`` rounds, a stable sort by
(round, bucket, position), chunks of ``chunk_length`` that also see ``chunks_before`` previous and
``chunks_after`` following chunks (circularly), a self mask, and the rounds combined through their
log-sum-exp. See ``specs/lsh-attention.md``.

The sorted sequence is processed in blocks of whole chunks within one round. Each block gathers its
queries and its look-around keys straight from the unsorted tensors and attends; a round's outputs
collect in slot order, return to positions through the inverse of the sort (a gather, not a scatter)
and merge into the result with an online log-sum-exp over rounds, so memory stays ``O(L)``.
The backward pass recomputes each block (as flash attention does) instead of keeping the weights; it
works in sorted (slot) order per group of rows and returns the gradients to positions through the
inverse of the sort, so its cost does not grow with the number of blocks.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.autograd.function import once_differentiable

from sct.errors import ConfigError
from sct.models.attention.dense import frame_relevance
from sct.models.attention.lsh_hashing import (
    bucket_count,
    bucket_factors,
    default_n_buckets,
    factorised,
    hash_vectors,
    is_bucket_spec,
    random_rotations,
    sort_by_bucket,
)
from sct.models.checkpointing import recomputing
from sct.models.options import check, check_positive_ints

__all__ = ["LSHConfig", "LSHSelfAttention", "bucket_count", "default_n_buckets", "factorised", "hash_vectors",
           "lsh_attention", "random_rotations", "sort_by_bucket"]

# Logit given to (padding keys, the query's own position): Hugging Face's values per precision.
_MASK_VALUES = {torch.float32: (-1e9, -1e5), torch.float64: (-1e9, -1e5)}
_LOW_PRECISION_MASK_VALUES = (-1e4, -1e3)


def mask_values(dtype: torch.dtype) -> tuple[float, float]:
    """``(padding, self)`` mask scores for ``dtype``: Reformer's, smaller where fp16/bf16 would overflow."""
    return _MASK_VALUES.get(dtype, _LOW_PRECISION_MASK_VALUES)


# PyTorch's CPU flash attention, forward (also returning the log-sum-exp) and backward.
_FUSED_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FUSED_CPU_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
# Query slots per block: enough to amortise the Python overhead, few enough for the block to stay in
# cache (1024 measured fastest on a 2-core CPU, and keeps the working set near 4 MiB at d_h = 64).
BLOCK_SLOTS = 1024
# With autograd the per-block overhead is larger (the backward pass recomputes every block), so blocks are
# bigger; memory still stays O(block), not O(L * window).
TRAIN_BLOCK_SLOTS = 16384
# Positions merged at a time when a round's outputs return to position order (a 1 MiB copy at d_h = 64).
MERGE_ROWS = 4096


@dataclass(frozen=True)
class _Layout:
    """How each (batch, head) row's sorted sequence of ``n_hashes * padded_len`` slots is cut up."""

    seq_len: int
    padded_len: int
    n_hashes: int
    chunk: int
    before: int
    after: int
    block_slots: int
    pad_chunks: int = 0  # trailing chunks of each round that may hold padding (padding sorts last in a round)

    @property
    def window(self) -> int:
        return (1 + self.before + self.after) * self.chunk

    @property
    def front(self) -> int:
        """Slots copied circularly in front of the sorted sequence (the first round's look-back)."""
        return self.before * self.chunk

    @property
    def total(self) -> int:
        """Slots of the sorted sequence itself, all rounds: ``n_hashes * padded_len``."""
        return self.n_hashes * self.padded_len

    @property
    def tail(self) -> int:
        """Chunks at the end of each round that get blocks of their own: windows reaching past the round, or
        holding padding (the padding chunks, and the ``after`` chunks before them that look ahead into it)."""
        return self.after + self.pad_chunks

    def full_mask(self, first: int, count: int) -> bool:
        """Whether some window of the chunks in slots ``[first, first + count)`` reaches into another round
        (or wraps onto its own round), where a query may meet its own position again, or onto padding."""
        start = first % self.padded_len
        return start < self.front or start + count + self.tail * self.chunk > self.padded_len

    def row_groups(self, n_rows: int) -> list[slice]:
        step = max(1, self.block_slots // self.padded_len)
        return [slice(start, start + step) for start in range(0, n_rows, step)]

    def round_ranges(self, r: int) -> list[tuple[int, int]]:
        """``(first slot, n slots)`` of each block of round ``r``: whole chunks, never across a round boundary.

        The chunks whose windows leave their round or may see padding (the first ``before`` and last
        :attr:`tail`) get blocks of their own, so every other block can use the cheap diagonal self mask.
        """
        n_chunks = self.padded_len // self.chunk
        inner = (min(self.before, n_chunks), max(self.before, n_chunks - self.tail))
        parts = [(0, inner[0]), inner, (inner[1], n_chunks)]
        step = max(1, self.block_slots // self.chunk)
        return [(r * self.padded_len + start * self.chunk, min(step, end - start) * self.chunk)
                for begin, end in parts for start in range(begin, end, step)]

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The blocks of every round (:meth:`round_ranges`), round by round."""
        return [block for r in range(self.n_hashes) for block in self.round_ranges(r)]


def _key_scale(x: torch.Tensor) -> torch.Tensor:
    """Reformer's key normalisation as a factor per position: ``k = x * scale``, ``scale`` ``(G, L, 1)``.

    ``scale = 1 / sqrt(mean(x^2) + 1e-6) / sqrt(d_h)``; computed once per row, then gathered per block. The
    norm is one reduction that allocates nothing the size of ``x``.
    """
    dim = x.shape[-1]
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32))
    return torch.rsqrt(norm.square_().div_(dim).add_(1e-6)).mul_(dim ** -0.5).to(x.dtype)


@functools.lru_cache(maxsize=32)
def _self_diagonal(chunk: int, before: int, after: int, value: float, dtype: torch.dtype, device) -> torch.Tensor:
    """``(c, W)`` additive mask: ``value`` where query ``i`` of a chunk meets slot ``i`` of its own chunk."""
    eye = torch.eye(chunk, dtype=dtype, device=device) * value
    return F.pad(eye, (before * chunk, after * chunk))


class _Slots(NamedTuple):
    """Per row, the sorted sequence extended circularly by ``before`` chunks in front and ``after`` behind,
    so every block's window is one contiguous slice. All ``(G, before * c + R * Lp + after * c)``."""

    pos: torch.Tensor  # original position of each slot
    rows_index: torch.Tensor  # index into the rows flattened to (G * L, ...); padding positions clamped
    is_pad: torch.Tensor | None  # key is padding (bool), None when nothing is padded

    @classmethod
    def build(cls, sorted_pos: torch.Tensor, pad: torch.Tensor | None, layout: _Layout) -> _Slots:
        """``sorted_pos`` ``(G, R * Lp)``; ``pad`` ``(G, Lp)`` bool or None."""
        total = sorted_pos.shape[1]
        wrap = torch.arange(-layout.front, total + layout.after * layout.chunk, device=sorted_pos.device) % total
        pos = sorted_pos[:, wrap]
        row = torch.arange(sorted_pos.shape[0], device=pos.device).unsqueeze(-1)
        rows_index = pos.clamp(max=layout.seq_len - 1) + row * layout.seq_len
        return cls(pos, rows_index, None if pad is None else pad.gather(1, pos))

    def out_index(self, rows: slice, span: slice, padded_len: int) -> torch.Tensor:
        """``(g, S)``: the rows, in the output flattened to ``(G * Lp, ...)``, of the slots ``span`` of ``rows``."""
        first_row = rows.start or 0
        row = torch.arange(first_row, first_row + self.pos[rows].shape[0], device=self.pos.device).unsqueeze(-1)
        return self.pos[rows, span] + row * padded_len

    def inverse(self, layout: _Layout) -> torch.Tensor:
        """``(G, R, Lp)``: the slot (in ``[0, R * Lp)``) holding each position in each round."""
        return _inverse_sort(self.pos[:, layout.front:layout.front + layout.total], layout)


class _Block(NamedTuple):
    """One block's attention inputs: ``n`` chunks of ``c`` queries, each with a window of ``W`` keys."""

    queries: torch.Tensor  # (G, n, c, d)
    keys: torch.Tensor  # (G, n, W, d), normalised; a strided view of the gathered slots
    values: torch.Tensor  # (G, n, W, d), a strided view
    bias: torch.Tensor  # additive mask, broadcastable to (G, n, c, W)


def _gather_slots(x: torch.Tensor, v: torch.Tensor, key_scale: torch.Tensor, index: torch.Tensor,
                  n_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, normalised keys and values of the slots ``index`` ``(n_rows * S,)``, each ``(n_rows, S, d)``.

    ``x``, ``v``: rows flattened to ``(G * L, d)``; ``key_scale``: ``(G * L, 1)`` from :func:`_key_scale`.
    """
    xs = x.index_select(0, index).view(n_rows, -1, x.shape[-1])
    vs = v.index_select(0, index).view(n_rows, -1, v.shape[-1])
    return xs, xs * key_scale.index_select(0, index).view(n_rows, -1, 1), vs


def _gather_block(x: torch.Tensor, v: torch.Tensor, key_scale: torch.Tensor, slots: _Slots, layout: _Layout,
                  rows: slice, first: int, count: int) -> _Block:
    """Queries of the sorted slots ``[first, first + count)`` of ``rows`` and their windows, gathered from
    the rows ``x``, ``v`` ``(G * L, d)`` (see :func:`_gather_slots`) for this block alone."""
    span = slice(first, first + count + layout.window - layout.chunk)
    gathered = _gather_slots(x, v, key_scale, slots.rows_index[rows, span].flatten(), slots.pos[rows].shape[0])
    return _block_view(*gathered, slots, layout, rows, first, count, offset=first)


def _block_view(xs: torch.Tensor, keys: torch.Tensor, vs: torch.Tensor, slots: _Slots, layout: _Layout, rows: slice,
                first: int, count: int, offset: int) -> _Block:
    """The block of sorted slots ``[first, first + count)`` as views of slot-ordered rows, keys and values
    ``(n_rows, S, d)`` that start at extended slot ``offset``. The windows are overlapping views (``unfold``)."""
    c, before, window = layout.chunk, layout.before, layout.window
    span = slice(first, first + count + window - c)  # in extended slots: window of the block's first chunk on
    local = slice(span.start - offset, span.stop - offset)
    xs, keys, vs = xs[:, local], keys[:, local], vs[:, local]
    pad_value, self_value = mask_values(xs.dtype)
    if not layout.full_mask(first, count):
        # Positions are distinct within a round and no padding is in reach: a query meets itself only in its
        # own chunk, on the diagonal.
        bias = _self_diagonal(c, before, layout.after, self_value, xs.dtype, xs.device)
    else:
        query_pos, key_pos = _block_positions(slots, layout, rows, first, count)
        bias = (query_pos.unsqueeze(-1) == key_pos.unsqueeze(-2)).to(xs.dtype) * self_value
        if slots.is_pad is not None:
            bias = bias + slots.is_pad[rows, span].unfold(1, window, c).unsqueeze(-2).to(xs.dtype) * pad_value
    return _Block(xs[:, before * c:before * c + count].unflatten(1, (count // c, c)),
                  keys.unfold(1, window, c).transpose(-1, -2), vs.unfold(1, window, c).transpose(-1, -2), bias)


def _block_positions(slots: _Slots, layout: _Layout, rows: slice, first: int,
                     count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Original positions of the block's queries ``(g, n, c)`` and of its windows' keys ``(g, n, W)``."""
    c = layout.chunk
    query_first = first + layout.front
    query_pos = slots.pos[rows, query_first:query_first + count].unflatten(1, (count // c, c))
    return query_pos, slots.pos[rows, first:first + count + layout.window - c].unfold(1, layout.window, c)


def _logits(block: _Block) -> torch.Tensor:
    """Masked logits ``(G, n, c, W)``: ``x_i . k_j`` (no further scale) plus the mask."""
    return (block.queries @ block.keys.transpose(-1, -2)).add_(block.bias)


def _attend(block: _Block) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(logits) @ values`` ``(G * n * c, d)`` and the log-sum-exp of the logits ``(G * n * c,)``.

    On a CPU this is PyTorch's fused flash-attention kernel, which also returns the log-sum-exp (the public
    SDPA does not); elsewhere it is computed explicitly. Runs without autograd (see the backward pass).
    """
    if block.queries.device.type == "cpu" and _FUSED_CPU is not None:
        o, z = _FUSED_CPU(block.queries, block.keys, block.values, attn_mask=block.bias, scale=1.0)
        return o.flatten(0, 2), z.flatten()
    logits = _logits(block)
    top = logits.amax(-1, keepdim=True)
    probs = logits.sub_(top).exp_()
    total = probs.sum(-1, keepdim=True)
    return ((probs @ block.values) / total).flatten(0, 2), (total.log() + top).flatten()


def _merge_round(out: torch.Tensor, lse: torch.Tensor, o: torch.Tensor, z: torch.Tensor, index: torch.Tensor,
                 first_round: bool) -> None:
    """Fold one round's outputs ``o`` ``(S, d)`` and log-sum-exps ``z`` ``(S,)``, in that round's slot order, into
    the running ``out`` ``(N, d)`` and ``lse`` ``(N,)`` in position order: position ``i`` takes slot ``index[i]``.

    The result is the logsumexp-weighted sum over rounds, ``sum_r exp(z_r - logsumexp_r z_r) o_r``, built one
    round at a time as ``out + w (o_r - out)`` with ``w = exp(z_r - logaddexp(lse, z_r))``: gathers and one
    ``lerp_``, no scatter; :data:`MERGE_ROWS` positions at a time, so the gathered copy stays small.
    """
    z = z.to(lse.dtype)
    if first_round:
        torch.index_select(o, 0, index, out=out)
        torch.index_select(z, 0, index, out=lse)
        return
    for start in range(0, index.shape[0], MERGE_ROWS):
        part = slice(start, start + MERGE_ROWS)
        z_part = z.index_select(0, index[part])
        new = torch.logaddexp(lse[part], z_part)
        out[part].lerp_(o.index_select(0, index[part]), z_part.sub_(new).exp_().unsqueeze(-1).to(out.dtype))
        lse[part] = new


def _blocks(n_rows: int, layout: _Layout):
    for rows in layout.row_groups(n_rows):
        for first, count in layout.slot_ranges():
            yield rows, first, count


def _lsh_forward(x, v, slots: _Slots, layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``(G * Lp, d)`` and log-sum-exp over all rounds and keys ``(G * Lp,)`` of rows ``(G * L, d)``.

    Each round's blocks write their outputs in slot order into a buffer of one round, which then returns to
    positions through the inverse of the sort (a gather) and merges into the result.
    """
    n_rows, d = slots.pos.shape[0], x.shape[-1]
    padded_len = layout.padded_len
    out = x.new_empty(n_rows, padded_len, d)
    # Kept in float32 for 16-bit inputs: the backward pass exponentiates against it.
    lse = x.new_empty(n_rows, padded_len, dtype=torch.promote_types(x.dtype, torch.float32))
    key_scale = _key_scale(x)
    inverse = slots.inverse(layout)
    for rows in layout.row_groups(n_rows):
        g = slots.pos[rows].shape[0]
        row_offsets = torch.arange(g, device=x.device).unsqueeze(-1) * padded_len
        o_round, z_round = x.new_empty(g, padded_len, d), lse.new_empty(g, padded_len)
        for r in range(layout.n_hashes):
            for first, count in layout.round_ranges(r):
                o, z = _attend(_gather_block(x, v, key_scale, slots, layout, rows, first, count))
                local = slice(first - r * padded_len, first - r * padded_len + count)
                o_round[:, local] = o.view(g, count, d)
                z_round[:, local] = z.view(g, count)
            index = (inverse[rows, r] - r * padded_len + row_offsets).flatten()
            _merge_round(out[rows].view(-1, d), lse[rows].view(-1), o_round.view(-1, d), z_round.view(-1), index,
                         r == 0)
    return out.view(-1, d), lse.view(-1)


class _LSHAttentionFunction(torch.autograd.Function):
    """Blocked LSH attention over rows flattened to ``(G * L, d)`` -> output ``(G * Lp, d)`` and the
    log-sum-exp ``(G * Lp,)``. The backward pass recomputes each block (see :func:`_lsh_backward`)."""

    @staticmethod
    def forward(ctx, x, v, slots: _Slots, layout: _Layout):
        out, lse = _lsh_forward(x, v, slots, layout)
        ctx.save_for_backward(x, v, out, lse)
        ctx.slots, ctx.layout = slots, layout
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_lse):
        x, v, out, lse = ctx.saved_tensors
        return (*_lsh_backward(x, v, out, lse, grad, ctx.slots, ctx.layout), None, None)


def _lsh_backward(x, v, out, lse, grad, slots: _Slots, layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of rows ``x`` and values ``v`` ``(G * L, d)`` from the output gradient ``grad`` ``(G * Lp, d)``.

    Per group of rows, the rows, keys and values are gathered once into sorted (slot) order; every block is
    a view of them, and its gradients are added into slot-ordered buffers (a key's overlapping windows fold
    back onto its slot by shifted adds). The buffers return to positions through the inverse of the sort (a
    gather, not a scatter), and the key normalisation is differentiated once at the end: the work stays O(L)
    however many blocks there are.
    """
    n_rows, d = slots.pos.shape[0], x.shape[-1]
    front, total = layout.front, layout.total
    key_scale = _key_scale(x)
    inverse = slots.inverse(layout)
    grad_q, grad_k, grad_v = (torch.empty_like(t).view(n_rows, layout.seq_len, d) for t in (x, x, v))
    for rows in layout.row_groups(n_rows):
        index = slots.rows_index[rows].flatten()
        g = slots.pos[rows].shape[0]
        xs, keys, vs = _gather_slots(x, v, key_scale, index, g)
        at_queries = slots.out_index(rows, slice(front, front + total), layout.padded_len).flatten()
        # Output-side tensors of every query slot, (g, R * Lp, ...).
        grad_s, out_s = (t.index_select(0, at_queries).view(g, total, d) for t in (grad, out))
        lse_s = lse.index_select(0, at_queries).view(g, total)
        dq, dk, dv = torch.empty_like(grad_s), torch.zeros_like(xs), torch.zeros_like(vs)
        for first, count in layout.slot_ranges():
            block = _block_view(xs, keys, vs, slots, layout, rows, first, count, offset=0)
            part = slice(first, first + count)
            bq, bk, bv = _block_backward(block, grad_s[:, part], out_s[:, part], lse_s[:, part])
            dq[:, part] = bq.flatten(1, 2)
            _fold_windows(dk, bk, first, layout.chunk)
            _fold_windows(dv, bv, first, layout.chunk)
        grad_q[rows] = _to_positions(dq, inverse[rows], layout)
        grad_k[rows] = _to_positions(_fold_wrap(dk, layout), inverse[rows], layout)
        grad_v[rows] = _to_positions(_fold_wrap(dv, layout), inverse[rows], layout)
    grad_q, grad_k, grad_v = (t.view(-1, d) for t in (grad_q, grad_k, grad_v))
    # Added in place a block of rows at a time: full-size temporaries here would set the peak of a training
    # step whose layers are checkpointed (this layer is then recomputed on top of what the others keep).
    for start in range(0, x.shape[0], TRAIN_BLOCK_SLOTS):
        rows = slice(start, start + TRAIN_BLOCK_SLOTS)
        grad_q[rows] += _key_scale_backward(x[rows], key_scale[rows], grad_k[rows])
    return grad_q, grad_v


def _inverse_sort(sorted_pos: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """``(G, R, Lp)``: the slot (in ``[0, R * Lp)``) holding each position in each round, from the position
    of each slot ``sorted_pos`` ``(G, R * Lp)``."""
    n_rows, total = sorted_pos.shape
    shape = (n_rows, layout.n_hashes, layout.padded_len)
    slot = torch.arange(total, device=sorted_pos.device).view(1, *shape[1:]).expand(shape)
    return torch.empty(shape, dtype=torch.long, device=sorted_pos.device).scatter_(2, sorted_pos.view(shape), slot)


def _fold_wrap(extended: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """Slot-ordered gradients over the extended slots ``(g, before * c + R * Lp + after * c, d)`` -> over the
    ``R * Lp`` slots, the circular copies in front and behind added onto the slots they copy."""
    front, total = layout.front, layout.total
    core = extended[:, front:front + total]
    wrap = torch.arange(-front, total + layout.after * layout.chunk, device=extended.device) % total
    if front:
        core.index_add_(1, wrap[:front], extended[:, :front])
    if layout.after:
        core.index_add_(1, wrap[front + total:], extended[:, front + total:])
    return core


def _to_positions(slot_grads: torch.Tensor, inverse: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """``(g, R * Lp, d)`` per slot -> ``(g, L, d)`` per position, summed over the rounds (padding dropped)."""
    g, total, d = slot_grads.shape
    index = (inverse + torch.arange(g, device=inverse.device).view(g, 1, 1) * total).flatten()
    per_round = slot_grads.reshape(g * total, d).index_select(0, index).view(g, layout.n_hashes, -1, d)
    return per_round.sum(1)[:, :layout.seq_len]


def _fold_windows(acc: torch.Tensor, windows: torch.Tensor, first: int, chunk: int) -> None:
    """Add the gradients of a block's overlapping key windows ``(g, n, W, d)`` onto their slots in ``acc``
    ``(g, S, d)``: chunk ``i``'s window starts at slot ``first + i * chunk``."""
    n, window = windows.shape[1], windows.shape[2]
    for j in range(0, window, chunk):
        acc[:, first + j:first + j + n * chunk].view(acc.shape[0], n, chunk, -1).add_(windows[:, :, j:j + chunk])


def _key_scale_backward(x: torch.Tensor, key_scale: torch.Tensor, grad_keys: torch.Tensor) -> torch.Tensor:
    """Gradient of ``x`` ``(N, d)`` through ``k = x * key_scale`` (:func:`_key_scale`) given ``dL/dk``.

    With ``s = rsqrt(m + eps) / sqrt(d)`` and ``m = mean(x^2)``: ``ds/dx = -s x / (d (m + eps))``, so
    ``dL/dx = s dk - x s (dk . x) / (d (m + eps))``, and ``1 / (d (m + eps)) = s^2``.
    """
    return key_scale * grad_keys - x * (key_scale.pow(3) * (grad_keys * x).sum(-1, keepdim=True))


def _block_backward(block: _Block, grad: torch.Tensor, out: torch.Tensor, lse: torch.Tensor):
    """Gradients for a block's queries, keys and values ``(G, n, ., d)``.

    Summed over rounds, the output is one softmax over every (round, window slot) a query saw:
    ``out_i = sum_{r,j} exp(s_rij - lse_i) v_j`` with ``lse`` the log-sum-exp over all of them. So each block
    takes the ordinary attention backward pass with the final ``out``, ``lse`` and output gradient (all
    ``(G * n * c, ...)``) of its queries: ``dS = P * (dP - rowsum(grad * out))`` with ``P = exp(s - lse)``.
    """
    shape = block.queries.shape
    grad, out, lse = grad.view(shape), out.view(shape), lse.view(shape[:-1])
    queries, keys, values = block.queries.detach(), block.keys.detach(), block.values.detach()
    if queries.device.type == "cpu" and _FUSED_CPU_BACKWARD is not None:
        return _FUSED_CPU_BACKWARD(grad, queries, keys, values, out, lse, 0.0, False, attn_mask=block.bias,
                                   scale=1.0)
    probs = (queries @ keys.transpose(-1, -2) + block.bias - lse.unsqueeze(-1)).exp().to(queries.dtype)
    grad_probs = grad @ values.transpose(-1, -2)
    grad_logits = probs * (grad_probs - (grad * out).sum(-1, keepdim=True))
    return grad_logits @ keys, grad_logits.transpose(-1, -2) @ queries, probs.transpose(-1, -2) @ grad


@torch.no_grad()
def _effective_attention(x, v, slots: _Slots, lse, layout: _Layout) -> torch.Tensor:
    """``(G, Lp, Lp)``: ``A[i, j] = sum_r w_{r,i} * (weight query i gave position j in round r)``.

    With the overall log-sum-exp ``lse`` that is ``sum over (r, window slots holding j) exp(logit - lse_i)``;
    duplicates of a key add up.
    """
    n_rows, padded_len = slots.pos.shape[0], layout.padded_len
    attn = x.new_zeros(n_rows, padded_len * padded_len, dtype=lse.dtype)  # float32 at least, for rollout
    key_scale = _key_scale(x)
    for rows, first, count in _blocks(n_rows, layout):
        block = _gather_block(x, v, key_scale, slots, layout, rows, first, count)
        logits = _logits(block)
        query_pos, key_pos = _block_positions(slots, layout, rows, first, count)
        query_first = first + layout.front
        at_queries = slots.out_index(rows, slice(query_first, query_first + count), padded_len).flatten()
        weights = (logits.to(lse.dtype) - lse.index_select(0, at_queries).view(*logits.shape[:3], 1)).exp()
        flat = query_pos.unsqueeze(-1) * padded_len + key_pos.unsqueeze(-2)
        attn[rows].scatter_add_(1, flat.flatten(1), weights.flatten(1))
    return attn.view(n_rows, padded_len, padded_len)


def _check_inputs(qk, v, n_buckets, chunk_length, buckets, key_padding_mask, n_hashes):
    if qk.ndim != 4 or v.shape != qk.shape:
        raise ValueError(f"lsh_attention: qk and v must both be (B, H, L, d_h), got {tuple(qk.shape)} and "
                         f"{tuple(v.shape)}")
    bsz, heads, seq_len, _ = qk.shape
    bucket_factors(n_buckets)  # validates
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
        round_buckets = hash_vectors(qk, rotations, n_buckets)
    else:
        round_buckets = buckets.reshape(bsz, heads, layout.n_hashes, seq_len)
    if pad is not None:
        # Padding goes to a bucket of its own after every real one, as in Hugging Face's Reformer.
        round_buckets = F.pad(round_buckets, (0, layout.padded_len - seq_len))
        is_pad = pad.view(bsz, heads, 1, layout.padded_len)
        round_buckets = torch.where(is_pad, round_buckets.amax() + 1, round_buckets)
    return sort_by_bucket(round_buckets).flatten(2).flatten(0, 1)


# torch.compile runs this eagerly: tracing it would unroll the Python loop over blocks into the graph (compiling
# sct_tiny took 105 s with it traced, 19 s without, for no faster step), and each block is one fused kernel already.
@torch.compiler.disable
def lsh_attention(
    qk: torch.Tensor, v: torch.Tensor, *, n_hashes: int, n_buckets: int | tuple[int, ...], chunk_length: int,
    chunks_before: int = 1, chunks_after: int = 0, rotations: torch.Tensor | None = None,
    buckets: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None, return_attention: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reformer LSH self-attention with shared queries/keys.

    Args:
        qk, v: ``(B, H, L, d_h)``; ``qk`` serves as queries and (normalised) keys.
        n_buckets: buckets per round, or their factors ``(n_1, n_2, ...)`` (Hugging Face's factorised hashing:
            ``n_1 * n_2 * ...`` buckets for ``sum(n_i) / 2`` rotations, see :func:`hash_vectors`).
        rotations: ``(H, d_h, n_hashes, sum(factors) // 2)``; drawn from ``generator`` when None.
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
    needs_grad = torch.is_grad_enabled() and (qk.requires_grad or v.requires_grad)
    block_slots = TRAIN_BLOCK_SLOTS if needs_grad else BLOCK_SLOTS
    short = seq_len <= chunk_length
    padded_len = seq_len if short else seq_len + (-seq_len % chunk_length)
    pad, pad_chunks = None, 0
    if key_padding_mask is not None or padded_len > seq_len:
        pad = torch.ones(bsz, padded_len, dtype=torch.bool, device=qk.device)
        pad[:, :seq_len] = False if key_padding_mask is None else key_padding_mask
        # Padding sorts after every real bucket, so it fills at most this many chunks at the end of a round.
        pad_chunks = -(-int(pad.sum(1).max()) // (padded_len if short else chunk_length))
        pad = pad.repeat_interleave(heads, dim=0)  # (B * H, Lp)
    if short:
        layout = _Layout(seq_len, seq_len, 1, seq_len, 0, 0, block_slots, pad_chunks)
    else:
        layout = _Layout(seq_len, padded_len, n_hashes, chunk_length, chunks_before, chunks_after, block_slots,
                         pad_chunks)
    sorted_pos = _sorted_positions(qk, layout, n_buckets, rotations, buckets, pad, generator)
    slots = _Slots.build(sorted_pos, pad, layout)
    x, values = qk.reshape(-1, dim_head), v.reshape(-1, dim_head)  # (B * H * L, d_h)
    out, lse = _LSHAttentionFunction.apply(x, values, slots, layout)
    out = out.view(bsz, heads, layout.padded_len, dim_head)[:, :, :seq_len]
    if not return_attention:
        return out
    attn = _effective_attention(x.detach(), values.detach(), slots, lse, layout)
    return out, attn.view(bsz, heads, layout.padded_len, layout.padded_len)[:, :, :seq_len, :seq_len]


@dataclass(frozen=True)
class LSHConfig:
    """The LSH settings of one attention layer (Reformer's; the SCT paper gives none).

    ``n_hashes`` rounds, ``n_buckets`` (None: a power of two from the sequence length, Hugging Face's
    rule; or a tuple of factors, see :func:`lsh_attention`), chunks of ``chunk_length`` slots that also see
    ``chunks_before`` / ``chunks_after`` neighbours. ``factorise_above``: when ``n_buckets`` is None and the
    length's power of two exceeds it, hash with its two factors (:func:`factorised`), as Hugging Face does
    above its limit, so hashing costs O(L sqrt(n_buckets)) instead of O(L n_buckets) as L grows; None never
    factorises.
    """

    n_hashes: int = 2
    n_buckets: int | tuple[int, ...] | None = None
    chunk_length: int = 64
    chunks_before: int = 1
    chunks_after: int = 0
    factorise_above: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_buckets, list):
            object.__setattr__(self, "n_buckets", tuple(self.n_buckets))
        check(self.n_buckets is None or is_bucket_spec(self.n_buckets), self, "n_buckets",
              "None, an even integer >= 2 or a tuple of them (factorised buckets)")
        check(self.factorise_above is None or self.factorise_above >= 2, self, "factorise_above", "None or >= 2")
        check_positive_ints(self, ("n_hashes", "chunk_length"))
        check_positive_ints(self, ("chunks_before", "chunks_after"), minimum=0)


class LSHSelfAttention(nn.Module):
    """LSH self-attention block: ``(B, L, C) -> (B, L, C)``.

    Shared query/key and value projections (no bias, as in Reformer), :func:`lsh_attention`, and an
    output projection. ``n_buckets=None`` picks a power of two from L (Hugging Face's rule). Rotations come
    from a generator seeded with ``seed``: a fresh draw per forward in training, seeded from ``seed`` and the
    ``draws`` counter (a buffer, so a checkpoint resumes the same sequence of rotations; ``resample=False``
    keeps the eval draw in training too), the same draw in every eval forward. Set
    ``store_attention = True`` to keep the effective dense attention ``(B, H, L, L)`` of the last call in
    ``last_attention`` (for attention rollout).
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, n_hashes: int = 2,
                 n_buckets: int | tuple[int, ...] | None = None, chunk_length: int = 64, chunks_before: int = 1,
                 chunks_after: int = 0, seed: int = 0, resample: bool = True, proj_drop: float = 0.0,
                 factorise_above: int | None = None):
        super().__init__()
        config = LSHConfig(n_hashes, n_buckets, chunk_length, chunks_before, chunks_after, factorise_above)
        n_buckets, self.factorise_above = config.n_buckets, factorise_above
        self.heads = heads
        self.dim_head = dim_head or dim // heads
        inner = heads * self.dim_head
        self.n_hashes, self.n_buckets, self.chunk_length = n_hashes, n_buckets, chunk_length
        self.chunks_before, self.chunks_after = chunks_before, chunks_after
        self.seed, self.resample = seed, resample
        self.qk = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))
        self.store_attention = False
        self.last_attention: torch.Tensor | None = None
        self._eval_rotations: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def from_config(cls, dim: int, heads: int, dim_head: int | None, config: LSHConfig,
                    seed: int = 0) -> LSHSelfAttention:
        """The layer with the settings of ``config``."""
        return cls(dim, heads, dim_head, **dataclasses.asdict(config), seed=seed)

    def buckets_for(self, seq_len: int) -> int | tuple[int, ...]:
        """The buckets (or their factors) this layer hashes a sequence of ``seq_len`` tokens into."""
        if self.n_buckets:
            return self.n_buckets
        n_buckets = default_n_buckets(seq_len, self.chunk_length)
        return factorised(n_buckets) if self.factorise_above and n_buckets > self.factorise_above else n_buckets

    def rotations(self, n_buckets: int | tuple[int, ...], device=None) -> torch.Tensor:
        """``(H, d_h, n_hashes, sum(factors) // 2)``: the next training draw, or the fixed eval draw.

        The eval draw is kept once drawn: the same tensor every time, which a tracer (ONNX export) then
        records as a constant instead of a random-number op.
        """
        if self.training and self.resample:
            # A checkpointed layer's replay in backward must hash with the draw its forward pass used.
            if not recomputing():
                self.draws += 1
            seed = (self.seed * 1_000_003 + int(self.draws)) % 2**63
            return random_rotations(self.heads, self.dim_head, self.n_hashes, n_buckets,
                                    torch.Generator().manual_seed(seed), device)
        key = (n_buckets, str(device))
        if key not in self._eval_rotations:
            self._eval_rotations[key] = random_rotations(self.heads, self.dim_head, self.n_hashes, n_buckets,
                                                         torch.Generator().manual_seed(self.seed), device)
        return self._eval_rotations[key]

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, L, C)``, ``key_padding_mask`` ``(B, L)`` bool (True = padding) -> ``(B, L, C)``."""
        split = "b l (h d) -> b h l d"
        qk = rearrange(self.qk(x), split, h=self.heads)
        v = rearrange(self.v(x), split, h=self.heads)
        n_buckets = self.buckets_for(int(x.shape[-2]))
        if torch.jit.is_tracing():  # export: the same attention as one flat graph (sort and gather ops)
            from sct.models.attention.lsh_vectorized import lsh_attention_vectorized

            out = lsh_attention_vectorized(
                qk, v, n_hashes=self.n_hashes, n_buckets=n_buckets, rotations=self.rotations(n_buckets, x.device),
                chunk_length=self.chunk_length, chunks_before=self.chunks_before, chunks_after=self.chunks_after,
                key_padding_mask=key_padding_mask)
            return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))
        result = lsh_attention(
            qk, v, n_hashes=self.n_hashes, n_buckets=n_buckets, rotations=self.rotations(n_buckets, x.device),
            chunk_length=self.chunk_length, chunks_before=self.chunks_before, chunks_after=self.chunks_after,
            key_padding_mask=key_padding_mask, return_attention=self.store_attention,
        )
        out, self.last_attention = result if self.store_attention else (result, None)
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))

    def relevance(self, r: torch.Tensor, residual: float = 0.5, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)`` of one clip's frames through the effective dense weights (``(T, H, N, N)``)."""
        return frame_relevance(self, r, residual)
