"""sct: the Shifted Chunk Transformer toolkit for video action recognition."""

from sct.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
