"""RandAugment, random erasing, Mixup / CutMix with soft targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sct.data.augment import OPS, RandAugment, random_erasing
from sct.engine.mixup import Mixup, cutmix_box, smooth_one_hot, soft_cross_entropy


def picture() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (50 + torch.rand(3, 24, 24, generator=gen) ** 2 * 150).round()  # not full-range, not uniform


@pytest.mark.parametrize("name", list(OPS))
def test_every_operation_keeps_shape_and_range_and_changes_the_image(name):
    x = picture()
    out = OPS[name](x, 0.9, 1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert not torch.equal(out, x), name


def test_geometric_operations_at_zero_magnitude_are_the_identity():
    x = picture()
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        assert torch.allclose(OPS[name](x, 0.0, 1.0), x, atol=1e-3), name


def test_translation_moves_the_image_and_fills_with_grey():
    x = torch.zeros(3, 8, 8)
    x[:, :, :4] = 255
    out = OPS["TranslateX"](x, 1.0, -1.0)  # 45% of the width to the right
    assert torch.all(out[:, :, 0] == 128) and out[:, :, 4].mean() > 200


def test_rand_augment_is_a_function_of_the_generator():
    x = picture()
    a = RandAugment(2, 9)(x, torch.Generator().manual_seed(5))
    b = RandAugment(2, 9)(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    outs = {RandAugment(2, 9)(x, torch.Generator().manual_seed(s)).sum().item() for s in range(8)}
    assert len(outs) > 3


def test_random_erasing_replaces_one_box_with_noise():
    x = torch.zeros(3, 32, 32)
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = (out != 0).any(0)
    rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.02 * 1024 * 0.8 <= changed.sum() <= box and torch.equal(random_erasing(x, 0.0, torch.Generator()), x)


def test_soft_targets_sum_to_one_and_smooth_like_cross_entropy():
    labels = torch.tensor([0, 2, 1])
    targets = smooth_one_hot(labels, 4, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(3)) and targets[0, 0] == pytest.approx(0.925)
    logits = torch.randn(3, 4)
    assert soft_cross_entropy(logits, targets) == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=0.1).item(), abs=1e-6)


def test_mixup_mixes_inputs_and_targets_by_the_same_lambda():
    torch.manual_seed(0)
    x = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 0.0)])
    mixed, targets = Mixup(2, mixup_alpha=0.8, label_smoothing=0.0)(x, torch.tensor([0, 1]))
    lam = mixed[0, 0, 0, 0].item()
    assert 0 < lam < 1 and targets[0, 0].item() == pytest.approx(lam) and torch.allclose(targets.sum(1), torch.ones(2))


def test_cutmix_pastes_one_box_in_every_frame_and_corrects_lambda():
    torch.manual_seed(3)
    x = torch.stack([torch.ones(3, 5, 16, 16), torch.zeros(3, 5, 16, 16)])
    mixed, targets = Mixup(2, cutmix_alpha=1.0, label_smoothing=0.0)(x, torch.tensor([0, 1]))
    pasted = mixed[0, 0] == 0  # (T, H, W): where clip 1 was pasted into clip 0
    assert pasted.any() and all(torch.equal(pasted[t], pasted[0]) for t in range(5))
    assert targets[0, 0].item() == pytest.approx(1 - pasted[0].float().mean().item())
    top, left, h, w = cutmix_box(10, 10, 0.75)
    assert 0 <= top and top + h <= 10 and 0 <= left and left + w <= 10
