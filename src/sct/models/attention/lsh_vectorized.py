"""Image LSH attention as one flat graph of tensor operations, for export (ONNX) rather than speed.

The same attention as :func:`sct.models.attention.lsh.lsh_attention` (Reformer semantics: shared
query/key, angular hashing with given rotations, a stable sort by (round, bucket, position), chunks that
look ``chunks_before`` back and ``chunks_after`` ahead circularly, a self mask, rounds combined by their
log-sum-exp), written without Python loops over blocks, in-place updates, custom autograd or fused
kernels: hashing is a matmul and an argmax, the sort an ``argsort`` of ``bucket * Lp + position`` (unique
keys, so any sort is stable), rows are moved by index (row gathers of whole vectors), the chunks ``roll``.
A tracer records it as ONNX MatMul / ArgMax / TopK / Gather / ScatterElements ops whose shapes follow the
batch size. It holds every chunk's logits at once, ``O(L * window)`` memory, where the blocked version
keeps ``O(L)``; its operations are picked for onnxruntime's CPU kernels (benchmarks/onnx_profile.py): over
the logits, only the two matmuls, one mask addition (a constant diagonal outside round-crossing chunks),
one Softmax and two max reductions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sct.models.attention.lsh import bucket_count, bucket_factors, mask_values


def _hash(x: torch.Tensor, rotations: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Buckets ``(B, H, R, L)`` of ``x`` ``(B, H, L, d)``: per round and factor ``n_i``, the argmax over
    ``[x R_i, -x R_i]`` on that factor's ``n_i / 2`` columns, as
    :func:`sct.models.attention.lsh_hashing.hash_vectors` finds it (the entry of ``x R_i`` largest in
    magnitude, shifted by ``n_i / 2`` when negative), so both agree on ties too; the factors combine as
    ``b_1 + n_1 b_2 + ...``."""
    rounds, half = rotations.shape[2:]
    rotated = (x @ rotations.flatten(2)).unflatten(-1, (rounds, half))  # (B, H, L, R, half)
    buckets, column, scale = 0, 0, 1
    for factor in factors:
        part = rotated[..., column:column + factor // 2]
        best = part.abs().argmax(dim=-1, keepdim=True)
        negative = part.gather(-1, best) < 0
        buckets = buckets + scale * (best + negative.long() * (factor // 2))
        column, scale = column + factor // 2, scale * factor
    return buckets.squeeze(-1).transpose(2, 3)


def _look_around(chunks: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``(G, n, c, d)`` -> ``(G, n, (1 + before + after) * c, d)``: each chunk, then its predecessors
    (nearest last, as the blocked version orders them), then its successors, circularly."""
    parts = [torch.roll(chunks, shifts=j, dims=1) for j in range(before, 0, -1)]
    parts += [chunks] + [torch.roll(chunks, shifts=-j, dims=1) for j in range(1, after + 1)]
    return torch.cat(parts, dim=2)


def _row_offsets(index: torch.Tensor, row_length: int) -> torch.Tensor:
    """``index`` ``(G, S)`` into rows of length ``row_length`` -> flat indices ``(G * S,)`` into the rows
    flattened to ``(G * row_length, ...)``."""
    # Row numbers counted from the index itself: a traced arange or ones_like would fix the row count (it
    # follows the batch size) as a constant of the example's.
    rows = (index[:, :1] * 0 + 1).cumsum(0) - 1
    return (index + rows * row_length).flatten()


def _inverse(order: torch.Tensor) -> torch.Tensor:
    """The inverse of each row's permutation ``order`` ``(..., L)``: a scatter, cheaper than a second sort."""
    positions = order * 0 + torch.arange(order.shape[-1], device=order.device)  # shaped like order when traced
    return order.scatter(-1, order, positions)  # a permutation: every entry is written


def _attend(logits: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(logits) @ values`` and the log-sum-exp of ``logits`` ``(..., c, W)``. The row's largest
    probability is ``1 / sum(exp(logits - max))``, so the log-sum-exp is ``max - log(max probability)``: two
    cheap reductions beside one Softmax (onnxruntime's ReduceLogSumExp makes several passes over the logits)."""
    probs = torch.softmax(logits, dim=-1)
    return probs @ values, logits.amax(dim=-1, keepdim=True) - probs.amax(dim=-1, keepdim=True).log()


def _chunk_ranges(per_round: int, before: int, after: int) -> list[tuple[int, int, bool]]:
    """``(start, stop, exact)`` ranges of the chunks of a round. A window of the first ``before`` or the last
    ``after`` chunks reaches into another round (or wraps onto itself), where a key may be any position, so
    the self mask compares positions (``exact``); every other window holds its own round's positions once,
    so a query meets itself only on the diagonal of its own chunk, a constant mask."""
    head = min(before, per_round)
    tail = min(after, per_round - head)
    ranges = [(0, head, True), (head, per_round - tail, False), (per_round - tail, per_round, True)]
    return [r for r in ranges if r[1] > r[0]]


def lsh_attention_vectorized(qk: torch.Tensor, v: torch.Tensor, *, n_hashes: int, n_buckets: int | tuple[int, ...],
                             chunk_length: int, rotations: torch.Tensor, chunks_before: int = 1,
                             chunks_after: int = 0, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``qk``, ``v`` ``(B, H, L, d_h)``, ``rotations`` ``(H, d_h, n_hashes, sum(factors) // 2)`` for ``n_buckets``
    an int or its factors (see ``lsh_attention``),
    ``key_padding_mask`` ``(B, L)`` bool (True = padding) -> ``(B, H, L, d_h)``."""
    bsz, heads, seq_len, dim_head = qk.shape[0], int(qk.shape[1]), int(qk.shape[2]), int(qk.shape[3])
    dense = seq_len <= chunk_length
    rounds, chunk = (1, seq_len) if dense else (n_hashes, chunk_length)
    before, after = (0, 0) if dense else (chunks_before, chunks_after)
    padded = seq_len + (-seq_len % chunk)
    padding = key_padding_mask is not None or padded > seq_len  # fixed by the shapes: no branch on values
    pad = torch.zeros(1, seq_len, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
    pad = F.pad(pad, (0, padded - seq_len), value=True)  # (B | 1, Lp)
    x, values = (F.pad(t, (0, 0, 0, padded - seq_len)) for t in (qk, v))  # (B, H, Lp, d)
    positions = torch.arange(padded)
    if dense:
        order = positions.view(1, 1, 1, padded).expand(bsz, heads, 1, padded)
    else:
        buckets = _hash(x, rotations.to(x.dtype), bucket_factors(n_buckets))  # (B, H, R, Lp)
        # Padding goes to a bucket after every real one, as in the blocked version.
        buckets = torch.where(pad[:, None, None, :], bucket_count(n_buckets), buckets)
        order = torch.argsort(buckets * padded + positions, dim=-1)  # (B, H, R, Lp), stable by construction
    order = order.flatten(0, 1).flatten(1)  # (B*H, R * Lp): round r's slots are positions of round r's sort
    slots = _row_offsets(order, padded)
    xs = x.flatten(0, 2).index_select(0, slots).view(-1, rounds * padded, dim_head)  # (B*H, R * Lp, d)
    vs = values.flatten(0, 2).index_select(0, slots).view_as(xs)
    keys = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + 1e-6) * dim_head ** -0.5
    n_chunks = rounds * padded // chunk

    def chunked(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, n_chunks, chunk, *t.shape[2:])  # -1: B*H follows the batch when traced

    window_keys = _look_around(chunked(keys), before, after)  # (B*H, n, W, d)
    window_values = _look_around(chunked(vs), before, after)
    query_pos = chunked(order).unsqueeze(-1)  # (B*H, n, c, 1)
    key_pos = _look_around(query_pos, before, after).transpose(-1, -2)  # (B*H, n, 1, W)
    pad_value, self_value = mask_values(x.dtype)
    if padding:
        key_pad = pad.unsqueeze(1).expand(bsz, heads, padded).flatten(0, 1).gather(1, key_pos.flatten(1))
        key_bias = key_pad.view_as(key_pos).to(x.dtype) * pad_value  # (B*H, n, 1, W)
    diagonal = F.pad(torch.eye(chunk, dtype=x.dtype) * self_value, (before * chunk, after * chunk))  # (c, W)

    parts = []
    for start, stop, exact in _chunk_ranges(n_chunks // rounds, before, after):
        def part(t: torch.Tensor, start=start, stop=stop) -> torch.Tensor:  # (B*H, n, ...) -> (B*H, R, m, ...)
            return t.unflatten(1, (rounds, n_chunks // rounds))[:, :, start:stop]

        logits = part(chunked(xs)) @ part(window_keys).transpose(-1, -2)  # (B*H, R, m, c, W)
        mask = (part(query_pos) == part(key_pos)).to(x.dtype) * self_value if exact else diagonal
        logits = logits + mask + part(key_bias) if padding else logits + mask
        parts.append(_attend(logits, part(window_values)))
    out = torch.cat([o for o, _ in parts], dim=2)  # (B*H, R, n / R, c, d), sorted order
    lse = torch.cat([z for _, z in parts], dim=2)
    # Back to original positions per round, then the rounds weighted by their share of the total mass.
    back = _row_offsets(_inverse(order.view(-1, rounds, padded)).flatten(0, 1), padded)
    out = out.reshape(-1, dim_head).index_select(0, back).view(bsz, heads, rounds, padded, dim_head)
    lse = lse.reshape(-1, 1).index_select(0, back).view(bsz, heads, rounds, padded, 1)
    out = (out * torch.softmax(lse, dim=2)).sum(dim=2)
    return out[:, :, :seq_len]
