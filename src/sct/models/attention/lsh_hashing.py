"""Angular LSH for Reformer attention: rotations, bucket ids, the stable sort by bucket."""

from __future__ import annotations

import math

import torch

from sct.errors import ConfigError

# Rotated vectors are computed this many elements at a time, so hashing a long sequence with many
# buckets never materialises the whole (B, H, R, L, n_buckets / 2) tensor.
HASH_BLOCK_ELEMENTS = 1 << 20


def default_n_buckets(seq_len: int, chunk_length: int) -> int:
    """Hugging Face's choice: the power of two at or below ``2 * seq_len / chunk_length`` (at least 2)."""
    return max(2, 2 ** ((2 * (seq_len // chunk_length)).bit_length() - 1))


def factorised(n_buckets: int) -> tuple[int, int]:
    """Hugging Face's split of a power-of-two bucket count into two factors, smaller first (512 -> (16, 32)).

    Hashing then rotates onto ``sum(factors) / 2`` directions instead of ``n_buckets / 2``: O(L sqrt(n_buckets))
    time instead of O(L n_buckets) for the same number of buckets.
    """
    power = n_buckets.bit_length() - 1
    if n_buckets < 4 or n_buckets != 2**power:
        raise ConfigError(f"LSH attention: only a power of two >= 4 can be factorised, got {n_buckets}")
    return 2 ** (power // 2), 2 ** (power - power // 2)


def is_bucket_spec(n_buckets) -> bool:
    """Whether ``n_buckets`` is an even integer >= 2 or a non-empty tuple / list of them."""
    factors = (n_buckets,) if isinstance(n_buckets, int) else n_buckets
    return (isinstance(factors, (tuple, list)) and len(factors) > 0
            and all(isinstance(f, int) and f >= 2 and f % 2 == 0 for f in factors))


def bucket_factors(n_buckets: int | tuple[int, ...]) -> tuple[int, ...]:
    """``n_buckets`` as its factors: an int is one factor, a tuple (Hugging Face's ``num_buckets=[n1, n2]``)
    gives ``n1 * n2 * ...`` buckets, each factor hashed by its own ``n_i / 2`` rotations."""
    if not is_bucket_spec(n_buckets):
        raise ConfigError(f"LSH attention: n_buckets must be an even integer >= 2 or a tuple of them, got {n_buckets}")
    return (n_buckets,) if isinstance(n_buckets, int) else tuple(n_buckets)


def bucket_count(n_buckets: int | tuple[int, ...]) -> int:
    """How many buckets ``n_buckets`` (an int or its factors) makes."""
    return math.prod(bucket_factors(n_buckets))


def random_rotations(heads: int, dim_head: int, n_hashes: int, n_buckets: int | tuple[int, ...],
                     generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian rotations ``(H, d_h, n_hashes, sum(factors) // 2)`` (``n_buckets // 2`` for an int), drawn on
    the generator's device, then moved; the factors' columns follow each other, as in Hugging Face's Reformer."""
    half = sum(bucket_factors(n_buckets)) // 2
    gen_device = generator.device if generator is not None else device
    rot = torch.randn(heads, dim_head, n_hashes, half, generator=generator, device=gen_device, dtype=dtype)
    return rot.to(device)


def _argmax_signed(rotated: torch.Tensor) -> torch.Tensor:
    """``argmax([r, -r])`` over the last dim of ``rotated`` ``(..., n / 2)`` -> ``(..., 1)`` in ``[0, n)``.

    Found without the concatenation as the entry largest in magnitude, shifted by ``n / 2`` when it is
    negative (the two differ only on exact ties of magnitude).
    """
    best = rotated.abs().max(dim=-1, keepdim=True).indices
    return best + rotated.shape[-1] * (rotated.gather(-1, best) < 0)


def hash_vectors(x: torch.Tensor, rotations: torch.Tensor,
                 n_buckets: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Angular LSH buckets ``(B, H, n_hashes, L)`` in ``[0, bucket_count(n_buckets))`` of ``x`` ``(B, H, L, d_h)``.

    ``n_buckets`` None: one factor, ``2 * rotations.shape[-1]`` buckets, bucket = ``argmax([x R, -x R])`` per
    round. Factors ``(n_1, n_2, ...)``: each takes its own ``n_i / 2`` columns of ``R`` and the buckets combine
    as ``b_1 + n_1 * b_2 + n_1 n_2 * b_3 ...``, Hugging Face's factorised hashing. ``x`` is detached: no
    gradient flows through hashing. Memory stays O(L): the rotated vectors are made a block of rows at a time.
    """
    bsz, heads, seq_len, _ = x.shape
    _, _, n_hashes, half = rotations.shape
    factors = (2 * half,) if n_buckets is None else bucket_factors(n_buckets)
    if sum(factors) != 2 * half:
        raise ValueError(f"hash_vectors: rotations have {half} columns per round, n_buckets {n_buckets} needs "
                         f"{sum(factors) // 2}")
    # Hash in float32 at least, so 16-bit inputs land in the buckets their float32 values would.
    dtype = torch.promote_types(x.dtype, torch.float32)
    rot = rotations.to(dtype).flatten(2)  # (H, d_h, R * half)
    step = max(1, HASH_BLOCK_ELEMENTS // (bsz * heads * n_hashes * half))
    buckets = torch.empty(bsz, heads, seq_len, n_hashes, dtype=torch.long, device=x.device)
    with torch.no_grad():
        for start in range(0, seq_len, step):
            rotated = (x[:, :, start:start + step].detach().to(dtype) @ rot).unflatten(-1, (n_hashes, half))
            block, column, scale = None, 0, 1
            for factor in factors:
                part = _argmax_signed(rotated[..., column:column + factor // 2]) * scale
                block = part if block is None else block.add_(part)
                column, scale = column + factor // 2, scale * factor
            buckets[:, :, start:start + step] = block.squeeze(-1)
    return buckets.permute(0, 1, 3, 2)


def sort_by_bucket(buckets: torch.Tensor) -> torch.Tensor:
    """Stable per-round sort of ``buckets`` ``(B, H, R, L)`` -> positions in sorted order ``(B, H, R, L)``.

    Positions ascend within a bucket. Rounds never mix, so sorting each round on its own gives the
    same order as one sort of all rounds by (round, bucket, position). The rows are sorted together as one
    flat sequence keyed by ``(row, bucket)``: PyTorch sorts a long 1-D integer tensor by radix on a CPU,
    several times faster than row by row.
    """
    length = buckets.shape[-1]
    rows = buckets.reshape(-1, length)
    first = torch.arange(rows.shape[0], device=buckets.device).unsqueeze(-1)
    span = int(rows.max()) + 1 if rows.numel() else 1
    order = torch.sort((rows + first * span).flatten(), stable=True).indices.view_as(rows)
    return (order - first * length).view(buckets.shape)
