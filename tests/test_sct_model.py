"""The SCT model: shapes, gradients, ablation values, config validation, registry entries."""

import dataclasses

import pytest
import torch

import sct
from sct.errors import ConfigError
from sct.models.attention.shifted import TEMPORAL_KINDS
from sct.models.image_layers import GLOBAL_KINDS, LOCAL_KINDS
from sct.models.registry import default_config
from sct.models.sct import SCTConfig

TINY = dict(num_classes=5, num_frames=4, img_size=32)


def _tiny(**overrides):
    torch.manual_seed(0)
    return sct.create_model("sct_tiny", **{**TINY, **overrides})


@pytest.mark.parametrize("frames,h,w", [(4, 32, 32), (3, 30, 45), (1, 17, 23), (6, 40, 48)])
def test_logits_shape_for_sizes_that_need_padding(frames, h, w):
    model = _tiny(num_frames=frames).eval()
    x = torch.randn(2, 3, frames, h, w)
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, frames, model.num_features)


def test_clip_length_other_than_configured_works():
    model = _tiny().eval()
    assert model(torch.randn(1, 3, 7, 32, 32)).shape == (1, 5)


def test_every_parameter_gets_a_gradient():
    model = _tiny(drop_path_rate=0.1, drop_rate=0.1)
    model.train()
    logits = model(torch.randn(2, 3, 4, 32, 32))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_same_seed_same_output():
    x = torch.randn(1, 3, 4, 32, 32)
    a, b = _tiny().eval(), _tiny().eval()
    torch.testing.assert_close(a(x), b(x))


def test_frame_features_see_other_frames_through_shifted_msa():
    """Changing frame 0 changes frame 1's [CLS] feature (keys from t - 1) and not frame 2's (depth 1)."""
    model = _tiny(num_blocks=1, num_poolings=1, local_blocks=1, global_blocks=1).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    x2 = x.clone()
    x2[:, :, 0] += torch.randn_like(x2[:, :, 0])
    diff = (model.forward_features(x) - model.forward_features(x2)).abs().amax(dim=(0, 2))
    assert diff[0] > 1e-6 and diff[1] > 1e-6 and diff[2] < 1e-6 and diff[3] < 1e-6


ABLATIONS = (
    [dict(local_kind=k) for k in LOCAL_KINDS]
    + [dict(global_kind=k) for k in GLOBAL_KINDS]
    + [dict(temporal_kind=k) for k in ("shifted", "space", "time", "space_time_concat")]
    + [dict(temporal_depth=0, shift_frames=0), dict(temporal_depth=2, shift_frames=1), dict(shift_frames=3),
       dict(clip_depth=2), dict(clip_depth=0), dict(patch_size=2, chunk_size=7), dict(patch_size=8, chunk_size=2),
       dict(vilt_depth=3), dict(num_blocks=4, num_poolings=3), dict(num_blocks=3, global_blocks=3, local_blocks=2),
       dict(temporal_residual=False), dict(embed_dim=16, mlp_ratio=2.0, heads=(1, 2, 4, 1), dim_heads=(8, 8, 4, 16)),
       dict(lsh_hashes=2, lsh_buckets=4, lsh_chunk_length=8), dict(global_kind="lsh", global_blocks=2)]
)


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_ablation_value_builds_and_runs(overrides):
    model = _tiny(**overrides)
    for name, value in overrides.items():
        assert getattr(model.config, name) == value
    logits = model(torch.randn(1, 3, 4, 32, 32))
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()
    logits.sum().backward()


def test_ablations_change_the_model():
    base = _tiny()
    assert sum(p.numel() for p in _tiny(global_kind="none").parameters()) < sum(p.numel() for p in base.parameters())
    space = _tiny(shift_frames=0)
    assert space.config.effective_temporal_kind == "space" and base.config.effective_temporal_kind == "shifted"
    assert type(space.blocks[0].temporal[0].attn).__name__ == "MultiHeadAttention"
    assert len(_tiny(temporal_depth=2).blocks[0].temporal) == 2
    assert len(_tiny(clip_depth=3).clip_encoder.layers) == 3


@pytest.mark.parametrize("field,value", [
    ("local_kind", "swin"), ("global_kind", "conv3d"), ("temporal_kind", "divided"), ("patch_size", 0),
    ("shift_frames", -1), ("num_poolings", 5), ("heads", (3, 2, 2, 2)), ("drop_rate", 1.5), ("lsh_buckets", 3),
    ("dim_heads", (None, None)), ("img_size", 2),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        sct.create_model("sct_tiny", **{**TINY, field: value})


def test_registered_models_follow_table3():
    assert {"sct_s", "sct_m", "sct_l", "sct_tiny"} <= set(sct.list_models())
    table3 = {"sct_s": (96, 384, 4, (4, 6, 8, 8)), "sct_m": (128, 512, 6, (4, 8, 8, 8)),
              "sct_l": (192, 768, 4, (4, 6, 8, 8))}
    for name, (dim, mlp, depth, heads) in table3.items():
        c = default_config(name)
        assert (c.embed_dim, int(c.embed_dim * c.mlp_ratio), c.vilt_depth, c.heads) == (dim, mlp, depth, heads)
        assert (c.clip_dim, c.clip_mlp_dim, c.clip_depth, c.patch_size, c.chunk_size) == (192, 768, 4, 4, 7)
        assert (c.num_frames, c.img_size, c.shift_frames, c.temporal_depth) == (24, 224, 1, 1)


def test_config_round_trips_through_dataclasses():
    c = SCTConfig(heads=[4, 6, 8, 8])
    assert c.heads == (4, 6, 8, 8)
    assert dataclasses.replace(c, embed_dim=48).embed_dim == 48


@pytest.mark.parametrize("kind", TEMPORAL_KINDS)
def test_every_temporal_kind_sees_the_clip(kind):
    """The frame [CLS] must summarise the image under every temporal kind: different clips, different logits."""
    torch.manual_seed(0)
    model = _tiny(temporal_kind=kind).eval()
    a, b = torch.randn(2, 1, 3, 4, 32, 32).unbind(0)
    assert not torch.allclose(model(a), model(b))


@pytest.mark.parametrize("model_name", ["sct_tiny", "xvit_b16"])
def test_weight_init_scales_with_width_or_is_timms(model_name):
    small = dict(num_classes=5, num_frames=4, img_size=32) if model_name == "sct_tiny" else dict(
        num_classes=5, num_frames=4, img_size=32, patch_size=8, dim=64, depth=1, heads=4)
    xavier = sct.create_model(model_name, **small, weight_init="xavier")
    timm = sct.create_model(model_name, **small, weight_init="trunc_normal")
    for xv, tn in zip(xavier.modules(), timm.modules()):
        if isinstance(xv, torch.nn.Linear) and xv.weight.numel() > 1000:
            fan_out, fan_in = xv.weight.shape
            assert xv.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.1)
            assert tn.weight.std().item() == pytest.approx(0.02, rel=0.15)
    with pytest.raises(ConfigError, match="weight_init"):
        sct.create_model(model_name, **small, weight_init="kaiming")


def test_sct_defaults_to_xavier_init():
    assert SCTConfig().weight_init == "xavier"
