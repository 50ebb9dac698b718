"""Weight import: image ViTs (HF / timm / npz), TimeSformer from Hugging Face, own checkpoints.

Every source model is a tiny randomly initialised Hugging Face model built and saved here; nothing is
downloaded.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import sct
from sct.errors import CheckpointError
from sct.models.weights import load_image_weights, read_state_dict, resize_patch_kernel, save_weights

transformers = pytest.importorskip("transformers")

DIM, DEPTH, HEADS, MLP = 32, 2, 4, 64


def hf_vit(img: int = 32, patch: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=img, patch_size=patch, hidden_size=DIM, num_hidden_layers=DEPTH,
                                 num_attention_heads=HEADS, intermediate_size=MLP, layer_norm_eps=1e-6)
    return transformers.ViTModel(cfg).eval()


def video_model(name: str = "xvit_b16", frames: int = 3, img: int = 32, patch: int = 8, **overrides):
    torch.manual_seed(1)
    return sct.create_model(name, num_classes=5, num_frames=frames, img_size=img, patch_size=patch, dim=DIM,
                            depth=DEPTH, heads=HEADS, mlp_ratio=MLP / DIM, **overrides).eval()


def per_frame_cls(hf, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The HF image model's CLS feature of every frame: ``(B, 3, T, H, W) -> (B, T, C)``."""
    with torch.no_grad():
        return torch.stack([hf(pixel_values=x[:, :, t], **kwargs).last_hidden_state[:, 0]
                            for t in range(x.shape[2])], dim=1)


