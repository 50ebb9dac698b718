"""X-ViT (space-time mixing attention, Bulat et al. NeurIPS 2021) and TSM-ViT (its supplementary, Eq. 1-3).

Both are ``VideoViT`` configs (see ``vit_video.py``): ViT-B/16 frames, ImageNet-initialisable,
clip head over the per-frame CLS features. Options: ``n_div`` (1/n_div of the channels from each
neighbour; 0 = off), ``mixing_layout`` (``global`` | ``per_head``), ``head``
(``temporal_attention`` | ``summary_token`` | ``average``), ``frame_drop_rate`` (X-ViT's Dropout(0.5) on
each frame's CLS feature before the head, from its public code).
"""

from __future__ import annotations

from sct.models.registry import register
from sct.models.vit_video import VideoViT, VideoViTConfig

register("xvit_b16", VideoViT, VideoViTConfig(temporal="mixing", n_div=8, head="temporal_attention",
                                              frame_drop_rate=0.5))
register("tsm_vit_b16", VideoViT, VideoViTConfig(temporal="tsm", n_div=8, head="average"))
