"""LSH attention: the eight checks of specs/lsh-attention.md plus the module's behaviours."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from sct.errors import ConfigError
from sct.models.attention.lsh import (
    LSHSelfAttention,
    bucket_count,
    default_n_buckets,
    factorised,
    hash_vectors,
    lsh_attention,
    random_rotations,
    sort_by_bucket,
)


def dense_self_masked(qk, v, key_padding_mask=None):
    """Reference: dense attention with Reformer's key normalisation, self mask and padding mask."""
    k = qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + 1e-6) / qk.shape[-1] ** 0.5
    logits = qk @ k.transpose(-2, -1)
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], -1e9)
    eye = torch.eye(qk.shape[2], dtype=torch.bool)
    logits = logits.masked_fill(eye, -1e5)
    return logits.softmax(-1) @ v


def rand_qkv(b=2, h=3, seq=128, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, seq, d, generator=g, dtype=dtype), torch.randn(b, h, seq, d, generator=g, dtype=dtype)


def offset_buckets(round_buckets, n_buckets):
    """``(B, H, R, L)`` -> Hugging Face's ``(B, H, R * L)`` with round offsets."""
    offsets = torch.arange(round_buckets.shape[2])[None, None, :, None] * n_buckets
    return (round_buckets + offsets).flatten(2)


# 1. one round covering the whole sequence = dense self-masked attention
def test_one_round_two_chunks_equals_dense():
    qk, v = rand_qkv(seq=128)
    out = lsh_attention(qk, v, n_hashes=1, n_buckets=8, chunk_length=64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, dense_self_masked(qk, v), atol=1e-5, rtol=1e-5)


def test_length_not_multiple_of_chunk_is_padded_and_masked():
    qk, v = rand_qkv(seq=100)
    out = lsh_attention(qk, v, n_hashes=1, n_buckets=8, chunk_length=64, generator=torch.Generator().manual_seed(1))
    assert out.shape == qk.shape
    torch.testing.assert_close(out, dense_self_masked(qk, v), atol=1e-5, rtol=1e-5)


# 2. short sequences are dense
@pytest.mark.parametrize("seq", [1, 17, 64])
def test_short_sequence_equals_dense(seq):
    qk, v = rand_qkv(seq=seq)
    out = lsh_attention(qk, v, n_hashes=2, n_buckets=4, chunk_length=64)
    torch.testing.assert_close(out, dense_self_masked(qk, v), atol=1e-5, rtol=1e-5)


# 3. identical rounds = one round
def test_identical_rounds_give_single_round_output():
    qk, v = rand_qkv(seq=256)
    rot = random_rotations(3, 16, 1, 8, torch.Generator().manual_seed(0))
    one = hash_vectors(qk, rot)  # (B, H, 1, L)
    single = lsh_attention(qk, v, n_hashes=1, n_buckets=8, chunk_length=32, buckets=offset_buckets(one, 8))
    three = offset_buckets(one.expand(-1, -1, 3, -1), 8)
    multi = lsh_attention(qk, v, n_hashes=3, n_buckets=8, chunk_length=32, buckets=three)
    torch.testing.assert_close(multi, single, atol=1e-5, rtol=1e-5)


