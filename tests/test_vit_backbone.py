"""One ViT backbone config for both ViT video families: its fields are declared once, stay flat config keys,
and checkpoints written with the flat keys load unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import sct
from sct.engine.checkpoint import model_from_checkpoint, model_metadata
from sct.errors import ConfigError
from sct.models.vit_encoder import ViTBackboneConfig
from sct.models.vit_video import VideoViTConfig, ViTSCTConfig
from sct.models.weights import save_weights

BACKBONE = [f.name for f in dataclasses.fields(ViTBackboneConfig)]
TINY = dict(img_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_ratio=2.0, weight_init="xavier")


@pytest.mark.parametrize("config_cls", [VideoViTConfig, ViTSCTConfig])
def test_both_families_extend_the_backbone_and_declare_none_of_its_fields(config_cls):
    assert issubclass(config_cls, ViTBackboneConfig)
    assert not set(BACKBONE) & set(vars(config_cls).get("__annotations__", {}))


@pytest.mark.parametrize("name", ["xvit_b16", "vit_b16_sct"])
def test_flat_keys_set_the_backbone_the_encoder_is_built_from(name):
    model = sct.create_model(name, num_classes=3, num_frames=4, **TINY)
    backbone = model.config.backbone
    assert type(backbone) is ViTBackboneConfig and dataclasses.asdict(backbone) == {
        **dataclasses.asdict(ViTBackboneConfig()), **TINY}
    assert len(model.encoder.blocks) == 2 and model.encoder.pos_embed.shape == (1, 1 + 4 * 4, 32)


@pytest.mark.parametrize("config_cls", [ViTBackboneConfig, VideoViTConfig, ViTSCTConfig])
def test_backbone_checks_name_the_field(config_cls):
    with pytest.raises(ConfigError, match=rf"{config_cls.__name__}\.dim: expected a multiple of heads=5"):
        config_cls(dim=32, heads=5)


def test_a_checkpoint_with_flat_backbone_keys_loads(tmp_path):
    torch.manual_seed(0)
    model = sct.create_model("xvit_b16", num_classes=3, num_frames=4, **TINY).eval()
    metadata = model_metadata(model, "xvit_b16", ["a", "b", "c"], "{}")
    assert set(BACKBONE) <= set(json.loads(metadata["model_config"]))  # flat, as before the shared config
    save_weights(model, tmp_path / "model.safetensors", metadata)
    loaded, _ = model_from_checkpoint(tmp_path / "model.safetensors")
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model(x))
    assert loaded.config == model.config
