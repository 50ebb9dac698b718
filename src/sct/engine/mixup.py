"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) with soft targets, for images and clips.

As timm's ``Mixup`` in ``batch`` mode (the DeiT recipe: mixup alpha 0.8, cutmix alpha 1.0, switch
probability 0.5, label smoothing 0.1): one ``lam ~ Beta(alpha, alpha)`` per batch; the batch is mixed with
itself reversed. CutMix pastes one box of area fraction ``1 - lam`` (the same box in every frame of a
clip) and ``lam`` is corrected to the pasted area. Targets are the label-smoothed one-hot vectors mixed by
``lam``. Randomness comes from the global RNG, which the trainer reseeds before every optimiser step.
"""

from __future__ import annotations

import math

import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(B,)`` ids -> ``(B, K)``: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-sum_k target_k log softmax(logits)_k`` per sample, averaged (``mean``) or summed (``sum``) over the batch."""
    per_sample = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


class Mixup:
    """``(x, labels) -> (mixed x, soft targets)``; ``x`` is ``(B, 3, H, W)`` or ``(B, 3, T, H, W)``."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1):
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.switch_prob, self.label_smoothing = switch_prob, label_smoothing

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        flipped = x.flip(0)
        if use_cutmix:
            top, left, h, w = cutmix_box(x.shape[-2], x.shape[-1], lam)
            x = x.clone()
            x[..., top:top + h, left:left + w] = flipped[..., top:top + h, left:left + w]
            lam = 1.0 - h * w / (x.shape[-2] * x.shape[-1])
        else:
            x = x * lam + flipped * (1.0 - lam)
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        return x, targets * lam + targets.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """``(top, left, h, w)``: a box of area ``~(1 - lam)`` centred uniformly at random, clipped to the image."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, left, bottom - top, right - left
