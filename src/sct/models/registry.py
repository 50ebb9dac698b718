"""Model registry: a name -> (model class, default config) table, as timm does it.

Each entry is one line, e.g. ``register("sct_s", SCT, SCTConfig(...))``. ``create_model`` copies the
default config, applies creation arguments and overrides, and builds the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from sct.errors import ConfigError
from sct.models.checkpointing import set_grad_checkpointing

_REGISTRY: dict[str, tuple[Callable[[Any], nn.Module], Any]] = {}


def register(name: str, model_cls: Callable[[Any], nn.Module], config: Any) -> None:
    """Register ``model_cls(config)`` under ``name``; ``config`` is a dataclass instance."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of {name!r} must be a dataclass instance")
    _REGISTRY[name] = (model_cls, config)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a substring."""
    return sorted(n for n in _REGISTRY if pattern is None or pattern in n)


def default_config(name: str) -> Any:
    """A copy of the default config registered for ``name``."""
    return dataclasses.replace(_lookup(name)[1])


def _lookup(name: str) -> tuple[Callable[[Any], nn.Module], Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise ConfigError(f"unknown model {name!r}; registered models: {known}") from None


def build_config(name: str, **fields: Any) -> Any:
    """Default config of ``name`` with ``fields`` replaced; unknown fields raise ``ConfigError``."""
    _, config = _lookup(name)
    if hasattr(config, "named_fields"):  # named spellings of tuple entries (SCT's per-component heads)
        fields = config.named_fields(fields)
    valid = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid options: {', '.join(sorted(valid))}"
        )
    return dataclasses.replace(config, **fields)


def create_model(
    name: str,
    *,
    num_classes: int = 400,
    num_frames: int | None = None,
    img_size: int | None = None,
    pretrained: str | None = None,
    grad_checkpointing: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Input of the returned model: float tensor ``(B, 3, T, H, W)``; output: logits ``(B, num_classes)``.
    ``num_frames``/``img_size`` default to the registered config's values; ``overrides`` set any other
    field of the model's config dataclass. ``pretrained`` is a local weights file (image ViT weights
    for the ViT family; an ``sct`` checkpoint for any model). ``grad_checkpointing`` recomputes each
    transformer layer's activations in the backward pass instead of keeping them (less memory, more time).
    """
    fields: dict[str, Any] = {"num_classes": num_classes, **overrides}
    if num_frames is not None:
        fields["num_frames"] = num_frames
    if img_size is not None:
        fields["img_size"] = img_size
    model_cls, _ = _lookup(name)
    model = model_cls(build_config(name, **fields))
    if pretrained is not None:
        from sct.models.weights import load_pretrained

        # Kept on the model so callers (``sct train``) can print what was loaded, new and unused.
        model.load_report = load_pretrained(model, pretrained)
    if grad_checkpointing:
        set_grad_checkpointing(model)
    return model
