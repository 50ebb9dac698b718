"""ViLT chunk attention (§3.2): chunks of the grid, shared weights, zero padding of the last chunks."""

import pytest
import torch
from einops import rearrange

from sct.models.attention.chunk import ViLT, chunk_merge, chunk_partition
from sct.models.attention.dense import attention


def _block_diagonal_mask(grid: tuple[int, int], chunk: tuple[int, int]) -> torch.Tensor:
    """``(N, N)`` bool over the grid's row-major tokens: True where both tokens lie in the same chunk."""
    rows = torch.arange(grid[0])[:, None].expand(grid) // chunk[0]
    cols = torch.arange(grid[1])[None, :].expand(grid) // chunk[1]
    chunk_id = (rows * 1000 + cols).flatten()
    return chunk_id[:, None] == chunk_id[None, :]


@pytest.mark.parametrize("grid", [(6, 8), (7, 5)])
def test_partition_then_merge_is_identity(grid):
    x = torch.randn(2, *grid, 3)
    chunks, padding = chunk_partition(x, (3, 4))
    assert chunks.shape[-2] == 12
    torch.testing.assert_close(chunk_merge(chunks, grid, (3, 4)), x)
    if grid == (7, 5):
        # 3 x 2 chunks; the padded tokens are exactly the ones outside the 7 x 5 grid.
        assert padding.shape == (6, 12) and int(padding.sum()) == 9 * 8 - 35
        assert torch.all(chunks.flatten(1, 2)[:, padding.flatten()] == 0)
    else:
        assert padding is None


@pytest.mark.parametrize("grid", [(6, 8), (7, 5)])
def test_chunk_attention_equals_dense_attention_with_block_diagonal_mask(grid):
    torch.manual_seed(0)
    chunk = (3, 4)
    vilt = ViLT(dim=16, depth=1, heads=2, mlp_dim=32, chunk=chunk).eval()
    attn = vilt.layers[0].attn
    x = torch.randn(2, *grid, 16)
    z = x + rearrange(_positions(vilt, grid, chunk), "h w c -> 1 h w c")
    out = vilt(x)

    # The same layer as dense attention over the whole grid, restricted to each chunk by a mask.
    layer = vilt.layers[0]
    tokens = rearrange(z, "b h w c -> b (h w) c")
    q, k, v = rearrange(attn.qkv(layer.norm1(tokens)), "b n (three h d) -> three b h n d", three=3, h=2)
    a, _ = attention(q, k, v, _block_diagonal_mask(grid, chunk))
    tokens = tokens + attn.proj(rearrange(a, "b h n d -> b n (h d)"))
    tokens = tokens + layer.mlp(layer.norm2(tokens))
    torch.testing.assert_close(out, rearrange(tokens, "b (h w) c -> b h w c", h=grid[0]), atol=1e-5, rtol=1e-5)


def _positions(vilt: ViLT, grid: tuple[int, int], chunk: tuple[int, int]) -> torch.Tensor:
    """Eq. 1's per-chunk-position embedding laid out on the grid ``(G_h, G_w, C)``."""
    rows = torch.arange(grid[0])[:, None].expand(grid) % chunk[0]
    cols = torch.arange(grid[1])[None, :].expand(grid) % chunk[1]
    return vilt.pos_embed[rows * chunk[1] + cols]


def test_weights_are_shared_across_chunks():
    """Moving content from one chunk to another moves the output with it (translation by a chunk)."""
    torch.manual_seed(0)
    vilt = ViLT(dim=8, depth=2, heads=2, mlp_dim=16, chunk=(2, 2)).eval()
    x = torch.randn(1, 4, 4, 8)
    shifted = torch.roll(x, shifts=2, dims=2)
    torch.testing.assert_close(vilt(shifted), torch.roll(vilt(x), shifts=2, dims=2))


def test_padding_does_not_leak_into_real_tokens():
    """A 5 x 5 grid in 3 x 3 chunks: the real tokens' outputs equal running the top-left 3 x 3 chunk alone."""
    torch.manual_seed(0)
    vilt = ViLT(dim=8, depth=2, heads=2, mlp_dim=16, chunk=(3, 3)).eval()
    x = torch.randn(1, 5, 5, 8)
    torch.testing.assert_close(vilt(x)[:, :3, :3], vilt(x[:, :3, :3]))