def features(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(x)


def clip(frames: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(7))


HUB_NAMES = [  # transformers 5 names -> the names in the hub's ViT files (encoder.layer.i.*)
    (r"^layers\.(\d+)\.attention\.([qkv])_proj\.", lambda m: f"encoder.layer.{m[1]}.attention.attention."
                                                            f"{dict(q='query', k='key', v='value')[m[2]]}."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
]

TIMM_NAMES = [  # transformers 5 ViTModel names -> timm VisionTransformer names (q/k/v fused below)
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^layernorm\.", "norm."),
]


def rename(state: dict, rules) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                key = new
                break
        out[key] = value
    return out


def timm_state(hf) -> dict:
    sd = hf.state_dict()
    kept = {k: v for k, v in sd.items() if ("_proj" not in k or "o_proj" in k) and not k.startswith("pooler")}
    out = rename(kept, TIMM_NAMES)
    for i in range(DEPTH):
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([sd[f"layers.{i}.attention.{n}_proj.{kind}"] for n in "qkv"])
    out["head.weight"], out["head.bias"] = torch.randn(10, DIM), torch.zeros(10)
    return out


def npz_arrays(hf, patch: int = 8) -> dict[str, np.ndarray]:
    """big_vision / vit_jax names and layouts (HWIO conv, (in, out) dense, (C, H, d) attention)."""
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    d = DIM // HEADS
    w = {
        "embedding/kernel": sd["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["embeddings.patch_embeddings.projection.bias"],
        "cls": sd["embeddings.cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["embeddings.position_embeddings"],
        "Transformer/encoder_norm/scale": sd["layernorm.weight"],
        "Transformer/encoder_norm/bias": sd["layernorm.bias"],
        "head/kernel": np.zeros((DIM, 10), np.float32),
    }
    for i in range(DEPTH):
        p, b = f"Transformer/encoderblock_{i}/", f"layers.{i}."
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "layernorm_before.weight"], \
            sd[b + "layernorm_before.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "layernorm_after.weight"], \
            sd[b + "layernorm_after.bias"]
        for n, jax in (("q", "query"), ("k", "key"), ("v", "value")):
            w[p + f"MultiHeadDotProductAttention_1/{jax}/kernel"] = sd[b + f"attention.{n}_proj.weight"].T.reshape(
                DIM, HEADS, d)
            w[p + f"MultiHeadDotProductAttention_1/{jax}/bias"] = sd[b + f"attention.{n}_proj.bias"].reshape(HEADS, d)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attention.o_proj.weight"].T.reshape(HEADS, d, DIM)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attention.o_proj.bias"]
        for j, fc in ((0, "fc1"), (1, "fc2")):
            w[p + f"MlpBlock_3/Dense_{j}/kernel"] = sd[b + f"mlp.{fc}.weight"].T
            w[p + f"MlpBlock_3/Dense_{j}/bias"] = sd[b + f"mlp.{fc}.bias"]
    return w


# --- image ViT import: same CLS features as the image model on every frame (spec checks 1 and 8) -------
def test_hf_vit_safetensors_gives_image_cls_features_per_frame(tmp_path):
    hf = hf_vit()
    path = save_weights(hf.state_dict(), tmp_path / "vit.safetensors")
    model = video_model(n_div=0)
    report = load_image_weights(model, path)
    x = clip()
    assert torch.allclose(features(model, x), per_frame_cls(hf, x), atol=1e-5)
    assert report.missing == [] and report.new == ["encoder.temporal_embed"]
    assert sorted(report.unexpected) == ["pooler.dense.bias", "pooler.dense.weight"]


def test_hf_hub_names_in_bin_file_with_classification_prefix(tmp_path):
    hf = hf_vit()
    state = {"vit." + k: v for k, v in rename(hf.state_dict(), HUB_NAMES).items()}
    assert "vit.encoder.layer.0.attention.attention.query.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = video_model("tsm_vit_b16", n_div=0)
    load_image_weights(model, tmp_path / "pytorch_model.bin")
    x = clip()
    assert torch.allclose(features(model, x), per_frame_cls(hf, x), atol=1e-5)


def test_timm_keys_in_wrapped_pth(tmp_path):
    hf = hf_vit()
    wrapped = {"model": {"module." + k: v for k, v in timm_state(hf).items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "vit.pth")
    model = video_model(n_div=0)
    report = load_image_weights(model, tmp_path / "vit.pth")
    assert torch.allclose(features(model, clip()), per_frame_cls(hf, clip()), atol=1e-5)
    assert report.unexpected == ["head.bias", "head.weight"]  # the image classifier is never loaded


def test_timm_npz(tmp_path):
    hf = hf_vit()
    np.savez(tmp_path / "vit.npz", **npz_arrays(hf))
    model = video_model(n_div=0)
    report = load_image_weights(model, tmp_path / "vit.npz")
    assert torch.allclose(features(model, clip()), per_frame_cls(hf, clip()), atol=1e-5)
    assert report.unexpected == ["head/kernel"]


def test_position_embedding_resized_bicubically_on_the_grid(tmp_path):
    hf = hf_vit(img=32)  # 4 x 4 grid
    path = save_weights(hf.state_dict(), tmp_path / "vit.safetensors")
    model = video_model(img=48, n_div=0)  # 6 x 6 grid
    report = load_image_weights(model, path)
    pos = model.encoder.pos_embed.detach()
    assert pos.shape == (1, 1 + 36, DIM)
    assert torch.equal(pos[:, 0], hf.embeddings.position_embeddings[:, 0].detach())  # CLS entry kept
    grid = hf.embeddings.position_embeddings[:, 1:].detach().reshape(1, 4, 4, DIM).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, DIM), atol=1e-6)
    assert any("pos_embed resized" in n for n in report.notes)
    x = clip(size=48)
    assert torch.allclose(features(model, x), per_frame_cls(hf, x, interpolate_pos_encoding=True), atol=1e-5)


def test_patch_kernel_resampling_answers_like_the_resized_patch():
    torch.manual_seed(0)
    weight = torch.randn(DIM, 3, 8, 8)
    small = resize_patch_kernel(weight, 4)
    patch = torch.randn(5, 3, 4, 4)
    upsampled = F.interpolate(patch, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(F.conv2d(patch, small), F.conv2d(upsampled, weight), atol=1e-4)


def test_loading_into_a_smaller_patch_model_reports_the_resampling(tmp_path):
    path = save_weights(hf_vit().state_dict(), tmp_path / "vit.safetensors")
    model = video_model(patch=4)
    report = load_image_weights(model, path)
    assert model.encoder.patch_embed.proj.weight.shape[-1] == 4
    assert any("patch kernel resampled 8x8 -> 4x4" in n for n in report.notes)


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    state = timm_state(hf_vit())
    del state["blocks.1.mlp.fc2.weight"]
    state["blocks.1.extra_scale"] = torch.ones(3)
    save_file(state, str(tmp_path / "partial.safetensors"))
    model = video_model()
    report = load_image_weights(model, tmp_path / "partial.safetensors")
    assert report.missing == ["encoder.blocks.1.mlp.fc2.weight"]
    assert "blocks.1.extra_scale" in report.unexpected
    assert "missing (left at init): 1: encoder.blocks.1.mlp.fc2.weight" in str(report)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.weight"):
        load_image_weights(model, tmp_path / "partial.safetensors", strict=True)


def test_image_weights_seed_timesformer_temporal_attention(tmp_path):
    hf = hf_vit()
    model = video_model("timesformer_b16", pretrained=str(save_weights(hf.state_dict(), tmp_path / "v.safetensors")))
    blocks = model.encoder.blocks
    assert torch.equal(blocks[0].attn.temporal_attn.qkv.weight, blocks[0].attn.attn.qkv.weight)
    x = clip()
    still = x[:, :, :1].expand_as(x)  # zero temporal_fc: a still clip gives the image model's CLS
    assert torch.allclose(features(model, still), per_frame_cls(hf, still), atol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda p: p.with_suffix(".safetensors"), "not found"),
    (lambda p: (p.with_suffix(".h5").write_bytes(b"x"), p.with_suffix(".h5"))[1], "unknown weights format"),
    (lambda p: (p.with_suffix(".pth").write_bytes(b"not a zip"), p.with_suffix(".pth"))[1], "cannot read"),
    (lambda p: (save_file({"fc.weight": torch.ones(2, 2)}, str(p.with_suffix(".safetensors"))),
                p.with_suffix(".safetensors"))[1], "not an image ViT"),
])
def test_bad_files_raise_checkpoint_error_naming_the_file(tmp_path, make, match):
    path = make(tmp_path / "weights")
    with pytest.raises(CheckpointError, match=match) as err:
        load_image_weights(video_model(), path)
    assert str(path) in str(err.value)


class NotATensor:  # a pickled class: refused by torch.load(weights_only=True)
    pass


def test_torch_files_are_read_with_weights_only(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}, "extra": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(tmp_path / "code.pth")


def test_shape_mismatch_names_the_tensor(tmp_path):
    path = save_weights(hf_vit().state_dict(), tmp_path / "vit.safetensors")
    torch.manual_seed(0)
    wide = sct.create_model("xvit_b16", num_frames=2, img_size=32, patch_size=8, dim=64, depth=2, heads=4)
    with pytest.raises(CheckpointError, match=r"cls_token: checkpoint \(1, 1, 32\) vs model \(1, 1, 64\)"):
        load_image_weights(wide, path)


# --- TimeSformer from Hugging Face: same logits ------------------------------------------------------
def hf_timesformer(frames: int = 4, labels: int = 5):
    torch.manual_seed(0)
    cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=frames, hidden_size=DIM,
                                         num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP,
                                         num_labels=labels)
    model = transformers.TimesformerForVideoClassification(cfg).eval()
    with torch.no_grad():  # HF initialises the time embedding and temporal_dense to zero: make them matter
        model.timesformer.embeddings.time_embeddings.normal_(std=0.5)
        for layer in model.timesformer.encoder.layer:
            layer.temporal_dense.weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_hf_timesformer_import_gives_the_same_logits(tmp_path, suffix):
    hf = hf_timesformer()
    path = tmp_path / f"timesformer{suffix}"
    save_weights(hf.state_dict(), path) if suffix == ".safetensors" else torch.save(hf.state_dict(), path)
    model = video_model("timesformer_b16", frames=4, pretrained=str(path))
    x = clip(frames=4)
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2)).logits  # HF takes (B, T, 3, H, W)
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert expected.abs().max() > 1e-2


