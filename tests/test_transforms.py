"""Pure-torch transforms: crop boxes, antialiased resize, flip, normalisation."""

import pytest
import torch

from sct.data import transforms as T


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_three_test_crops_cover_the_long_side():
    boxes = T.test_boxes(240, 320, crop=224, short_side=224, num_crops=3)
    assert [b[2:] for b in boxes] == [(240, 240)] * 3  # 224 at short side 224 -> 240 source pixels
    assert [b[1] for b in boxes] == [0, 40, 80]  # left, centre, right: together they span all 320 columns
    portrait = T.test_boxes(320, 240, crop=224, short_side=224, num_crops=3)
    assert [b[0] for b in portrait] == [0, 40, 80] and {b[1] for b in portrait} == {0}


def test_centre_crop_with_larger_short_side():
    (top, left, h, w), = T.test_boxes(240, 320, crop=224, short_side=256, num_crops=1)
    assert (h, w) == (210, 210)  # 224 / (256 / 240)
    assert (top, left) == (15, 55)


def test_scale_jitter_box_in_frame_and_seeded():
    sizes = set()
    for seed in range(40):
        top, left, h, w = T.scale_jitter_box(240, 320, 224, (256, 320), _gen(seed))
        assert h == w and 0 <= top <= 240 - h and 0 <= left <= 320 - w
        assert round(224 * 240 / 320) <= h <= round(224 * 240 / 256)
        sizes.add(h)
    assert len(sizes) > 5
    assert T.scale_jitter_box(240, 320, 224, (256, 320), _gen(7)) == T.scale_jitter_box(240, 320, 224, (256, 320),
                                                                                         _gen(7))


def test_random_resized_box_area_and_ratio():
    for seed in range(40):
        top, left, h, w = T.random_resized_box(100, 200, (0.2, 0.5), (0.75, 1.333), _gen(seed))
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 200
        assert 0.15 <= h * w / 20000 <= 0.55
        assert 0.7 <= w / h <= 1.4


def test_crop_resize_shape_and_antialias():
    checker = (torch.arange(64).view(1, 64) + torch.arange(64).view(64, 1)) % 2 * 255
    frames = checker.to(torch.uint8).view(1, 64, 64, 1).expand(2, 64, 64, 3).contiguous()
    out = T.crop_resize(frames, (0, 0, 64, 64), 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    # antialiasing averages the 1-pixel checkerboard to grey; point sampling would keep 0/255
    assert out.std() < 5 and abs(out.mean() - 127.5) < 5


def test_crop_resize_takes_the_box():
    frames = torch.zeros(1, 10, 10, 3, dtype=torch.uint8)
    frames[:, 2:6, 3:7] = 200
    out = T.crop_resize(frames, (2, 3, 4, 4), 4)
    assert torch.all(out == 200)


def test_flip_and_normalize():
    clip = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3)
    assert torch.equal(T.hflip(clip)[..., 0], clip[..., 2])
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    full = torch.full((4, 3, 2, 2), 127.5)
    out = T.normalize(full, mean, std)
    assert out.shape == (3, 4, 2, 2)
    assert out[0].flatten().tolist() == pytest.approx([0.0] * 16)
    assert out[1].flatten().tolist() == pytest.approx([1.0] * 16)
    assert out[2].flatten().tolist() == pytest.approx([0.5] * 16)
