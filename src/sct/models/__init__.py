"""Models: importing this package registers every model with the registry."""

from sct.models.registry import create_model, default_config, list_models, register

__all__ = ["create_model", "default_config", "list_models", "register"]
