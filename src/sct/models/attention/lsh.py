"""Image LSH attention (SCT paper §3.2, Eq. 3) with Hugging Face Reformer semantics.

Shared query/key ``x``, angular LSH with random rotations, ``n_hashes`` rounds, a stable sort by
(round, bucket, position), chunks of ``chunk_length`` that also see ``chunks_before`` previous and
``chunks_after`` following chunks (circularly), a self mask, and the rounds combined through their
log-sum-exp. See ``specs/lsh-attention.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sct.errors import ConfigError

# (padding key, self) logit replacements, as Hugging Face's Reformer uses them.
MASK_VALUES = {torch.float32: (-1e9, -1e5), torch.float64: (-1e9, -1e5)}
LOW_PRECISION_MASK_VALUES = (-1e4, -1e3)


def default_n_buckets(seq_len: int, chunk_length: int) -> int:
    """Hugging Face's choice: the power of two at or below ``2 * seq_len / chunk_length`` (at least 2)."""
    return max(2, 2 ** ((2 * (seq_len // chunk_length)).bit_length() - 1))


def random_rotations(heads: int, dim_head: int, n_hashes: int, n_buckets: int,
                     generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian rotations ``(H, d_h, n_hashes, n_buckets // 2)`` drawn on the generator's device, then moved."""
    if n_buckets % 2:
        raise ConfigError(f"LSH attention: n_buckets must be even, got {n_buckets}")
    gen_device = generator.device if generator is not None else device
    rot = torch.randn(heads, dim_head, n_hashes, n_buckets // 2, generator=generator, device=gen_device, dtype=dtype)
    return rot.to(device)


def hash_vectors(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH buckets ``(B, H, n_hashes, L)`` in ``[0, n_buckets)`` of ``x`` ``(B, H, L, d_h)``.

    Bucket = argmax over ``[x R, -x R]`` per round; ``x`` is detached (no gradient through hashing).
    """
    rotated = torch.einsum("bhld,hdrk->bhrlk", x.detach(), rotations.to(x.dtype))
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def sort_by_bucket(buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable per-round sort of ``buckets`` ``(B, H, R, L)``: ``(sorted_pos, undo)``, both ``(B, H, R, L)``.

    ``sorted_pos[..., r, s]`` is the position at sorted slot ``s`` of round ``r`` (positions ascend within a
    bucket); ``undo`` is the inverse permutation. Rounds never mix, so sorting each round on its own
    gives the same order as one sort by (round, bucket, position).
    """
    sorted_pos = torch.sort(buckets, dim=-1, stable=True).indices
    slots = torch.arange(buckets.shape[-1], device=buckets.device).expand_as(sorted_pos)
    undo = torch.empty_like(sorted_pos).scatter_(-1, sorted_pos, slots)
    return sorted_pos, undo


def _look_around(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Window of chunk ``n``: chunks ``n - before .. n + after`` (circular) along dim 2, joined on dim 3.

    ``t``: ``(B, H, N, c, ...)`` -> ``(B, H, N, (1 + before + after) c, ...)``.
    """
    parts = [t.roll(-shift, dims=2) if shift else t for shift in range(-before, after + 1)]
    return torch.cat(parts, dim=3)


def _normalise_keys(x: torch.Tensor) -> torch.Tensor:
    """Reformer's key normalisation: unit RMS, then divided by ``sqrt(d_h)``."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) / math.sqrt(x.shape[-1])


def _attend_chunks(q: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None,
                   before: int, after: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of every chunk to its window.

    ``q``, ``v``: ``(B, H, N, c, d)``; ``pos``: original positions ``(B, H, N, c)``; ``pad``: padding flags
    ``(B, H, N, c)`` or None. Returns ``out`` ``(B, H, N, c, d)``, log-sum-exp ``z`` ``(B, H, N, c)`` and
    the weights ``(B, H, N, c, W)`` over the window's ``W = (1 + before + after) c`` keys.
    """
    pad_value, self_value = MASK_VALUES.get(q.dtype, LOW_PRECISION_MASK_VALUES)
    k = _look_around(_normalise_keys(q), before, after)
    logits = q @ k.transpose(-2, -1)
    if pad is not None:
        logits = logits.masked_fill(_look_around(pad, before, after).unsqueeze(-2), pad_value)
    is_self = pos.unsqueeze(-1) == _look_around(pos, before, after).unsqueeze(-2)
    logits = logits.masked_fill(is_self, self_value)
    z = logits.logsumexp(dim=-1)
    weights = torch.exp(logits - z.unsqueeze(-1))
    return weights @ _look_around(v, before, after), z, weights


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
    bsz, heads, seq_len, dim_head = qk.shape
    if seq_len <= chunk_length:
        return _dense_self_masked(qk, v, key_padding_mask, return_attention)
    pad_len = -seq_len % chunk_length
    padded_len = seq_len + pad_len
    if buckets is None:
        if rotations is None:
            rotations = random_rotations(heads, dim_head, n_hashes, n_buckets, generator, qk.device)
        round_buckets = hash_vectors(qk, rotations)
    else:
        round_buckets = buckets.reshape(bsz, heads, n_hashes, seq_len)
    pad = None
    if key_padding_mask is not None or pad_len:
        pad = torch.zeros(bsz, padded_len, dtype=torch.bool, device=qk.device)
        pad[:, seq_len:] = True
        if key_padding_mask is not None:
            pad[:, :seq_len] = key_padding_mask
        # Padding goes to a bucket of its own after every real one, as in Hugging Face's Reformer.
        extra = round_buckets.amax() + 1
        round_buckets = F.pad(round_buckets, (0, pad_len))
        round_buckets = torch.where(pad[:, None, None, :], extra, round_buckets)
        qk, v = F.pad(qk, (0, 0, 0, pad_len)), F.pad(v, (0, 0, 0, pad_len))
    sorted_pos, undo = sort_by_bucket(round_buckets)

    flat_pos = sorted_pos.flatten(2)  # (B, H, R * Lp)
    index = flat_pos.unsqueeze(-1).expand(-1, -1, -1, dim_head)
    chunked = "b h (n c) d -> b h n c d"
    q_sorted = rearrange(qk.gather(2, index), chunked, c=chunk_length)
    v_sorted = rearrange(v.gather(2, index), chunked, c=chunk_length)
    pos_chunks = rearrange(flat_pos, "b h (n c) -> b h n c", c=chunk_length)
    pad_chunks = None if pad is None else pad[:, None, :].expand(-1, heads, -1).gather(2, flat_pos)
    if pad_chunks is not None:
        pad_chunks = rearrange(pad_chunks, "b h (n c) -> b h n c", c=chunk_length)
    out, z, weights = _attend_chunks(q_sorted, v_sorted, pos_chunks, pad_chunks, chunks_before, chunks_after)

    out = rearrange(out, "b h (r n) c d -> b h r (n c) d", r=n_hashes)
    out = out.gather(3, undo.unsqueeze(-1).expand(-1, -1, -1, -1, dim_head))
    z = rearrange(z, "b h (r n) c -> b h r (n c)", r=n_hashes).gather(3, undo)
    round_weights = z.softmax(dim=2)  # (B, H, R, Lp)
    result = (out * round_weights.unsqueeze(-1)).sum(dim=2)[:, :, :seq_len]
    if not return_attention:
        return result
    attn = _effective_attention(weights, pos_chunks, round_weights, sorted_pos, chunks_before, chunks_after)
    return result, attn[:, :, :seq_len, :seq_len]


def _effective_attention(weights: torch.Tensor, pos_chunks: torch.Tensor, round_weights: torch.Tensor,
                         sorted_pos: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Dense ``(B, H, Lp, Lp)`` map: ``A[i, j] = sum_r w_{r,i} * (weight query i gave position j in round r)``.

    ``weights`` ``(B, H, N, c, W)`` and ``pos_chunks`` ``(B, H, N, c)`` are in sorted order; ``round_weights``
    ``(B, H, R, Lp)`` in original order; ``sorted_pos`` ``(B, H, R, Lp)`` the sort.
    """
    bsz, heads = weights.shape[:2]
    padded_len = round_weights.shape[-1]
    slot_weights = rearrange(round_weights.gather(3, sorted_pos), "b h r (n c) -> b h (r n) c", c=weights.shape[3])
    key_pos = _look_around(pos_chunks, before, after).unsqueeze(-2).expand_as(weights)
    flat_index = (pos_chunks.unsqueeze(-1) * padded_len + key_pos).reshape(bsz, heads, -1)
    values = (weights * slot_weights.unsqueeze(-1)).reshape(bsz, heads, -1)
    attn = weights.new_zeros(bsz, heads, padded_len * padded_len).scatter_add_(2, flat_index, values)
    return attn.view(bsz, heads, padded_len, padded_len)


def _dense_self_masked(qk: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                       return_attention: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Dense attention ``(B, H, L, d)`` with the LSH key normalisation and self mask (short sequences)."""
    bsz, heads, seq_len, _ = qk.shape
    pos = torch.arange(seq_len, device=qk.device).expand(bsz, heads, 1, seq_len)
    pad = None if key_padding_mask is None else key_padding_mask[:, None, None, :].expand(-1, heads, -1, -1)
    out, _, weights = _attend_chunks(qk.unsqueeze(2), v.unsqueeze(2), pos, pad, 0, 0)
    out = out.squeeze(2)
    return (out, weights.squeeze(2)) if return_attention else out


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
        if n_buckets is not None and n_buckets % 2:
            raise ConfigError(f"LSHSelfAttention: n_buckets must be even, got {n_buckets}")
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
