"""Attention rollout on synthetic attention with known answers (specs/attention-rollout.md checks)."""

import pytest
import torch

from sct.analysis.rollout import (
    chunk_step,
    chunk_to_dense,
    dense_step,
    frame_weights,
    heatmaps,
    layer_map,
    pool_matrix,
    pool_step,
    rollout_dense,
    shift_step,
    temporal_step,
    time_step,
)


def _softmax_attention(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).mul(3).softmax(dim=-1)


def _identity_attention(heads, n):
    return torch.eye(n).expand(heads, n, n)


def test_identity_attention_gives_identity():
    torch.testing.assert_close(layer_map(_identity_attention(3, 5)), torch.eye(5, dtype=torch.float64))
    r = rollout_dense([_identity_attention(2, 6)] * 4, token=2)
    torch.testing.assert_close(r, torch.eye(6, dtype=torch.float64)[2])


def test_layer_maps_and_their_products_are_row_stochastic():
    maps = [layer_map(_softmax_attention(4, 7, 7, seed=s)) for s in range(3)]
    product = maps[2] @ maps[1] @ maps[0]
    for m in [*maps, product]:
        torch.testing.assert_close(m.sum(-1), torch.ones(7, dtype=torch.float64))
        assert (m >= 0).all()


def test_dense_step_is_the_row_vector_times_the_layer_map():
    attn = _softmax_attention(2, 3, 9, 9)
    r = torch.rand(2, 9, dtype=torch.float64)
    torch.testing.assert_close(dense_step(r, attn), (r.unsqueeze(-2) @ layer_map(attn)).squeeze(-2))
    torch.testing.assert_close(dense_step(r, attn).sum(-1), r.sum(-1))


def test_rollout_is_a_row_of_the_product_and_uses_float64():
    attns = [_softmax_attention(3, 6, 6, seed=s).float() for s in range(3)]
    r = rollout_dense(attns, token=4)
    product = layer_map(attns[2]) @ layer_map(attns[1]) @ layer_map(attns[0])
    assert r.dtype == torch.float64
    torch.testing.assert_close(r, product[4])


def test_rows_are_normalised_not_columns():
    # A map whose rows do not sum to one (e.g. a truncated effective attention) must be renormalised per row.
    attn = torch.tensor([[[0.2, 0.2], [0.1, 0.9]]])
    m = layer_map(attn)
    torch.testing.assert_close(m.sum(-1), torch.ones(2, dtype=torch.float64))
    assert not torch.allclose(m.sum(-2), torch.ones(2, dtype=torch.float64))


def test_chunk_rollout_equals_dense_rollout_with_zeros_outside_chunks():
    chunk, grid = (2, 3), (2, 2)
    attn = _softmax_attention(4, *grid, 3, 6, 6)
    dense = chunk_to_dense(attn, chunk)
    assert dense.shape == (4, 3, 24, 24)
    torch.testing.assert_close(dense.sum(-1), torch.ones(4, 3, 24))
    r = torch.rand(4, 4, 6, dtype=torch.float64)
    out = chunk_step(r, attn, chunk)
    torch.testing.assert_close(out.reshape(4, 24), dense_step(r.reshape(4, 24), dense))
    # No relevance leaks out of a chunk: a token in chunk (0, 0) only feeds chunk (0, 0).
    one = torch.zeros(4, 6, dtype=torch.float64)
    one[0, 0] = 1.0
    spread = chunk_step(one, attn[0], chunk)
    assert spread[:2, :3].sum() == pytest.approx(1.0) and spread[2:].sum() == 0 and spread[:, 3:].sum() == 0


def test_one_2x2_merge_with_identity_attention_gives_each_child_a_quarter():
    parent = torch.zeros(2, 3, dtype=torch.float64)
    parent[1, 2] = 1.0
    r = dense_step(parent.reshape(6), _identity_attention(2, 6)).reshape(2, 3)
    children = pool_step(r)
    assert children.shape == (4, 6)
    expected = torch.zeros(4, 6, dtype=torch.float64)
    expected[2:4, 4:6] = 0.25
    torch.testing.assert_close(children, expected)
    p = pool_matrix(2, 3)
    assert p.shape == (6, 24)
    torch.testing.assert_close(p.sum(-1), torch.ones(6, dtype=torch.float64))
    assert ((p == 0) | (p == 0.25)).all() and ((p > 0).sum(-1) == 4).all()


def _explicit_temporal_map(attn, offsets, cyclic):
    """Reference: the full (T*N x T*N) matrix rownorm(0.5 A K + 0.5 R), built entry by entry."""
    t_count, _, n, _ = attn.shape
    a = attn.double().mean(1)
    m = torch.zeros(t_count * n, t_count * n, dtype=torch.float64)
    for t in range(t_count):
        rows = slice(t * n, (t + 1) * n)
        m[rows, rows] += 0.5 * torch.eye(n, dtype=torch.float64)
        for offset, fraction in offsets.items():
            s = (t + offset) % t_count if cyclic else t + offset
            if 0 <= s < t_count:
                m[rows, s * n:(s + 1) * n] += 0.5 * fraction * a[t]
    return m / m.sum(-1, keepdim=True)


