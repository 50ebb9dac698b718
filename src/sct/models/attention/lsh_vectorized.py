"""Image LSH attention as one flat graph of tensor operations, for export (ONNX) rather than speed.

The same attention as :func:`sct.models.attention.lsh.lsh_attention` (Reformer semantics: shared
query/key, angular hashing with given rotations, a stable sort by (round, bucket, position), chunks that
look ``chunks_before`` back and ``chunks_after`` ahead circularly, a self mask, rounds combined by their
log-sum-exp), written without Python loops over blocks, in-place updates, custom autograd or fused
kernels: hashing is a matmul and an argmax, the sort an ``argsort`` of ``bucket * Lp + position`` (unique
keys, so any sort is stable), the chunks ``gather`` and ``roll``. A tracer records it as ONNX
MatMul / ArgMax / TopK / GatherElements ops whose shapes follow the batch size. It holds every chunk's
logits at once, ``O(L * window)`` memory, where the blocked version keeps ``O(L)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sct.models.attention.lsh import mask_values


def _hash(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Buckets ``(B, H, R, L)`` of ``x`` ``(B, H, L, d)``: argmax over ``[x R, -x R]`` per round."""
    rounds, half = rotations.shape[2:]
    rotated = (x @ rotations.flatten(2)).unflatten(-1, (rounds, half)).transpose(2, 3)  # (B, H, R, L, n_b/2)
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def _look_around(chunks: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``(G, n, c, d)`` -> ``(G, n, (1 + before + after) * c, d)``: each chunk, then its predecessors
    (nearest last, as the blocked version orders them), then its successors, circularly."""
    parts = [torch.roll(chunks, shifts=j, dims=1) for j in range(before, 0, -1)]
    parts += [chunks] + [torch.roll(chunks, shifts=-j, dims=1) for j in range(1, after + 1)]
    return torch.cat(parts, dim=2)


def lsh_attention_vectorized(qk: torch.Tensor, v: torch.Tensor, *, n_hashes: int, n_buckets: int, chunk_length: int,
                             rotations: torch.Tensor, chunks_before: int = 1, chunks_after: int = 0,
                             key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``qk``, ``v`` ``(B, H, L, d_h)``, ``rotations`` ``(H, d_h, n_hashes, n_buckets // 2)``,
    ``key_padding_mask`` ``(B, L)`` bool (True = padding) -> ``(B, H, L, d_h)``."""
    bsz, heads, seq_len, dim_head = qk.shape[0], int(qk.shape[1]), int(qk.shape[2]), int(qk.shape[3])
    dense = seq_len <= chunk_length
    rounds, chunk = (1, seq_len) if dense else (n_hashes, chunk_length)
    before, after = (0, 0) if dense else (chunks_before, chunks_after)
    padded = seq_len + (-seq_len % chunk)
    pad = torch.zeros(1, seq_len, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
    pad = F.pad(pad, (0, padded - seq_len), value=True)  # (B | 1, Lp)
    x, values = (F.pad(t, (0, 0, 0, padded - seq_len)) for t in (qk, v))  # (B, H, Lp, d)
    positions = torch.arange(padded)
    if dense:
        order = positions.view(1, 1, 1, padded).expand(bsz, heads, 1, padded)
    else:
        buckets = _hash(x, rotations.to(x.dtype))  # (B, H, R, Lp)
        # Padding goes to a bucket after every real one, as in the blocked version.
        buckets = torch.where(pad[:, None, None, :], n_buckets, buckets)
        order = torch.argsort(buckets * padded + positions, dim=-1)  # (B, H, R, Lp), stable by construction
    order = order.flatten(2)  # (B, H, R * Lp): round r's slots are positions of round r's sort
    index = order.unsqueeze(-1).expand(-1, -1, -1, dim_head)
    xs, vs = x.gather(2, index), values.gather(2, index)
    keys = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + 1e-6) * dim_head ** -0.5
    n_chunks = rounds * padded // chunk

    def chunked(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(bsz, heads, n_chunks, chunk, *t.shape[3:])

    window_keys = _look_around(chunked(keys).flatten(0, 1), before, after)  # (B*H, n, W, d)
    window_values = _look_around(chunked(vs).flatten(0, 1), before, after)
    query_pos = chunked(order).flatten(0, 1).unsqueeze(-1)  # (B*H, n, c, 1)
    key_pos = _look_around(query_pos, before, after).transpose(-1, -2)  # (B*H, n, 1, W)
    pad_value, self_value = mask_values(x.dtype)
    key_pad = pad.unsqueeze(1).expand(bsz, heads, padded).flatten(0, 1).gather(1, key_pos.flatten(1))
    logits = chunked(xs).flatten(0, 1) @ window_keys.transpose(-1, -2)  # (B*H, n, c, W)
    logits = logits + (query_pos == key_pos).to(x.dtype) * self_value + key_pad.view_as(key_pos) * pad_value
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    out = torch.softmax(logits, dim=-1) @ window_values  # (B*H, n, c, d)
    # Back to original positions per round, then the rounds weighted by their share of the total mass.
    unsort = torch.argsort(order.view(bsz, heads, rounds, padded), dim=-1)
    out = out.reshape(bsz, heads, rounds, padded, dim_head).gather(3, unsort.unsqueeze(-1).expand(
        -1, -1, -1, -1, dim_head))
    lse = lse.reshape(bsz, heads, rounds, padded, 1).gather(3, unsort.unsqueeze(-1))
    out = (out * torch.softmax(lse, dim=2)).sum(dim=2)
    return out[:, :, :seq_len]
