"""Latent bugs of the model contract, each with the behaviour that fixes it: per-clip stochastic depth,
weight decay the model declares, SCTConfig's shift and head checks, X-ViT's frame-feature dropout."""

from __future__ import annotations

import pytest
import torch

import sct
from sct.config import OptimConfig
from sct.engine.optim import parameter_groups
from sct.errors import ConfigError
from sct.models.attention.dense import MultiHeadAttention
from sct.models.blocks import DropPath, TransformerLayer, drop_path_rates

TINY_SCT = dict(num_classes=3, num_frames=4, img_size=32)


def _record_drop_path(model: torch.nn.Module) -> list[tuple[torch.Tensor, int]]:
    """Forward hooks on every DropPath: (which entries were kept, rows per sample) of each call."""
    calls = []

    def hook(module, args, out):
        x, rows = args[0], (args[1] if len(args) > 1 else 1)
        kept = (out != 0) | (x == 0)  # a dropped row is all zeros; a kept one is x / keep
        calls.append((kept.detach(), rows))

    for module in model.modules():
        if isinstance(module, DropPath):
            module.register_forward_hook(hook)
    return calls


def test_drop_path_draws_one_mask_per_sample_not_per_row():
    torch.manual_seed(0)
    x = torch.ones(6 * 20, 3, 4)  # 6 samples of 20 rows (frames x chunks)
    out = DropPath(0.5).train()(x, rows_per_sample=20).reshape(6, -1)
    assert all(len(set(row.tolist())) == 1 for row in out)
    assert {float(v) for v in out[:, 0]} <= {0.0, 2.0}


def test_sct_stochastic_depth_drops_whole_clips_in_every_layer():
    torch.manual_seed(0)
    model = sct.create_model("sct_tiny_literal", **TINY_SCT, drop_path_rate=0.5).train()
    calls = _record_drop_path(model)
    clips = 4
    model(torch.randn(clips, 3, 4, 32, 32))
    assert any(rows > 1 for _, rows in calls), "the ViLT and LSH layers run with several rows per clip"
    assert any(not kept.all() for kept, _ in calls), "at rate 0.5 some clip loses some layer"
    for kept, rows in calls:
        per_clip = kept.reshape(clips, -1)
        assert (per_clip == per_clip[:, :1]).all(), f"a mask differs inside a clip ({rows} rows per clip)"


def test_layer_without_attention_residual_keeps_its_tokens_under_drop_path():
    torch.manual_seed(0)
    layer = TransformerLayer(8, MultiHeadAttention(8, 2), 16, drop_path=0.99, residual=False).train()
    x = torch.randn(2, 5, 8)
    out = layer(x)
    attn = layer.attn(layer.norm1(x))
    # Dropping the attention output would zero the stream; only the MLP branch is dropped (as it is here).
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, attn)


def test_drop_path_schedule_is_linear_from_zero():
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert drop_path_rates(0.3, 1) == [0.0] and drop_path_rates(0.3, 0) == []


def _no_decay(model: torch.nn.Module) -> set[int]:
    groups = parameter_groups(model, OptimConfig(weight_decay=0.05))
    return {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}


@pytest.mark.parametrize("name", ["xvit_b16", "vit_b16_sct"])
def test_vit_temporal_embedding_is_not_decayed(name):
    with torch.device("meta"):
        model = sct.create_model(name, num_frames=4, img_size=32, patch_size=8, dim=32, depth=1, heads=2)
    assert "encoder.temporal_embed" in model.no_weight_decay()
    assert id(model.encoder.temporal_embed) in _no_decay(model)
    assert id(model.encoder.blocks[0].attn.qkv.weight) not in _no_decay(model)


def test_optimizer_asks_the_model_which_parameters_skip_decay():
    class Declares(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4, 4))  # a 2-D name no guess would catch
            self.proj = torch.nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = Declares()
    assert _no_decay(model) == {id(model.table), id(model.proj.bias)}


@pytest.mark.parametrize("frames,shift", [(4, 4), (4, 5), (8, 8)])
def test_sct_refuses_a_shift_of_a_whole_clip_or_more(frames, shift):
    with pytest.raises(ConfigError, match="shift_frames"):
        sct.create_model("sct_tiny", num_frames=frames, shift_frames=shift)


def test_sct_accepts_single_frame_models_with_the_default_shift():
    assert sct.create_model("sct_tiny", num_frames=1).config.shift_frames == 1


def test_sct_checks_heads_at_every_width_of_each_component():
    # LSH in both blocks: widths 32 and 64; 3 heads divide neither, and the message names them.
    with pytest.raises(ConfigError, match=r"LSH width \[32, 64\]"):
        sct.create_model("sct_tiny_literal", heads=(2, 3, 2, 2))
    # Without a ViLT stage its head count is not checked at all.
    assert sct.create_model("sct_tiny", local_kind="none", heads=(3, 2, 2, 2)).config.local_kind == "none"


def test_xvit_drops_frame_features_before_the_temporal_head():
    torch.manual_seed(0)
    model = sct.create_model("xvit_b16", num_classes=3, num_frames=4, img_size=32, patch_size=8, dim=32, depth=1,
                             heads=2)
    assert model.config.frame_drop_rate == 0.5
    seen = []
    model.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    features = torch.ones(2, 4, 32)
    model.train().forward_head(features)
    model.eval().forward_head(features)
    zeros = float((seen[0] == 0).float().mean())
    assert 0.35 < zeros < 0.65 and torch.equal(seen[1], features)
    assert sct.create_model("tsm_vit_b16").config.frame_drop_rate == 0.0


def test_named_head_fields_set_and_read_the_component_entries():
    from sct.config import load_config

    model = sct.create_model("sct_tiny", temporal_heads=4, clip_dim_head=8)
    assert model.config.heads == (2, 2, 4, 2) and model.config.dim_heads == (None, None, None, 8)
    assert model.blocks[0].temporal[0].attn.heads == model.config.temporal_heads == 4
    run = load_config(None, ["model.name=sct_tiny", "model.vilt_heads=4"])
    assert run.model.overrides == {"heads": (4, 2, 2, 2)}


def test_lsh_settings_are_one_typed_config():
    from sct.models.attention.lsh import LSHConfig

    config = sct.create_model("sct_tiny", lsh_hashes=3).config.lsh
    assert config == LSHConfig(n_hashes=3, n_buckets=None, chunk_length=32)
    with pytest.raises(ConfigError, match="n_buckets"):
        LSHConfig(n_buckets=3)
