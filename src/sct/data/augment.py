"""Image augmentations of the DeiT recipe in pure torch: RandAugment and random erasing.

- :class:`RandAugment` (Cubuk et al. 2020) as timm's ``rand-mM-n N-mstd0.5-inc1`` (the DeiT setting is
  ``rand-m9-mstd0.5-inc1``, n = 2): ``n`` operations drawn uniformly from the 15 below, each applied with
  probability 0.5 at magnitude ``m`` / 10 (plus Gaussian noise of std 0.5 on ``m``), signed operations
  flipped at random; the "increasing" variants, where a larger magnitude is always a stronger change.
  Geometric operations fill uncovered pixels with grey 128, as timm does.
- :func:`random_erasing` (Zhong et al. 2020) as timm's ``mode='pixel'``: with probability ``p`` a box of
  2-33% of the image with aspect ratio log-uniform in [0.3, 3.3] is replaced by per-pixel N(0, 1) noise,
  after normalisation.

Images are float ``(3, H, W)`` in [0, 255] (RandAugment) or normalised (random erasing); randomness comes
from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FILL = 128.0
_GREY = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """``other + factor * (image - other)``, clipped to [0, 255] (PIL's ImageEnhance)."""
    return (other + factor * (image - other)).clamp(0, 255)


def _grey(image: torch.Tensor) -> torch.Tensor:
    return (image * _GREY).sum(0, keepdim=True)


def _affine(image: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """Sample ``image`` at ``matrix @ (x, y, 1)`` (normalised coordinates); outside pixels get ``FILL``."""
    theta = torch.tensor([matrix], dtype=image.dtype)
    grid = F.affine_grid(theta, [1, 4, *image.shape[1:]], align_corners=False)
    padded = torch.cat([image, torch.ones_like(image[:1])])[None]
    out = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:3] + (1 - out[3:]) * FILL


def _equalize(image: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation (PIL's ``ImageOps.equalize``)."""
    out = []
    for channel in image.round().clamp(0, 255).long():
        hist = torch.bincount(channel.flatten(), minlength=256)
        nonzero = hist[hist > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step == 0:
            out.append(channel.float())
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(0, 255)
        out.append(lut[channel].float())
    return torch.stack(out)


def _autocontrast(image: torch.Tensor) -> torch.Tensor:
    lo = image.amin(dim=(1, 2), keepdim=True)
    hi = image.amax(dim=(1, 2), keepdim=True)
    scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp(min=1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (image - lo) * scale, image)


def _sharpen(image: torch.Tensor, factor: float) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = F.conv2d(image[:, None], kernel.view(1, 1, 3, 3), padding=1)[:, 0]
    smooth[:, [0, -1]] = image[:, [0, -1]]
    smooth[:, :, [0, -1]] = image[:, :, [0, -1]]
    return _blend(image, smooth, factor)


def _posterize(image: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` bits of each 8-bit value."""
    step = 2.0 ** (8 - bits)
    return torch.floor(image / step) * step


# name -> fn(image, level in [0, 1], sign in {-1, 1})
OPS = {
    "AutoContrast": lambda x, v, s: _autocontrast(x),
    "Equalize": lambda x, v, s: _equalize(x),
    "Invert": lambda x, v, s: 255.0 - x,
    "Rotate": lambda x, v, s: _affine(x, [[math.cos(a := math.radians(30 * v * s)), -math.sin(a), 0],
                                          [math.sin(a), math.cos(a), 0]]),
    "Posterize": lambda x, v, s: _posterize(x, 4 - int(4 * v)),
    "Solarize": lambda x, v, s: torch.where(x < 256 - 256 * v, x, 255.0 - x),
    "SolarizeAdd": lambda x, v, s: torch.where(x < 128, (x + 110 * v).clamp(0, 255), x),
    "Color": lambda x, v, s: _blend(x, _grey(x).expand_as(x), 1 + 0.9 * v * s),
    "Contrast": lambda x, v, s: _blend(x, _grey(x).mean().expand_as(x), 1 + 0.9 * v * s),
    "Brightness": lambda x, v, s: _blend(x, torch.zeros_like(x), 1 + 0.9 * v * s),
    "Sharpness": lambda x, v, s: _sharpen(x, 1 + 0.9 * v * s),
    "ShearX": lambda x, v, s: _affine(x, [[1, 0.3 * v * s, 0], [0, 1, 0]]),
    "ShearY": lambda x, v, s: _affine(x, [[1, 0, 0], [0.3 * v * s, 1, 0]]),
    "TranslateX": lambda x, v, s: _affine(x, [[1, 0, 2 * 0.45 * v * s], [0, 1, 0]]),
    "TranslateY": lambda x, v, s: _affine(x, [[1, 0, 0], [0, 1, 2 * 0.45 * v * s]]),
}


class RandAugment:
    """``n`` random operations at magnitude ``m`` (0-10) on float ``(3, H, W)`` in [0, 255]."""

    def __init__(self, n: int, m: float, prob: float = 0.5, magnitude_std: float = 0.5):
        self.n, self.m, self.prob, self.magnitude_std = int(n), float(m), prob, magnitude_std

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        names = list(OPS)
        for k in torch.randint(len(names), (self.n,), generator=gen).tolist():
            apply, sign = torch.rand(2, generator=gen).tolist()
            if apply >= self.prob:
                continue
            magnitude = self.m + self.magnitude_std * float(torch.randn((), generator=gen))
            level = min(max(magnitude, 0.0), 10.0) / 10.0
            image = OPS[names[k]](image, level, 1.0 if sign < 0.5 else -1.0)
        return image


def random_erasing(image: torch.Tensor, prob: float, gen: torch.Generator, area: tuple[float, float] = (0.02, 1 / 3),
                   ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """With probability ``prob``, one box of normalised ``(3, H, W)`` replaced by N(0, 1) noise."""
    if float(torch.rand((), generator=gen)) >= prob:
        return image
    _, height, width = image.shape
    for _ in range(attempts):
        target = height * width * (area[0] + (area[1] - area[0]) * float(torch.rand((), generator=gen)))
        log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
        aspect = math.exp(log_lo + (log_hi - log_lo) * float(torch.rand((), generator=gen)))
        h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            image = image.clone()
            image[:, top:top + h, left:left + w] = torch.randn((3, h, w), generator=gen)
            return image
    return image