def test_timesformer_key_map_beside_the_model_covers_every_parameter():
    """The map lives in the model's module (``vit_video.TIMESFORMER_KEYS``); the loader only applies it."""
    from sct.models.vit_video import TIMESFORMER_KEYS

    def ours(key: str) -> str:
        return next((re.sub(p, r, key) for p, r in TIMESFORMER_KEYS if re.search(p, key)), key)

    mapped = {ours(k) for k in hf_timesformer().state_dict()}
    assert mapped == set(video_model("timesformer_b16", frames=4).state_dict())


def test_timesformer_with_other_class_count_keeps_backbone_and_reports_head(tmp_path):
    path = save_weights(hf_timesformer(labels=7).state_dict(), tmp_path / "t.safetensors")
    model = video_model("timesformer_b16", frames=4)
    report = sct.models.weights.load_timesformer_weights(model, path)
    assert "classifier.weight" in report.unexpected and report.missing == ["head.fc.bias", "head.fc.weight"]
    assert any("7 classes" in n for n in report.notes)


# --- own checkpoints ----------------------------------------------------------------------------------
def test_create_model_pretrained_with_own_safetensors_round_trip(tmp_path):
    model = video_model()
    path = save_weights(model, tmp_path / "xvit.safetensors")
    again = video_model(pretrained=str(path))
    with torch.no_grad():
        assert torch.equal(again(clip()), model(clip()))
    with pytest.raises(CheckpointError, match="does not fit"):
        video_model(head="average", pretrained=str(path))


