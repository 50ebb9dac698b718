"""Models: importing this package registers every model with the registry."""

from sct.models import (
    sct,  # noqa: F401
    sct_image,  # noqa: F401
    vit_video,  # noqa: F401
    xvit,  # noqa: F401
)
from sct.models.registry import create_model, default_config, list_models, register

__all__ = ["create_model", "default_config", "list_models", "register"]
