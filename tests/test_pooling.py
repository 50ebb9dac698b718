"""Linear pooling (Eq. 4): exactly the 2x2 neighbours are merged, then one linear map 4C -> 2C."""

import torch

from sct.models.pooling import LinearPooling, squeeze2x2


def test_squeeze_concatenates_the_2x2_neighbours_in_eq4_order():
    h, w, c = 4, 6, 3
    x = torch.arange(h * w * c, dtype=torch.float32).reshape(1, h, w, c)
    s = squeeze2x2(x)
    assert s.shape == (1, 2, 3, 4 * c)
    for i in range(2):
        for j in range(3):
            expected = torch.cat([x[0, 2 * i, 2 * j], x[0, 2 * i, 2 * j + 1],
                                  x[0, 2 * i + 1, 2 * j], x[0, 2 * i + 1, 2 * j + 1]])
            torch.testing.assert_close(s[0, i, j], expected)


def test_output_token_depends_only_on_its_four_neighbours():
    torch.manual_seed(0)
    pool = LinearPooling(4)
    x = torch.randn(1, 4, 4, 4, requires_grad=True)
    pool(x)[0, 1, 0].sum().backward()
    touched = x.grad[0].abs().sum(-1) > 0
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[2:4, 0:2] = True
    assert torch.equal(touched, expected)


def test_odd_grid_is_zero_padded_and_width_doubles():
    pool = LinearPooling(8)
    x = torch.randn(3, 5, 7, 8)
    y = pool(x)
    assert y.shape == (3, 3, 4, 16)
    padded = torch.zeros(3, 6, 8, 8)
    padded[:, :5, :7] = x
    torch.testing.assert_close(y, pool(padded))


def test_cls_token_goes_through_the_same_projection():
    pool = LinearPooling(4)
    cls = torch.randn(2, 4)
    grid = cls[:, None, None, :].expand(2, 2, 2, 4)
    torch.testing.assert_close(pool.pool_token(cls), pool(grid)[:, 0, 0])