FB_NAMES = [  # Hugging Face TimeSformer names -> facebookresearch/TimeSformer names
    (r"^timesformer\.embeddings\.cls_token$", "model.cls_token"),
    (r"^timesformer\.embeddings\.position_embeddings$", "model.pos_embed"),
    (r"^timesformer\.embeddings\.time_embeddings$", "model.time_embed"),
    (r"^timesformer\.embeddings\.patch_embeddings\.projection\.", "model.patch_embed.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_layernorm\.", r"model.blocks.\1.temporal_norm1."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.attention\.", r"model.blocks.\1.temporal_attn."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.output\.dense\.",
     r"model.blocks.\1.temporal_attn.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.temporal_dense\.", r"model.blocks.\1.temporal_fc."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.layernorm_before\.", r"model.blocks.\1.norm1."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.attention\.attention\.", r"model.blocks.\1.attn."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"model.blocks.\1.attn.proj."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.layernorm_after\.", r"model.blocks.\1.norm2."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"model.blocks.\1.mlp.fc1."),
    (r"^timesformer\.encoder\.layer\.(\d+)\.output\.dense\.", r"model.blocks.\1.mlp.fc2."),
    (r"^timesformer\.layernorm\.", "model.norm."),
    (r"^classifier\.", "model.head."),
]


def test_original_timesformer_names_with_longer_time_embedding(tmp_path):
    hf = hf_timesformer()
    state = rename(hf.state_dict(), FB_NAMES)
    assert "model.blocks.0.temporal_attn.qkv.weight" in state and "model.time_embed" in state
    path = tmp_path / "TimeSformer_divST_8x32_224_K400.pth"
    torch.save({"model": state}, path)
    model = video_model("timesformer_b16", frames=4, pretrained=str(path))
    x = clip(frames=4)
    with torch.no_grad():
        assert torch.allclose(model(x), hf(pixel_values=x.transpose(1, 2)).logits, atol=1e-4)
    longer = video_model("timesformer_b16", frames=8)
    report = sct.models.weights.load_timesformer_weights(longer, path)
    assert report.missing == [] and any("4 -> 8 frames" in n for n in report.notes)


def test_public_xvit_temporal_embedding_name(tmp_path):
    state = timm_state(hf_vit())
    state["temp_embed"] = torch.randn(1, 3, 1, DIM)
    path = save_weights(state, tmp_path / "xvit.safetensors")
    model = video_model()
    report = load_image_weights(model, path)
    assert torch.equal(model.encoder.temporal_embed, state["temp_embed"]) and report.new == []


def test_deit_distillation_entry_is_dropped_and_odd_grids_are_refused(tmp_path):
    hf = hf_vit()
    state = timm_state(hf)
    pos = state["pos_embed"]
    state["pos_embed"] = torch.cat([pos[:, :1], torch.randn(1, 1, DIM), pos[:, 1:]], dim=1)
    state["dist_token"] = torch.randn(1, 1, DIM)
    model = video_model(n_div=0)
    report = load_image_weights(model, save_weights(state, tmp_path / "deit.safetensors"))
    assert torch.allclose(features(model, clip()), per_frame_cls(hf, clip()), atol=1e-5)
    assert "dist_token" in report.unexpected and any("distillation" in n for n in report.notes)
    del state["dist_token"]  # now 1 + 17 entries: no square grid
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_image_weights(model, save_weights(state, tmp_path / "odd.safetensors"))


def test_non_vit_model_refuses_foreign_weights_naming_the_file(tmp_path):
    path = save_weights(video_model(), tmp_path / "xvit.safetensors")
    with pytest.raises(CheckpointError, match="not a checkpoint of this SCT") as err:
        sct.create_model("sct_tiny", pretrained=str(path))
    assert str(path) in str(err.value)
