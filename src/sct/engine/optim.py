"""Optimiser (SGD with momentum, as the paper; AdamW as an option) and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from sct.config import OptimConfig

# For models that do not declare ``no_weight_decay()``: learned tokens and embeddings guessed by name.
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "position", "token")


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters ``model`` keeps out of weight decay: 1-D tensors (biases, norm scales) and
    the tokens and embeddings the model declares with ``no_weight_decay()`` (as timm's models do)."""
    names = {name for name, param in model.named_parameters() if param.ndim <= 1}
    if hasattr(model, "no_weight_decay"):
        return names | set(model.no_weight_decay())
    return names | {name for name, _ in model.named_parameters() if any(key in name for key in _NO_DECAY_NAMES)}


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group (see :func:`no_decay_names`)."""
    skip = set() if cfg.decay_norm_and_bias else no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum ``cfg.momentum``) or AdamW over :func:`parameter_groups`, at ``cfg.lr``."""
    groups = parameter_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


class WarmupCosineSchedule:
    """Per-step learning rate: linear warmup from ``start_factor x lr`` to ``lr``, then cosine to ``min_lr``.

    The state is just the step counter, so a resumed run sets exactly the same learning rates.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, total_steps: int, warmup_steps: int,
                 min_lr: float = 0.0, start_factor: float = 0.01) -> None:
        self.optimizer = optimizer
        self.lr, self.min_lr, self.start_factor = lr, min_lr, start_factor
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(warmup_steps, self.total_steps)
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """Learning rate used for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (self.start_factor + (1 - self.start_factor) * step / self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def current_lr(self) -> float:
        return self.lr_at(self.step_count)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int,
                   epochs: int) -> WarmupCosineSchedule:
    """The schedule over ``epochs x steps_per_epoch`` optimiser steps with ``cfg.warmup_epochs`` of warmup."""
    return WarmupCosineSchedule(
        optimizer,
        lr=cfg.lr,
        total_steps=steps_per_epoch * epochs,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        min_lr=cfg.min_lr,
        start_factor=cfg.warmup_start_factor,
    )
