"""Optimiser (SGD with momentum, as the paper; AdamW as an option) and the warmup + cosine schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from sct.config import OptimConfig

# For models that do not declare ``no_weight_decay()``: learned tokens and embeddings guessed by name.
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "position", "token")


_BLOCK = re.compile(r"(^|\.)blocks\.(\d+)\.")
_EMBEDDING = re.compile(r"(^|\.)(patch_embed|cls_token|pos_embed|temporal_embed)")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise decay: embeddings 0, ``blocks.i`` i + 1, everything after
    the blocks (clip encoder, heads) ``num_layers + 1``."""
    match = _BLOCK.search(name)
    if match:
        return int(match[2]) + 1
    return 0 if _EMBEDDING.search(name) and not name.startswith("clip_encoder.") else num_layers + 1


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters ``model`` keeps out of weight decay: 1-D tensors (biases, norm scales) and
    the tokens and embeddings the model declares with ``no_weight_decay()`` (as timm's models do)."""
    names = {name for name, param in model.named_parameters() if param.ndim <= 1}
    if hasattr(model, "no_weight_decay"):
        return names | set(model.no_weight_decay())
    return names | {name for name, _ in model.named_parameters() if any(key in name for key in _NO_DECAY_NAMES)}


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into decayed and non-decayed groups (see :func:`no_decay_names`), per layer
    when ``cfg.layer_decay`` is set (BEiT's fine-tuning rule: the lr of layer ``l`` of ``L`` is scaled by
    ``layer_decay ** (L + 1 - l)``, so the head keeps the full rate and the pretrained embedding the smallest).
    Each group's ``lr_scale`` multiplies the schedule's rate. Without layer decay the decayed group comes
    first (possibly empty), then the non-decayed one if it has parameters."""
    skip = set() if cfg.decay_norm_and_bias else no_decay_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    num_layers = max((int(m[2]) + 1 for n, _ in named if (m := _BLOCK.search(n))), default=0)
    groups: dict[tuple[bool, int], dict] = {}

    def group(decayed: bool, layer: int) -> dict:
        return groups.setdefault((decayed, layer), {
            "params": [], "weight_decay": cfg.weight_decay if decayed else 0.0,
            "lr_scale": cfg.layer_decay ** (num_layers + 1 - layer) if cfg.layer_decay is not None else 1.0,
        })

    if cfg.layer_decay is None:
        group(True, 0)
    for name, param in named:
        layer = layer_id(name, num_layers) if cfg.layer_decay is not None else 0
        group(name not in skip, layer)["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (not k[0], k[1]))]


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
            group["lr"] = lr * group.get("lr_scale", 1.0)

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
