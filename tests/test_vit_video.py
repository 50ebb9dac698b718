"""The ViT frame-encoder baselines of SCT Tables 1/4 (ViT -> shifted MSA -> clip encoder)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sct
from sct.analysis.flops import count_params, sdpa_flop_mapping
from sct.errors import ConfigError
from sct.models.weights import load_image_weights, save_weights

TINY = dict(img_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_ratio=2.0, temporal_heads=4, temporal_dim_head=8,
            clip_dim=16, clip_mlp_dim=32, clip_heads=2, clip_depth=2)


def tiny(frames: int = 4, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return sct.create_model("vit_b16_sct", num_classes=5, num_frames=frames, **{**TINY, **overrides}).eval()


def clip(batch: int = 2, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name,grid,dim,depth", [("vit_b16_sct", 14, 768, 12), ("vit_b12_sct", 18, 768, 12),
                                                 ("vit_b8_sct", 28, 768, 12), ("vit_l16_sct", 14, 1024, 24)])
def test_table4_variants_have_the_papers_token_grids(name, grid, dim, depth):
    with torch.device("meta"):
        model = sct.create_model(name)
    assert model.config.num_frames == 24 and model.config.img_size == 224
    assert model.encoder.pos_embed.shape == (1, 1 + grid * grid, dim)
    assert len(model.encoder.blocks) == depth
    assert model.clip_encoder.frame_embed.in_features == dim and model.clip_encoder.frame_embed.out_features == 192


def test_shapes_and_per_frame_features():
    model = tiny()
    x = clip()
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 4, 32)


def test_shifted_msa_takes_keys_from_the_previous_frame():
    """Frame t's features depend on frames t and t-1 only (cyclic: frame 0 on the last one)."""
    model = tiny(frames=5)
    x = clip(batch=1, frames=5).requires_grad_(True)
    model.forward_features(x)[:, 2].sum().backward()
    reach = x.grad.abs().sum(dim=(0, 1, 3, 4))
    assert torch.all(reach[1:3] > 0) and reach[0] == 0 and torch.all(reach[3:] == 0)


def test_no_shift_keeps_frames_independent_until_the_clip_encoder():
    model = tiny(shift_frames=0)
    x = clip()
    with torch.no_grad():
        together = model.forward_features(x)
        alone = torch.cat([model.forward_features(x[:, :, t:t + 1]) for t in range(4)], dim=1)
    assert torch.allclose(together, alone, atol=1e-5)


def test_no_leakage_between_clips():
    model = tiny()
    x = clip(batch=3)
    y = x.clone()
    y[1] = torch.randn_like(y[1])
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[[0, 2]], b[[0, 2]], atol=1e-6) and not torch.allclose(a[1], b[1], atol=1e-4)


def test_image_weights_land_in_the_frame_encoder(tmp_path):
    donor = tiny()
    path = save_weights({k.removeprefix("encoder."): v for k, v in donor.state_dict().items()
                         if k.startswith("encoder.") and k != "encoder.temporal_embed"}, tmp_path / "vit.safetensors")
    model = tiny()
    for p in model.encoder.parameters():
        torch.nn.init.zeros_(p)
    report = load_image_weights(model, path)
    assert report.missing == [] and report.new == ["encoder.temporal_embed"]
    assert torch.equal(model.encoder.blocks[1].mlp.fc2.weight, donor.encoder.blocks[1].mlp.fc2.weight)
    assert count_params(model) == count_params(donor)


def test_bad_temporal_kind_names_the_option():
    with pytest.raises(ConfigError, match="temporal_kind"):
        tiny(temporal_kind="diagonal")


def paper_size_counts(name: str, frames: int) -> tuple[int, int, int]:
    """(params, MACs, ViT-encoder MACs without the attention matmuls) at 224, counted on the meta device."""
    with torch.device("meta"):
        model = sct.create_model(name, num_frames=frames).eval()
        x = torch.empty(1, 3, frames, 224, 224)
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=sdpa_flop_mapping())
    with counter, torch.no_grad():
        model(x)
    encoder = next(ops for module, ops in counter.get_flop_counts().items() if module.endswith(".encoder"))
    linear = sum(v for op, v in encoder.items() if "bmm" not in str(op) and "scaled_dot" not in str(op))
    return count_params(model), counter.get_total_flops() // 2, linear // 2


@pytest.mark.parametrize("name,frames,params_m,gmacs,which", [
    ("xvit_b16", 8, None, 425 / 3, "total"),  # X-ViT: 425 GFLOPs for 1x3 views
    ("timesformer_b16", 8, 121.4, 590 / 3, "total"),  # TimeSformer paper: 121.4M, 0.59 TFLOPs for 3 views
    ("timesformer_b16", 96, 121.4, 2380, "total"),  # SCT Table 6 (TimeSformer-L): 2.38 TFLOPs per view
    ("vit_b16_sct", 24, None, 405.06, "encoder"),  # SCT Table 4 (see docs/benchmarks.md on its convention)
    ("vit_b12_sct", 24, None, 665.78, "encoder"),
    ("vit_b8_sct", 24, None, 1603.67, "encoder"),
])
def test_paper_size_models_match_the_papers_counts(name, frames, params_m, gmacs, which):
    params, total, encoder_linear = paper_size_counts(name, frames)
    got = (total if which == "total" else encoder_linear) / 1e9
    assert abs(got - gmacs) / gmacs < 0.01, got
    if params_m is not None:
        assert abs(params / 1e6 - params_m) / params_m < 0.005
