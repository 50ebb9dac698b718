"""X-ViT space-time mixing, TSM-ViT, TimeSformer's divided attention and the temporal heads (specs/xvit.md)."""

from __future__ import annotations

import pytest
import torch

import sct
from sct.analysis.flops import count_macs
from sct.errors import ConfigError
from sct.models.attention.divided import DividedSpaceTimeAttention
from sct.models.attention.mixing import SpaceTimeMixingAttention, mix_frames
from sct.models.heads import TemporalAttentionAggregation
from sct.models.temporal_shift import TemporalShift, temporal_shift

TINY = dict(img_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_ratio=2.0)


def tiny(name: str, frames: int = 4, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return sct.create_model(name, num_classes=5, num_frames=frames, **{**TINY, **overrides}).eval()


def clip(batch: int = 2, frames: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(seed))


def frame_index_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """Value t everywhere in frame t (time = dim 1)."""
    t = torch.arange(shape[1], dtype=torch.float32).reshape(1, -1, *([1] * (len(shape) - 2)))
    return t.expand(shape).clone()


# --- check 2: the shift's channel bookkeeping ------------------------------------------------------
def test_shift_moves_first_fold_from_next_frame_second_fold_from_previous():
    frames = 5
    k = frame_index_tensor((1, frames, 3, 16))
    out = temporal_shift(k, fold=2)
    t = torch.arange(frames, dtype=torch.float32)
    future = torch.where(t < frames - 1, t + 1, torch.zeros_like(t))
    past = torch.where(t > 0, t - 1, torch.zeros_like(t))
    assert torch.equal(out[0, :, :, 0:2], future[:, None, None].expand(frames, 3, 2))
    assert torch.equal(out[0, :, :, 2:4], past[:, None, None].expand(frames, 3, 2))
    assert torch.equal(out[..., 4:], k[..., 4:])
    assert torch.equal(TemporalShift(8)(k), out)  # 16 channels / 8 = fold 2


def test_mixing_layouts_global_and_per_head():
    b, frames, heads, n, d = 1, 4, 2, 3, 8
    k = frame_index_tensor((b, frames, heads, n, d))
    t = torch.arange(frames, dtype=torch.float32).reshape(frames, 1, 1)
    nxt, prv = (t + 1) * (t < frames - 1), (t - 1) * (t > 0)
    # global: 16 channels / 4 = 4 -> head 0's d[0:4] from t+1, d[4:8] from t-1, head 1 untouched
    g = mix_frames(k, n_div=4, layout="global")[0]
    assert torch.equal(g[:, 0, :, 0:4], nxt.expand(frames, n, 4))
    assert torch.equal(g[:, 0, :, 4:8], prv.expand(frames, n, 4))
    assert torch.equal(g[:, 1], k[0, :, 1])
    # per head: 8 / 4 = 2 channels each way inside every head
    p = mix_frames(k, n_div=4, layout="per_head")[0]
    for h in range(heads):
        assert torch.equal(p[:, h, :, 0:2], nxt.expand(frames, n, 2))
        assert torch.equal(p[:, h, :, 2:4], prv.expand(frames, n, 2))
        assert torch.equal(p[:, h, :, 4:], k[0, :, h, :, 4:])
    assert torch.equal(mix_frames(k, n_div=0), k)


# --- check 3: Q untouched, K/V mixed, attention within the frame -----------------------------------
def test_mixing_attention_matches_explicit_reference():
    torch.manual_seed(0)
    dim, heads, n_div, frames, n = 16, 2, 4, 4, 5
    attn = SpaceTimeMixingAttention(dim, heads, n_div=n_div).eval()
    x = torch.randn(2, frames, n, dim)
    q, k, v = attn.qkv(x).split(dim, dim=-1)
    fold = dim // n_div

    def mixed(z: torch.Tensor, t: int) -> torch.Tensor:
        nxt = z[:, t + 1, :, :fold] if t + 1 < frames else torch.zeros_like(z[:, t, :, :fold])
        prv = z[:, t - 1, :, fold:2 * fold] if t > 0 else torch.zeros_like(z[:, t, :, :fold])
        return torch.cat([nxt, prv, z[:, t, :, 2 * fold:]], dim=-1)

    outs = []
    for t in range(frames):
        qt, kt, vt = (z.reshape(2, n, heads, -1).transpose(1, 2) for z in (q[:, t], mixed(k, t), mixed(v, t)))
        w = (qt @ kt.transpose(-2, -1) * qt.shape[-1] ** -0.5).softmax(-1)
        outs.append(attn.proj((w @ vt).transpose(1, 2).reshape(2, n, dim)))
    assert torch.allclose(attn(x), torch.stack(outs, dim=1), atol=1e-6)


def test_mixing_attention_keeps_weights_for_rollout():
    attn = SpaceTimeMixingAttention(16, 2, n_div=4)
    attn.store_attention = True
    attn(torch.randn(2, 3, 5, 16))
    assert attn.last_attention.shape == (2, 3, 2, 5, 5)
    assert torch.allclose(attn.last_attention.sum(-1), torch.ones(2, 3, 2, 5))
    attn.summary_token = True
    attn(torch.randn(2, 3, 5, 16))
    assert attn.last_attention.shape == (2, 3, 2, 5, 5 + 3)  # + one summary key per frame


# --- check 1: no shift = the image ViT on every frame ---------------------------------------------
@pytest.mark.parametrize("variant", [dict(temporal="mixing", n_div=0), dict(temporal="tsm", n_div=0)])
def test_no_shift_equals_per_frame_vit(variant):
    video = tiny("xvit_b16", **variant)
    frames = tiny("vit_b16_frames", head="temporal_attention")
    frames.load_state_dict(video.state_dict())
    x = clip()
    with torch.no_grad():
        feats = video.forward_features(x)
        assert torch.allclose(feats, frames.forward_features(x), atol=1e-6)
        # every frame alone gives the same features: nothing crosses frames
        alone = torch.cat([frames.forward_features(x[:, :, t:t + 1]) for t in range(x.shape[2])], dim=1)
    assert torch.allclose(feats, alone, atol=1e-5)
    mixing = tiny("xvit_b16")
    mixing.load_state_dict(video.state_dict())
    with torch.no_grad():
        assert not torch.allclose(mixing.forward_features(x), feats, atol=1e-3)


# --- check 4: no leakage between clips ------------------------------------------------------------
@pytest.mark.parametrize("name,overrides", [("xvit_b16", {}), ("xvit_b16", {"mixing_layout": "per_head"}),
                                            ("xvit_b16", {"head": "summary_token"}), ("tsm_vit_b16", {}),
                                            ("timesformer_b16", {})])
def test_clips_in_a_batch_do_not_leak(name, overrides):
    model = tiny(name, **overrides)
    x = clip(batch=3)
    y = x.clone()
    y[1] = torch.randn_like(y[1])
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-6)
    assert not torch.allclose(a[1], b[1], atol=1e-4)


