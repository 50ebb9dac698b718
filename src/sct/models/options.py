"""Validation of model config values, one rule each, so every config names the option at fault the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sct.errors import ConfigError


def check(ok: bool, config: Any, field: str, expected: str) -> None:
    """Raise ``ConfigError("<Config>.<field>: expected <expected>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{type(config).__name__}.{field}: expected {expected}, got {getattr(config, field)!r}")


def check_choice(config: Any, field: str, choices: Sequence[str]) -> None:
    """``config.field`` must be one of ``choices``."""
    check(getattr(config, field) in choices, config, field, f"one of {tuple(choices)}")


def check_positive_ints(config: Any, fields: Sequence[str], minimum: int = 1) -> None:
    """Each of ``fields`` must be an integer >= ``minimum``."""
    for field in fields:
        value = getattr(config, field)
        check(isinstance(value, int) and value >= minimum, config, field, f"an integer >= {minimum}")


def check_rates(config: Any, fields: Sequence[str]) -> None:
    """Each of ``fields`` must be a probability in [0, 1)."""
    for field in fields:
        check(0.0 <= getattr(config, field) < 1.0, config, field, "in [0, 1)")
