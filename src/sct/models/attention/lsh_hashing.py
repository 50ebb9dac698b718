"""Angular LSH for Reformer attention: rotations, bucket ids, the stable sort by bucket."""

from __future__ import annotations

import torch

from sct.errors import ConfigError

# Rotated vectors are computed this many elements at a time, so hashing a long sequence with many
# buckets never materialises the whole (B, H, R, L, n_buckets / 2) tensor.
HASH_BLOCK_ELEMENTS = 1 << 20


def default_n_buckets(seq_len: int, chunk_length: int) -> int:
    """Hugging Face's choice: the power of two at or below ``2 * seq_len / chunk_length`` (at least 2)."""
    return max(2, 2 ** ((2 * (seq_len // chunk_length)).bit_length() - 1))


def random_rotations(heads: int, dim_head: int, n_hashes: int, n_buckets: int,
                     generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian rotations ``(H, d_h, n_hashes, n_buckets // 2)``, drawn on the generator's device, then moved."""
    if n_buckets < 2 or n_buckets % 2:
        raise ConfigError(f"LSH attention: n_buckets must be even and >= 2, got {n_buckets}")
    gen_device = generator.device if generator is not None else device
    rot = torch.randn(heads, dim_head, n_hashes, n_buckets // 2, generator=generator, device=gen_device, dtype=dtype)
    return rot.to(device)


def hash_vectors(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH buckets ``(B, H, n_hashes, L)`` in ``[0, n_buckets)`` of ``x`` ``(B, H, L, d_h)``.

    Bucket = argmax over ``[x R, -x R]`` per round, found without the concatenation as the entry of
    ``x R`` largest in magnitude, shifted by ``n_buckets / 2`` when it is negative (the two differ only
    on exact ties of magnitude). ``x`` is detached: no gradient flows through hashing.
    """
    bsz, heads, seq_len, _ = x.shape
    _, _, n_hashes, half = rotations.shape
    # Hash in float32 at least, so 16-bit inputs land in the buckets their float32 values would.
    dtype = torch.promote_types(x.dtype, torch.float32)
    rot = rotations.to(dtype).flatten(2)  # (H, d_h, R * n_b/2)
    step = max(1, HASH_BLOCK_ELEMENTS // (bsz * heads * n_hashes * half))
    buckets = torch.empty(bsz, heads, seq_len, n_hashes, dtype=torch.long, device=x.device)
    with torch.no_grad():
        for start in range(0, seq_len, step):
            rotated = (x[:, :, start:start + step].detach().to(dtype) @ rot).unflatten(-1, (n_hashes, half))
            best = rotated.abs().max(dim=-1, keepdim=True).indices
            negative = rotated.gather(-1, best) < 0
            buckets[:, :, start:start + step] = (best + half * negative).squeeze(-1)
    return buckets.permute(0, 1, 3, 2)


def sort_by_bucket(buckets: torch.Tensor) -> torch.Tensor:
    """Stable per-round sort of ``buckets`` ``(B, H, R, L)`` -> positions in sorted order ``(B, H, R, L)``.

    Positions ascend within a bucket. Rounds never mix, so sorting each round on its own gives the
    same order as one sort of all rounds by (round, bucket, position).
    """
    return torch.sort(buckets, dim=-1, stable=True).indices
