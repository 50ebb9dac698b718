"""The flat LSH attention that ONNX export records equals the blocked one, in every masking case."""

from __future__ import annotations

import pytest
import torch

from sct.models.attention.lsh import lsh_attention, random_rotations
from sct.models.attention.lsh_vectorized import _chunk_ranges, lsh_attention_vectorized

CASES = [  # (seq, chunk, rounds, buckets, before, after, key padding)
    (96, 16, 2, 8, 1, 0, False),  # SCT's setting, chunks cross rounds only at the first chunk of each round
    (90, 16, 3, 8, 1, 1, False),  # padded to 96; the last chunk looks ahead into the next round
    (96, 16, 2, 8, 2, 1, True),  # key padding mask; two chunks back
    (32, 16, 2, 4, 1, 1, False),  # two chunks a round: every window wraps round the round
    (48, 16, 1, 4, 2, 2, False),  # one round, windows wider than the round: positions repeat in a window
    (16, 16, 2, 4, 1, 0, True),  # one chunk: dense attention
]


@pytest.mark.parametrize("seq, chunk, rounds, buckets, before, after, masked", CASES)
def test_vectorized_equals_blocked(seq, chunk, rounds, buckets, before, after, masked):
    gen = torch.Generator().manual_seed(seq + rounds + before)
    qk, v = torch.randn(2, 3, seq, 8, generator=gen), torch.randn(2, 3, seq, 8, generator=gen)
    rotations = random_rotations(3, 8, rounds, buckets, gen)
    mask = torch.rand(2, seq, generator=gen) < 0.3 if masked else None
    kwargs = dict(n_hashes=rounds, n_buckets=buckets, chunk_length=chunk, rotations=rotations,
                  chunks_before=before, chunks_after=after, key_padding_mask=mask)
    with torch.inference_mode():
        expected = lsh_attention(qk, v, **kwargs)
        got = lsh_attention_vectorized(qk, v, **kwargs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_only_windows_that_leave_their_round_compare_positions():
    assert _chunk_ranges(49, 1, 0) == [(0, 1, True), (1, 49, False)]
    assert _chunk_ranges(6, 2, 1) == [(0, 2, True), (2, 5, False), (5, 6, True)]
    assert _chunk_ranges(2, 2, 2) == [(0, 2, True)]
    assert _chunk_ranges(1, 0, 0) == [(0, 1, False)]
