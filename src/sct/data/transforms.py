"""Clip transforms in pure torch: crop boxes, antialiased resize, flip, normalisation.

Every spatial transform is "choose a box in the decoded frame, then resize that box to the output
size", so only the pixels that survive are resized (resizing a 640x480 clip and then cropping 224
would resize ~6x more pixels for the same result up to rounding of the box edges).

- :func:`scale_jitter_box`: PySlowFast's train crop, i.e. resize the short side to a random length in
  ``short_side_range`` and take a random ``crop x crop`` square;
- :func:`random_resized_box`: Inception-style random area and aspect ratio;
- :func:`test_boxes`: resize the short side to ``short_side`` and take the centre square or three
  squares covering the long side (left/centre/right, or top/centre/bottom).

Boxes are ``(top, left, height, width)`` in decoded-frame pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

Box = tuple[int, int, int, int]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _square_box(height: int, width: int, scale: float, crop: int) -> tuple[int, int]:
    """Side (in frame pixels) of a ``crop`` square after resizing the short side by ``scale``, clamped to fit."""
    side = max(1, round(crop / scale))
    return min(side, height), min(side, width)


def scale_jitter_box(height: int, width: int, crop: int, short_side_range: tuple[int, int],
                     generator: torch.Generator) -> Box:
    """Random ``crop`` square after resizing the short side to a uniform length in ``short_side_range``."""
    short = _randint(short_side_range[0], short_side_range[1], generator)
    h, w = _square_box(height, width, short / min(height, width), crop)
    return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w


def random_resized_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                       generator: torch.Generator, attempts: int = 10) -> Box:
    """Box of random area fraction in ``scale`` and aspect ratio (w/h) log-uniform in ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
    # Fall back to the centre box with the ratio clamped, as torchvision does.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def test_boxes(height: int, width: int, crop: int, short_side: int, num_crops: int) -> list[Box]:
    """``num_crops`` (1 or 3) ``crop`` squares after resizing the short side to ``short_side``.

    One crop: the centre. Three: both ends and the centre of the long side (the papers' "x 3").
    """
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    h, w = _square_box(height, width, short_side / min(height, width), crop)
    top, left = (height - h) // 2, (width - w) // 2
    if num_crops == 1:
        return [(top, left, h, w)]
    if width >= height:
        return [(top, x, h, w) for x in (0, left, width - w)]
    return [(y, left, h, w) for y in (0, top, height - h)]


def crop_resize(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Cut ``box`` from uint8 ``(T, H, W, 3)``, resize (bilinear, antialiased) to float ``(T, 3, size, size)``."""
    top, left, h, w = box
    clip = rearrange(frames[:, top:top + h, left:left + w], "t h w c -> t c h w").float()
    if (h, w) == (size, size):
        return clip
    return F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror ``(..., H, W)`` left-right."""
    return clip.flip(-1)


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, 3, H, W)`` in [0, 255] -> ``(3, T, H, W)`` float32, ``(x / 255 - mean) / std`` per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1) * 255.0
    return (rearrange(clip, "t c h w -> c t h w") - mean_t) / std_t
