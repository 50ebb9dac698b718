"""Models named on the analysis command lines: ours from the registry, and Hugging Face peers.

``hf:timesformer``, ``hf:vivit`` and ``hf:videomae`` are built from ``transformers`` configs with
random initialisation (nothing is downloaded): for speed, memory and FLOPs the weights do not matter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sct.errors import ConfigError
from sct.models import create_model, list_models

# name -> (config class, model class, default config fields), all from ``transformers``.
HF_PEERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "hf:timesformer": ("TimesformerConfig", "TimesformerForVideoClassification", {}),
    "hf:vivit": ("VivitConfig", "VivitForVideoClassification", {}),
    "hf:videomae": ("VideoMAEConfig", "VideoMAEForVideoClassification", {}),
}


class HFVideoClassifier(nn.Module):
    """A ``transformers`` ``*ForVideoClassification`` model behind our interface.

    Input ``(B, 3, T, H, W)`` (ours) -> the library's ``(B, T, 3, H, W)``; output logits ``(B, classes)``.
    The wrapped model's children are registered as this module's, so per-module tables see them.
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        for child_name, child in model.named_children():
            self.add_module(child_name, child)
        self._forward = model.forward
        self.peer_name = name
        self.hf_config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(pixel_values=x.transpose(1, 2)).logits


def available() -> list[str]:
    """Names ``build_model`` accepts: registered models, plus the peers when ``transformers`` imports."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return list_models()
    return list_models() + list(HF_PEERS)


def build_hf_peer(name: str, *, num_classes: int, num_frames: int, img_size: int, grad_checkpointing: bool = False,
                  **fields: Any) -> nn.Module:
    """A randomly initialised Hugging Face video classifier; ``fields`` override its config.

    ``grad_checkpointing`` turns on the library's own per-layer checkpointing.
    """
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"model {name!r} needs the `transformers` package (pip install transformers)") from None
    config_cls, model_cls, defaults = HF_PEERS[name]
    config = getattr(transformers, config_cls)(
        **{**defaults, "num_frames": num_frames, "image_size": img_size, "num_labels": num_classes, **fields}
    )
    model = getattr(transformers, model_cls)(config).eval()
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return HFVideoClassifier(model, name)


def build_model(name: str, *, num_classes: int = 400, num_frames: int | None = None, img_size: int | None = None,
                grad_checkpointing: bool = False, **overrides: Any) -> nn.Module:
    """Build ``name`` (registry name or ``hf:...`` peer) in eval mode; ``overrides`` set config fields."""
    if name.startswith("hf:"):
        if name not in HF_PEERS:
            raise ConfigError(f"unknown Hugging Face peer {name!r}; known: {', '.join(HF_PEERS)}")
        return build_hf_peer(name, num_classes=num_classes, num_frames=num_frames or 8, img_size=img_size or 224,
                             grad_checkpointing=grad_checkpointing, **overrides)
    return create_model(name, num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                        grad_checkpointing=grad_checkpointing, **overrides).eval()


def input_shape(model: nn.Module) -> tuple[int, int]:
    """``(num_frames, img_size)`` the model was built for (our config or the peer's)."""
    config = getattr(model, "config", None) or model.hf_config
    frames = config.num_frames
    size = getattr(config, "img_size", None) or config.image_size
    return int(frames), int(size)