@pytest.mark.parametrize(("offsets", "cyclic"), [
    ({-1: 1.0}, True),
    ({-2: 1.0}, True),
    ({0: 0.75, 1: 0.125, -1: 0.125}, False),
])
def test_temporal_step_matches_the_explicit_map(offsets, cyclic):
    attn = _softmax_attention(4, 2, 5, 5)
    m = _explicit_temporal_map(attn, offsets, cyclic)
    torch.testing.assert_close(m.sum(-1), torch.ones(20, dtype=torch.float64))
    r = torch.rand(4, 5, dtype=torch.float64)
    out = temporal_step(r, attn, offsets, cyclic)
    torch.testing.assert_close(out.reshape(20), r.reshape(20) @ m)
    torch.testing.assert_close(out.sum(), r.sum())


def test_shifted_msa_moves_relevance_to_the_previous_frame_cyclically():
    r = torch.zeros(3, 4, dtype=torch.float64)
    r[0, 1] = 1.0
    out = temporal_step(r, _identity_attention(2, 4).expand(3, 2, 4, 4), {-1: 1.0}, cyclic=True)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[0, 1] = 0.5  # residual: frame 0 keeps its own token
    expected[2, 1] = 0.5  # keys of frame 0 are frame T-1's tokens (cyclic)
    torch.testing.assert_close(out, expected)


def test_temporal_step_without_offset_is_per_frame_dense():
    attn = _softmax_attention(3, 2, 4, 4)
    r = torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(temporal_step(r, attn, {0: 1.0}, cyclic=False), dense_step(r, attn))


def test_token_shift_keeps_mass_and_moves_channels_fractions():
    r = torch.zeros(3, 2, dtype=torch.float64)
    r[1, 0] = 1.0
    out = shift_step(r, {0: 0.75, 1: 0.125, -1: 0.125})
    torch.testing.assert_close(out[:, 0], torch.tensor([0.125, 0.75, 0.125], dtype=torch.float64))
    edge = torch.zeros(3, 2, dtype=torch.float64)
    edge[0, 1] = 1.0
    out = shift_step(edge, {0: 0.75, 1: 0.125, -1: 0.125})
    torch.testing.assert_close(out[:, 1], torch.tensor([0.75 / 0.875, 0.125 / 0.875, 0.0], dtype=torch.float64))


def test_frame_weights_follow_the_clip_encoder_attention():
    # Clip [CLS] attends only to frame 2 in every layer and head: frame 2 gets all the frame weight.
    attn = torch.zeros(2, 5, 5)
    attn[:, 0, 3] = 1.0
    attn[:, 1:, 1:] = torch.eye(4)
    w = frame_weights([attn, attn])
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    uniform = torch.full((2, 5, 5), 0.2)
    torch.testing.assert_close(frame_weights([uniform] * 3), torch.full((4,), 0.25, dtype=torch.float64))
    self_only = frame_weights([_identity_attention(2, 5)])
    torch.testing.assert_close(self_only, torch.full((4,), 0.25, dtype=torch.float64))


def test_heatmaps_share_one_range_over_the_clip():
    relevance = torch.full((2, 2, 2), 0.5)
    relevance[0, 0, 0] = 2.0
    relevance[1, 1, 1] = 1.0
    maps = heatmaps(relevance, (8, 8))
    assert maps.shape == (2, 8, 8)
    assert maps.max() == pytest.approx(1.0) and maps.min() == pytest.approx(0.0)
    assert maps[1].max() < 0.5  # frame 1's peak is judged against frame 0's, not its own
    assert (heatmaps(torch.ones(2, 3, 3), (6, 6)) == 0).all()


def test_time_step_with_frame_cls_matches_explicit_map():
    torch.manual_seed(0)
    frames, tokens, heads = 3, 4, 2
    time_attn = torch.randn(tokens - 1, heads, frames, frames).softmax(-1)
    cls_attn = torch.randn(frames, heads, 1, tokens).softmax(-1)
    r = torch.rand(frames, tokens, dtype=torch.float64)
    a_time, a_cls = time_attn.double().mean(1), cls_attn.double().mean(1)[:, 0]
    m = torch.zeros(frames * tokens, frames * tokens, dtype=torch.float64)
    for t in range(frames):
        for p in range(1, tokens):
            m[t * tokens + p, p::tokens] += 0.5 * a_time[p - 1, t]
            m[t * tokens + p, t * tokens + p] += 0.5
        m[t * tokens, t * tokens:(t + 1) * tokens] += 0.5 * a_cls[t]
        m[t * tokens, t * tokens] += 0.5
    out = time_step(r, time_attn, cls_attn)
    torch.testing.assert_close(out, (r.flatten() @ m).reshape(frames, tokens))
    torch.testing.assert_close(out.sum(), r.sum())
