"""The contract every registered model keeps, checked for each name in ``sct.list_models()`` at a tiny size.

A new model is covered by registering it; a model with a new config class needs its tiny sizes in ``TINY``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sct
from sct.analysis.flops import profile_model
from sct.analysis.visualize import attention_maps
from sct.errors import ConfigError
from sct.models.registry import _lookup, default_config
from sct.models.sct import SCTConfig
from sct.models.vit_video import VideoViTConfig, ViTSCTConfig
from sct.models.weights import save_weights

FRAMES, SIZE, CLASSES = 4, 32, 3


def _tiny_sct(c: SCTConfig) -> dict:
    """Two blocks, each part kept where the preset has it (the literal presets keep ViLT + LSH in both)."""
    return dict(embed_dim=16, vilt_depth=1, heads=(2, 2, 2, 2), dim_heads=(None, None, None, None), chunk_size=4,
                lsh_chunk_length=16, clip_dim=16, clip_mlp_dim=32, clip_depth=1, mlp_ratio=2.0, num_blocks=2,
                **{k: min(getattr(c, k), 2) for k in ("num_poolings", "local_blocks", "global_blocks")})


TINY = {
    SCTConfig: _tiny_sct,
    VideoViTConfig: lambda c: dict(dim=32, depth=2, heads=2, patch_size=8, mlp_ratio=2.0),
    ViTSCTConfig: lambda c: dict(dim=32, depth=1, heads=2, patch_size=8, mlp_ratio=2.0, temporal_heads=2,
                                 temporal_dim_head=8, clip_dim=16, clip_mlp_dim=32, clip_depth=1, clip_heads=2),
}
# Names starting with an underscore are registered by other tests (toy models), not by the package.
MODELS = [name for name in sct.list_models() if not name.startswith("_")]
# Image models (``takes_images``: ``(B, 3, H, W)`` in, one [CLS] feature per image) keep the same contract on
# one frame; attention rollout over frames is a video model's (test_attention_maps_cover_every_frame).
IMAGE_MODELS = {name for name in MODELS if getattr(_lookup(name)[0], "takes_images", False)}
VIDEO_MODELS = [name for name in MODELS if name not in IMAGE_MODELS]


def tiny_overrides(name: str) -> dict:
    config = default_config(name)
    assert type(config) in TINY, f"{name}: add the tiny sizes of {type(config).__name__} to TINY"
    return TINY[type(config)](config)


def tiny(name: str, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    frames = 1 if name in IMAGE_MODELS else FRAMES
    return sct.create_model(name, num_classes=CLASSES, num_frames=frames, img_size=SIZE, **tiny_overrides(name),
                            **extra)


def clip(batch: int = 2, name: str | None = None) -> torch.Tensor:
    """A clip ``(B, 3, T, H, W)``, or images ``(B, 3, H, W)`` for an image model ``name``."""
    x = torch.randn(batch, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return x[:, :, 0] if name in IMAGE_MODELS else x


def test_the_paper_models_are_registered():
    for name in ("sct_s", "sct_m", "sct_l", "sct_tiny", "sct_s_literal", "sct_m_literal", "sct_l_literal",
                 "xvit_b16", "tsm_vit_b16", "timesformer_b16", "vit_b16_sct"):
        assert name in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_and_contract(name):
    model = tiny(name).eval()
    x = clip(name=name)
    features = model.forward_features(x)
    assert features.shape[:2] == ((2, model.num_features) if name in IMAGE_MODELS else (2, FRAMES))
    logits = model.forward_head(features)
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(x), logits)
    assert model.config is not None and model.config.num_classes == CLASSES
    names = dict(model.named_parameters())
    declared = model.no_weight_decay()
    assert declared and declared <= names.keys(), sorted(declared - names.keys())


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = tiny(name).train()
    with torch.no_grad():  # zero-initialised projections (TimeSformer's temporal_fc) would block a path
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    loss = torch.nn.functional.cross_entropy(model(clip(name=name)), torch.tensor([0, 2]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


@pytest.mark.parametrize("name", MODELS)
def test_weights_round_trip_through_a_file(name, tmp_path):
    model = tiny(name, seed=0).eval()
    path = save_weights(model, tmp_path / f"{name}.safetensors")
    loaded = tiny(name, seed=1, pretrained=str(path)).eval()
    x = clip(1, name)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_profile_counts_parameters_and_macs(name):
    model = tiny(name)
    profile = profile_model(model, name)
    assert profile["params"] == sum(p.numel() for p in model.parameters())
    assert profile["macs"] > 0
    assert sum(m["params"] for m in profile["modules"]) == profile["params"]


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_attention_maps_cover_every_frame(name):
    model = tiny(name)
    maps, weights, logits = attention_maps(model, clip(1)[0])
    assert maps.shape == (FRAMES, SIZE, SIZE) and torch.isfinite(maps).all()
    assert float(maps.min()) >= 0.0 and float(maps.max()) == pytest.approx(1.0)
    assert weights.shape == (FRAMES,) and logits.shape == (CLASSES,)


CONFIG_CLASSES = sorted({type(default_config(name)) for name in MODELS}, key=lambda c: c.__name__)


@pytest.mark.parametrize("config_cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_choice_field_is_checked_by_the_shared_rule(config_cls):
    """Every string field of a model config is a choice, refused by ``sct.models.options`` in one wording."""
    choices = [f.name for f in dataclasses.fields(config_cls) if f.type in (str, "str")]
    assert choices
    for field in choices:
        with pytest.raises(ConfigError, match=rf"^{config_cls.__name__}\.{field}: expected one of \("):
            config_cls(**{field: "not-a-choice"})