# --- check 5: receptive field grows by one frame per layer ----------------------------------------
@pytest.mark.parametrize("temporal", ["mixing", "tsm"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_grows_one_frame_per_layer(temporal, depth):
    model = tiny("xvit_b16", frames=8, temporal=temporal, depth=depth)
    x = clip(batch=1, frames=8).requires_grad_(True)
    model.encoder(x)[:, 0].sum().backward()
    reach = x.grad.abs().sum(dim=(0, 1, 3, 4))
    assert torch.all(reach[: depth + 1] > 0), reach
    assert torch.all(reach[depth + 1:] == 0), reach


def test_summary_token_sees_the_whole_clip_in_one_layer():
    model = tiny("xvit_b16", frames=8, depth=1, head="summary_token")
    x = clip(batch=1, frames=8).requires_grad_(True)
    model.encoder(x)[:, 0].sum().backward()
    assert torch.all(x.grad.abs().sum(dim=(0, 1, 3, 4)) > 0)


# --- check 6: FLOPs equal those of the spatial-only model -----------------------------------------
def test_mixing_and_tsm_cost_the_same_macs_as_spatial_vit():
    x = clip(batch=1)
    spatial, _ = count_macs(tiny("xvit_b16", n_div=0), x)
    mixing, _ = count_macs(tiny("xvit_b16"), x)
    per_head, _ = count_macs(tiny("xvit_b16", mixing_layout="per_head"), x)
    tsm, _ = count_macs(tiny("tsm_vit_b16", head="temporal_attention"), x)
    assert spatial > 0 and mixing == spatial == per_head == tsm


# --- check 7: the temporal attention head ignores frame order --------------------------------------
def test_temporal_attention_head_is_permutation_invariant():
    torch.manual_seed(0)
    head = TemporalAttentionAggregation(32, 5, heads=4).eval()
    feats = torch.randn(2, 6, 32)
    out = head(feats)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(head(feats[:, perm]), out, atol=1e-5)
    changed = feats.clone()
    changed[:, 2] = torch.randn(2, 32)
    assert not torch.allclose(head(changed), out, atol=1e-4)
    assert torch.count_nonzero(head.token) == 0  # the learnable token starts at zero


def test_average_head_is_the_frame_mean():
    model = tiny("tsm_vit_b16")
    x = clip()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.allclose(model(x), model.head.fc(feats.mean(1)), atol=1e-6)


# --- TimeSformer ----------------------------------------------------------------------------------
def test_timesformer_keeps_one_clip_cls_and_starts_as_image_vit():
    model = tiny("timesformer_b16")
    blocks = model.encoder.blocks
    assert all(torch.count_nonzero(b.attn.temporal_fc.weight) == 0 for b in blocks)
    x = clip()
    with torch.no_grad():
        feats = model.forward_features(x)
    assert torch.allclose(feats, feats[:, :1].expand_as(feats), atol=1e-6)  # T copies of one CLS
    # zero temporal_fc + zero time embedding + a still clip: each frame sees the image ViT
    still = x[:, :, :1].expand_as(x)
    frames = tiny("vit_b16_frames")
    for ours, theirs in zip(blocks, frames.encoder.blocks):
        theirs.norm1.load_state_dict(ours.attn.norm.state_dict())
        theirs.attn.load_state_dict(ours.attn.attn.state_dict())
        theirs.norm2.load_state_dict(ours.norm2.state_dict())
        theirs.mlp.load_state_dict(ours.mlp.state_dict())
    for name in ("patch_embed", "norm"):
        getattr(frames.encoder, name).load_state_dict(getattr(model.encoder, name).state_dict())
    frames.encoder.cls_token.data.copy_(model.encoder.cls_token)
    frames.encoder.pos_embed.data.copy_(model.encoder.pos_embed)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(still), frames.forward_features(still), atol=1e-5)


def test_divided_attention_stores_both_stages():
    attn = DividedSpaceTimeAttention(16, 2)
    attn.store_attention = True
    attn(torch.randn(2, 3, 5, 16))
    assert attn.last_attention.shape == (2, 3, 2, 5, 5)
    assert attn.last_temporal_attention.shape == (2, 4, 2, 3, 3)


# --- configs ----------------------------------------------------------------------------------------
def test_registered_models_at_paper_size_and_shapes():
    assert {"xvit_b16", "tsm_vit_b16", "timesformer_b16", "vit_b16_frames"} <= set(sct.list_models())
    cfg = sct.models.default_config("xvit_b16")
    got = (cfg.dim, cfg.depth, cfg.heads, cfg.patch_size, cfg.n_div, cfg.mixing_layout)
    assert got == (768, 12, 12, 16, 8, "global")
    model = tiny("xvit_b16", frames=3)
    out = model(clip(frames=3))
    assert out.shape == (2, 5)
    assert model.forward_features(clip(frames=3)).shape == (2, 3, 32)


@pytest.mark.parametrize("overrides,field", [({"head": "max"}, "head"), ({"temporal": "joint"}, "temporal"),
                                             ({"mixing_layout": "rows"}, "layout"), ({"n_div": 64}, "n_div"),
                                             ({"temporal": "tsm", "head": "summary_token"}, "summary_token")])
def test_bad_options_raise_config_error_naming_them(overrides, field):
    with pytest.raises(ConfigError, match=field):
        tiny("xvit_b16", **overrides)