# 4. hashing symmetries
def test_bucket_of_negation_and_scaling():
    qk, _ = rand_qkv(seq=200)
    n_buckets = 16
    rot = random_rotations(3, 16, 2, n_buckets, torch.Generator().manual_seed(3))
    buckets = hash_vectors(qk, rot)
    assert buckets.shape == (2, 3, 2, 200)
    rotated = torch.einsum("bhld,hdrk->bhrlk", qk, rot)
    assert torch.equal(buckets, torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1))
    assert buckets.min() >= 0 and buckets.max() < n_buckets
    torch.testing.assert_close(hash_vectors(-qk, rot), (buckets + n_buckets // 2) % n_buckets)
    torch.testing.assert_close(hash_vectors(3.7 * qk, rot), buckets)
    assert len(buckets.unique()) > n_buckets // 2  # the hash actually spreads vectors


# 5. sort/unsort
def test_sort_then_unsort_is_identity_and_stable():
    g = torch.Generator().manual_seed(0)
    buckets = torch.randint(0, 4, (2, 3, 2, 50), generator=g)
    sorted_pos = sort_by_bucket(buckets)
    undo = sorted_pos.argsort(dim=-1)
    positions = torch.arange(50).expand_as(buckets)
    assert torch.equal(positions.gather(-1, sorted_pos).gather(-1, undo), positions)
    sorted_buckets = buckets.gather(-1, sorted_pos)
    assert (sorted_buckets.diff(dim=-1) >= 0).all()
    same_bucket = sorted_buckets.diff(dim=-1) == 0
    assert (sorted_pos.diff(dim=-1)[same_bucket] > 0).all()


@pytest.mark.parametrize("shape", [(2, 3, 2, 50), (1, 4, 2, 8192)])
def test_sort_by_bucket_equals_a_stable_sort_of_each_row(shape):
    """All rows sorted as one flat sequence (PyTorch's radix sort once it is long) give each row's own order."""
    buckets = torch.randint(0, 512, shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sort_by_bucket(buckets), torch.sort(buckets, dim=-1, stable=True).indices)


# 6. padding keys get zero weight
def test_padding_keys_get_zero_weight():
    qk, v = rand_qkv(seq=300)
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[0, 250:] = True
    mask[1, ::7] = True
    kwargs = dict(n_hashes=2, n_buckets=8, chunk_length=32, rotations=random_rotations(3, 16, 2, 8))
    out, attn = lsh_attention(qk, v, key_padding_mask=mask, return_attention=True, **kwargs)
    assert attn.shape == (2, 3, 300, 300)
    real = ~mask[:, None, :].expand(-1, 3, -1)
    real_rows = attn[real]  # (n_real_queries, L)
    assert real_rows[:, mask[0]].numel() > 0
    for b in range(2):
        assert attn[b][:, ~mask[b]][:, :, mask[b]].abs().max() == 0
    torch.testing.assert_close(real_rows.sum(-1), torch.ones(len(real_rows)))
    v_changed = torch.where(mask[:, None, :, None], 100.0, v)
    out_changed = lsh_attention(qk, v_changed, key_padding_mask=mask, **kwargs)
    torch.testing.assert_close(out_changed[real], out[real])


def test_padding_mask_equals_dense_when_one_round_covers_all():
    qk, v = rand_qkv(seq=128)
    mask = torch.zeros(2, 128, dtype=torch.bool)
    mask[0, 100:] = True
    mask[1, :5] = True
    out = lsh_attention(qk, v, n_hashes=1, n_buckets=8, chunk_length=64, key_padding_mask=mask)
    real = ~mask[:, None, :].expand(-1, 3, -1)
    torch.testing.assert_close(out[real], dense_self_masked(qk, v, mask)[real], atol=1e-5, rtol=1e-5)


# 7. gradients: none through hashing, all projections get some
def test_gradients_reach_projections_not_rotations():
    layer = LSHSelfAttention(32, heads=2, dim_head=16, n_hashes=2, n_buckets=8, chunk_length=16)
    x = torch.randn(2, 100, 32, requires_grad=True)
    rot = random_rotations(2, 16, 2, 8).requires_grad_()
    qk = rearrange(layer.qk(x), "b l (h d) -> b h l d", h=2)
    v = rearrange(layer.v(x), "b l (h d) -> b h l d", h=2)
    out = lsh_attention(qk, v, n_hashes=2, n_buckets=8, chunk_length=16, rotations=rot)
    out.square().sum().backward()
    assert rot.grad is None
    assert not hash_vectors(qk, rot).requires_grad
    for p in (layer.qk.weight, layer.v.weight, x):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_gradients_match_dense_reference():
    qk, v = rand_qkv(seq=128, d=8)
    qk.requires_grad_()
    v.requires_grad_()
    lsh_attention(qk, v, n_hashes=1, n_buckets=4, chunk_length=64).sin().sum().backward()
    grads = qk.grad.clone(), v.grad.clone()
    qk.grad = v.grad = None
    dense_self_masked(qk, v).sin().sum().backward()
    torch.testing.assert_close(grads[0], qk.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[1], v.grad, atol=1e-4, rtol=1e-4)


# 8. Hugging Face transformers' LSHSelfAttention
def hf_layer(ours: LSHSelfAttention, n_buckets: int | list[int] | None, hash_seed: int | None = None,
             max_positions: int = 4096):
    transformers = pytest.importorskip("transformers")
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention as HFLSHSelfAttention

    config = transformers.ReformerConfig(
        hidden_size=ours.qk.in_features, num_attention_heads=ours.heads, attention_head_size=ours.dim_head,
        num_hashes=ours.n_hashes, num_buckets=n_buckets, lsh_attn_chunk_length=ours.chunk_length,
        lsh_num_chunks_before=ours.chunks_before, lsh_num_chunks_after=ours.chunks_after, attn_layers=["lsh"],
        is_decoder=False, lsh_attention_probs_dropout_prob=0.0, hash_seed=hash_seed,
        max_position_embeddings=max_positions,
    )
    hf = HFLSHSelfAttention(config).eval()
    hf.query_key.weight.data.copy_(ours.qk.weight)
    hf.value.weight.data.copy_(ours.v.weight)
    return hf


def ours_before_projection(layer, x, **kwargs):
    qk = rearrange(layer.qk(x), "b l (h d) -> b h l d", h=layer.heads)
    v = rearrange(layer.v(x), "b l (h d) -> b h l d", h=layer.heads)
    out = lsh_attention(qk, v, n_hashes=layer.n_hashes, chunk_length=layer.chunk_length,
                        chunks_before=layer.chunks_before, chunks_after=layer.chunks_after, **kwargs)
    return rearrange(out, "b h l d -> b l (h d)"), qk


@pytest.mark.parametrize(("n_hashes", "before", "after"), [(1, 1, 0), (2, 1, 0), (4, 2, 1)])
def test_matches_hugging_face_with_same_buckets(n_hashes, before, after):
    torch.manual_seed(0)
    layer = LSHSelfAttention(48, heads=3, dim_head=16, n_hashes=n_hashes, n_buckets=8, chunk_length=16,
                             chunks_before=before, chunks_after=after).eval()
    hf = hf_layer(layer, 8)
    x = torch.randn(2, 128, 48)
    with torch.no_grad():
        qk = rearrange(layer.qk(x), "b l (h d) -> b h l d", h=3)
        buckets = offset_buckets(hash_vectors(qk, random_rotations(3, 16, n_hashes, 8)), 8)
        ours, _ = ours_before_projection(layer, x, n_buckets=8, buckets=buckets)
        theirs = hf(x, buckets=buckets).hidden_states
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_buckets", [16, (4, 8), (2, 4, 2)])
def test_matches_hugging_face_hashing_and_padding(n_buckets):
    """Same rotations (HF draws them after ``torch.manual_seed(hash_seed)``) and a padding mask; a tuple is
    Hugging Face's factorised ``num_buckets=[n1, n2, ...]``."""
    layer = LSHSelfAttention(32, heads=2, dim_head=16, n_hashes=2, n_buckets=n_buckets, chunk_length=16).eval()
    hf = hf_layer(layer, n_buckets if isinstance(n_buckets, int) else list(n_buckets), hash_seed=7)
    x = torch.randn(2, 160, 32)
    mask = torch.zeros(2, 160, dtype=torch.bool)
    mask[1, 130:] = True
    mask[0, 3::11] = True
    half = sum(n_buckets if isinstance(n_buckets, tuple) else (n_buckets,)) // 2
    torch.manual_seed(7)
    rot = torch.randn(2, 16, 2, half)
    with torch.no_grad():
        ours, _ = ours_before_projection(layer, x, n_buckets=n_buckets, rotations=rot, key_padding_mask=mask)
        theirs = hf(x, attention_mask=(~mask).long()).hidden_states
    torch.testing.assert_close(ours[~mask], theirs[~mask], atol=1e-5, rtol=1e-5)


# module behaviours
def test_module_shapes_eval_reproducible_training_fresh():
    layer = LSHSelfAttention(32, heads=2, n_hashes=2, chunk_length=16, seed=3)
    x = torch.randn(3, 150, 32)
    layer.eval()
    a, b = layer(x), layer(x)
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    layer.train()
    c = layer(x)
    resumed = LSHSelfAttention(32, heads=2, n_hashes=2, chunk_length=16, seed=3)
    resumed.load_state_dict(layer.state_dict())
    d = layer(x)
    assert not torch.allclose(c, d)
    torch.testing.assert_close(resumed.train()(x), d)  # the draw counter is state: a checkpoint resumes the sequence
    again = LSHSelfAttention(32, heads=2, n_hashes=2, chunk_length=16, seed=3)
    again.load_state_dict({**layer.state_dict(), "draws": torch.tensor(0)})
    torch.testing.assert_close(again.train()(x), c)
    fixed = LSHSelfAttention(32, heads=2, n_hashes=2, chunk_length=16, seed=3, resample=False)
    fixed.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fixed.train()(x), a)
    torch.testing.assert_close(fixed(x), a)


def test_default_n_buckets_is_hugging_face_rule():
    assert default_n_buckets(16384, 64) == 512
    assert default_n_buckets(3136, 64) == 64
    assert default_n_buckets(100, 64) == 2
    assert default_n_buckets(12544, 64) == 256


def test_store_attention_reproduces_output():
    layer = LSHSelfAttention(32, heads=2, dim_head=16, n_hashes=3, n_buckets=4, chunk_length=16).eval()
    layer.store_attention = True
    x = torch.randn(2, 90, 32)
    out = layer(x)
    attn = layer.last_attention
    assert attn.shape == (2, 2, 90, 90)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 90))
    v = rearrange(layer.v(x), "b l (h d) -> b h l d", h=2)
    manual = layer.proj(rearrange(attn @ v, "b h l d -> b l (h d)"))
    torch.testing.assert_close(manual, out, atol=1e-5, rtol=1e-5)
    layer.store_attention = False
    layer(x)
    assert layer.last_attention is None


