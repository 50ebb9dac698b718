"""SCT's frame pathway as an image classifier: the paper's ImageNet-21K pretraining stage (§4, Table 9).

``SCTImage`` runs SCT's patch embedding and blocks (ViLT, image LSH, linear poolings and the temporal
layers) on one frame. With T = 1 the shifted MSA's key frame ``t - s`` is the frame itself (the roll is
cyclic), so it is an ordinary MSA over the frame's tokens. A LayerNorm and a linear classifier read the
frame's [CLS]. The modules are built by :func:`sct.models.sct.frame_pathway`, so the parameter names are
the video model's (``patch_embed.*``, ``blocks.*``) and an image checkpoint initialises ``sct_*`` by name;
``norm.*`` / ``head.*`` are the image head, unused by a video model.

Input ``(B, 3, H, W)`` (a ``(B, 3, 1, H, W)`` clip of one frame is accepted too); output logits
``(B, num_classes)``. The config is SCT's own dataclass with ``num_frames = 1``; its clip-encoder fields
are kept so that an image config and the video config it feeds differ only where they must.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sct.models.blocks import init_weights, parameters_named
from sct.models.options import check
from sct.models.registry import default_config, register
from sct.models.sct import SCT, SCTConfig, embed_frames, frame_features, frame_pathway

# The image head's parameters in an ``sct_*_image`` checkpoint: the part a video model initialised from it
# does not use (``sct.models.transfer`` lists them as unused rather than as foreign tensors).
HEAD_KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")


class SCTImage(nn.Module):
    """SCT's frame pathway + LayerNorm + linear classifier on the [CLS]: ``(B, 3, H, W) -> (B, classes)``."""

    takes_images = True

    def __init__(self, config: SCTConfig):
        super().__init__()
        check(config.num_frames == 1, config, "num_frames", "1 (an image model sees one frame)")
        self.config = c = config
        self.patch_embed, self.blocks, _ = frame_pathway(c)
        self.num_features = c.temporal_widths()[-1]
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(c.drop_rate)
        self.head = nn.Linear(self.num_features, c.num_classes)
        init_weights(self, c.weight_init)

    # The video model's components (by submodule name), plus the image head.
    components = {**{k: v for k, v in SCT.components.items() if k != "clip_encoder"},
                  "norm": "image head", "head": "image head"}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` -> tiny-patch grid ``(N, H / p, W / p, C)`` (as :meth:`SCT.embed`)."""
        return embed_frames(self.patch_embed, self.config.patch_size, x)

    def no_weight_decay(self) -> set[str]:
        """Learnt tokens and position embeddings, as the video model declares them."""
        return parameters_named(self, ("pos_embed", "cls_token"))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the image's [CLS] feature ``(B, C)``: the video model's per-frame feature."""
        if x.dim() == 4:
            x = x[:, :, None]
        return frame_features(self.patch_embed, self.blocks, self.config.patch_size, x)[:, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` -> logits ``(B, num_classes)``."""
        return self.head(self.head_drop(self.norm(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _image_config(video_model: str) -> SCTConfig:
    return dataclasses.replace(default_config(video_model), num_frames=1, num_classes=1000)


register("sct_tiny_image", SCTImage, _image_config("sct_tiny"))
register("sct_s_image", SCTImage, _image_config("sct_s"))
register("sct_m_image", SCTImage, _image_config("sct_m"))
register("sct_l_image", SCTImage, _image_config("sct_l"))