def test_bfloat16_close_to_float32():
    """Same buckets, 16-bit arithmetic: output and gradients stay close to float32 (module runs in bf16 too)."""
    qk, v = rand_qkv(seq=200)
    buckets = offset_buckets(hash_vectors(qk, random_rotations(3, 16, 2, 8)), 8)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        a, b = qk.to(dtype).detach().requires_grad_(), v.to(dtype).detach().requires_grad_()
        out = lsh_attention(a, b, n_hashes=2, n_buckets=8, chunk_length=32, buckets=buckets)
        out.float().sin().sum().backward()
        assert out.dtype == dtype
        results.append((out.float(), a.grad.float(), b.grad.float()))
    for got, want in zip(results[1], results[0], strict=True):
        assert (got - want).norm() < 0.03 * want.norm()
    layer = LSHSelfAttention(32, heads=2, dim_head=16, n_hashes=2, chunk_length=16).to(torch.bfloat16)
    layer.store_attention = True
    out = layer(torch.randn(2, 100, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.isfinite().all()
    torch.testing.assert_close(layer.last_attention.sum(-1), torch.ones(2, 2, 100), atol=1e-2, rtol=0)


def test_odd_bucket_count_is_rejected():
    with pytest.raises(ConfigError, match="n_buckets"):
        LSHSelfAttention(32, heads=2, n_buckets=7)


@pytest.mark.parametrize("block_slots", [32, 96])
def test_blocking_does_not_change_output_or_gradients(monkeypatch, block_slots):
    """Small blocks split rounds into several blocks (some with windows inside one round, some crossing)."""
    from sct.models.attention import lsh

    qk, v = rand_qkv(seq=200, d=8)
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[1, 150:] = True
    kwargs = dict(n_hashes=3, n_buckets=8, chunk_length=16, chunks_before=1, chunks_after=1,
                  rotations=random_rotations(3, 8, 3, 8), key_padding_mask=mask)

    def run():
        a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
        out = lsh_attention(a, b, **kwargs)
        out.sin().sum().backward()
        return out.detach(), a.grad, b.grad

    reference = run()
    monkeypatch.setattr(lsh, "BLOCK_SLOTS", block_slots)
    monkeypatch.setattr(lsh, "TRAIN_BLOCK_SLOTS", block_slots)
    for got, want in zip(run(), reference, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rounds_merged_a_few_positions_at_a_time(monkeypatch):
    """A round's outputs return to positions and merge in pieces of ``MERGE_ROWS``: pieces that do not divide
    the sequence give the same outputs and gradients as one piece, over several rounds and padding."""
    from sct.models.attention import lsh

    qk, v = rand_qkv(seq=200, d=8)
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[0, 170:] = True
    kwargs = dict(n_hashes=3, n_buckets=8, chunk_length=16, rotations=random_rotations(3, 8, 3, 8),
                  key_padding_mask=mask)

    def run():
        a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
        out = lsh_attention(a, b, **kwargs)
        out.sin().sum().backward()
        return out.detach(), a.grad, b.grad

    monkeypatch.setattr(lsh, "MERGE_ROWS", 10**6)
    whole = run()
    monkeypatch.setattr(lsh, "MERGE_ROWS", 37)
    for got, want in zip(run(), whole, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck_several_rounds_with_padding(monkeypatch, fused):
    """Analytic gradients of the recomputing backward pass match finite differences (fixed buckets), with
    PyTorch's fused CPU kernels and with the explicit fallback used on other devices."""
    from sct.models.attention import lsh

    if not fused:
        monkeypatch.setattr(lsh, "_FUSED_CPU", None)
        monkeypatch.setattr(lsh, "_FUSED_CPU_BACKWARD", None)
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(1, 2, 40, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 40, 2, generator=g, dtype=torch.float64, requires_grad=True)
    buckets = offset_buckets(torch.randint(0, 4, (1, 2, 2, 40), generator=g), 4)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, 33:] = True

    def fn(a, b):
        return lsh_attention(a, b, n_hashes=2, n_buckets=4, chunk_length=8, buckets=buckets, key_padding_mask=mask)

    assert torch.autograd.gradcheck(fn, (qk, v), fast_mode=True)


def test_fused_cpu_kernel_equals_explicit_path(monkeypatch):
    """On a CPU a fused kernel runs; other devices use the explicit softmax: same result."""
    from sct.models.attention import lsh

    qk, v = rand_qkv(seq=300)
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[0, 280:] = True
    kwargs = dict(n_hashes=2, n_buckets=8, chunk_length=32, rotations=random_rotations(3, 16, 2, 8),
                  key_padding_mask=mask)
    fused = lsh_attention(qk, v, **kwargs)
    monkeypatch.setattr(lsh, "_FUSED_CPU", None)
    torch.testing.assert_close(lsh_attention(qk, v, **kwargs), fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padded_from, after", [(150, 0), (60, 0), (150, 1), (60, 2)])
def test_padding_blocks_equal_the_full_mask_everywhere(monkeypatch, padded_from, after):
    """Padding sorts to the end of each round, so only the last chunks (as many as the most padding in a row
    fills, and the ``chunks_after`` before them, which look ahead into it) need the full mask; masking every
    block in full gives the same outputs and gradients."""
    from sct.models.attention import lsh

    qk, v = rand_qkv(seq=200, d=8)
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[1, padded_from:] = True
    kwargs = dict(n_hashes=2, n_buckets=8, chunk_length=16, rotations=random_rotations(3, 8, 2, 8),
                  key_padding_mask=mask, chunks_after=after)

    def run():
        a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
        out = lsh_attention(a, b, **kwargs)
        out.sin().sum().backward()
        return out.detach(), a.grad, b.grad

    monkeypatch.setattr(lsh, "TRAIN_BLOCK_SLOTS", 64)
    blocked = run()
    monkeypatch.setattr(lsh._Layout, "full_mask", lambda self, first, count: True)
    for got, want in zip(blocked, run(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factors", [(4, 8), (2, 2, 2, 2), (16, 32)])
def test_factorised_buckets_equal_hugging_face_hash(factors):
    """Hugging Face's ``_hash_vectors`` with ``num_buckets=[n1, n2, ...]`` and ours give the same buckets."""
    layer = LSHSelfAttention(48, heads=3, dim_head=16, n_hashes=2, n_buckets=factors, chunk_length=16).eval()
    hf = hf_layer(layer, list(factors), hash_seed=5)
    qk, _ = rand_qkv(b=2, h=3, seq=300, d=16, seed=4)
    torch.manual_seed(5)
    rot = torch.randn(3, 16, 2, sum(factors) // 2)
    ours = hash_vectors(qk, rot, factors)
    assert ours.shape == (2, 3, 2, 300) and ours.min() >= 0 and ours.max() < bucket_count(factors)
    torch.testing.assert_close(offset_buckets(ours, bucket_count(factors)), hf._hash_vectors(qk, 2, None))
    assert len(ours.unique()) > bucket_count(factors) // 2  # every factor spreads the vectors
    # One factor is the plain hash.
    plain = random_rotations(3, 16, 2, 8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(hash_vectors(qk, plain, (8,)), hash_vectors(qk, plain))


def test_factorise_above_follows_hugging_face_rule():
    """``factorise_above`` splits the length's bucket count as Hugging Face does above its limit
    (``2 * max(sqrt(max_positions / chunk), chunk)``, 128 here)."""
    assert factorised(512) == (16, 32) and factorised(256) == (16, 16) and factorised(4) == (2, 2)
    with pytest.raises(ConfigError, match="power of two"):
        factorised(48)
    layer = LSHSelfAttention(32, heads=2, dim_head=16, chunk_length=64, factorise_above=128)
    for seq_len in (3136, 4096, 12544, 16384):
        hf = hf_layer(layer, None, max_positions=seq_len)
        hf._set_num_buckets(seq_len)
        expected = hf.num_buckets if isinstance(hf.num_buckets, int) else tuple(hf.num_buckets)
        assert layer.buckets_for(seq_len) == expected
    assert LSHSelfAttention(32, heads=2, chunk_length=64).buckets_for(16384) == 512  # default: never factorised


def test_factorised_buckets_train_export_and_config():
    """Factorised buckets through the module (training draw, backward), the export path and the SCT config."""
    from sct.models.attention.lsh_vectorized import lsh_attention_vectorized
    from sct.models.sct import SCTConfig

    qk, v = rand_qkv(b=1, h=2, seq=200, d=16, seed=2)
    rot = random_rotations(2, 16, 2, (4, 4), torch.Generator().manual_seed(0))
    kwargs = dict(n_hashes=2, n_buckets=(4, 4), chunk_length=32, rotations=rot)
    torch.testing.assert_close(lsh_attention_vectorized(qk, v, **kwargs), lsh_attention(qk, v, **kwargs),
                               atol=1e-5, rtol=1e-5)
    layer = LSHSelfAttention(32, heads=2, dim_head=16, n_buckets=[4, 4], chunk_length=32).train()
    assert layer.n_buckets == (4, 4) and layer.rotations((4, 4)).shape == (2, 16, 2, 4)
    x = torch.randn(2, 200, 32, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.isfinite().all() and layer.qk.weight.grad.abs().sum() > 0
    assert SCTConfig(lsh_buckets=[4, 8]).lsh.n_buckets == (4, 8)
    assert SCTConfig(lsh_factorise_above=128).lsh.factorise_above == 128
    for bad in ([4, 7], [], 3):
        with pytest.raises(ConfigError, match="lsh_buckets"):
            SCTConfig(lsh_buckets=bad)
    with pytest.raises(ConfigError, match="n_buckets"):
        LSHSelfAttention(32, heads=2, n_buckets=(4, 5))
