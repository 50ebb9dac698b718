"""Image models from SCT's modules, and the hand-off of their weights (and of video weights) to video models."""

from __future__ import annotations

import pytest
import torch

import sct
from sct.errors import CheckpointError, ConfigError
from sct.models.weights import load_pretrained, save_weights

SMALL_VIT = {"img_size": 32, "patch_size": 8, "dim": 32, "depth": 1, "heads": 4, "mlp_ratio": 2.0}


def image(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", ["sct_tiny_image", "sct_s_image", "sct_m_image", "sct_l_image"])
def test_image_models_classify_images_with_the_video_models_parameter_names(name):
    model = sct.create_model(name, num_classes=7, img_size=32).eval()
    video = sct.create_model(name.removesuffix("_image"), num_classes=7, img_size=32)
    with torch.no_grad():
        assert model(image(32)).shape == (2, 7)
        assert model.forward_features(image(32)).shape == (2, model.num_features)
    frame_pathway = {k for k in video.state_dict() if not k.startswith("clip_encoder.")}
    assert set(model.state_dict()) == frame_pathway | {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_image_model_refuses_frames():
    with pytest.raises(ConfigError, match="num_frames"):
        sct.create_model("sct_tiny_image", num_frames=4)


@pytest.mark.parametrize("name, size", [("sct_tiny", 64), ("sct_s", 56)])
def test_video_model_from_image_weights_gives_the_image_feature_for_every_frame(tmp_path, name, size):
    torch.manual_seed(0)
    img_model = sct.create_model(f"{name}_image", num_classes=11, img_size=size).eval()
    path = save_weights(img_model, tmp_path / "image.safetensors")
    frames = 4
    video = sct.create_model(name, num_classes=5, num_frames=frames, img_size=size, pretrained=str(path)).eval()
    x = image(size)
    clip = x[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()
    with torch.no_grad():
        want = img_model.forward_features(x)
        got = video.forward_features(clip)
    assert got.shape == (2, frames, want.shape[-1])
    for t in range(frames):
        assert torch.allclose(got[:, t], want, atol=1e-5, rtol=1e-5), (got[:, t] - want).abs().max()
    report = video.load_report
    assert report.new and all(k.startswith("clip_encoder.") for k in report.new)
    assert sorted(report.unexpected) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert len(report.loaded) == len(img_model.state_dict()) - 4


def test_image_weights_of_another_width_are_refused_naming_the_file(tmp_path):
    path = save_weights(sct.create_model("sct_tiny_image", embed_dim=48), tmp_path / "wide.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatch") as err:
        sct.create_model("sct_tiny", pretrained=str(path))
    assert str(path) in str(err.value)


def test_image_to_image_fine_tune_drops_the_classifier(tmp_path):
    path = save_weights(sct.create_model("sct_tiny_image", num_classes=21), tmp_path / "in21k.safetensors")
    model = sct.create_model("sct_tiny_image", num_classes=10, pretrained=str(path))
    assert model.load_report.new == ["head.bias", "head.weight"]
    assert any("another class list" in note for note in model.load_report.notes)


# name, overrides: one small model of every family
FAMILIES = [
    ("sct_tiny", {"img_size": 32}),
    ("xvit_b16", SMALL_VIT),
    ("tsm_vit_b16", SMALL_VIT),
    ("timesformer_b16", SMALL_VIT),
    ("vit_b16_frames", SMALL_VIT),
    ("vit_b16_sct", {**SMALL_VIT, "clip_dim": 16, "clip_mlp_dim": 32, "clip_heads": 2, "clip_depth": 1,
                     "temporal_heads": 2, "temporal_dim_head": 8}),
]


@pytest.mark.parametrize("name, overrides", FAMILIES)
def test_video_checkpoint_to_another_class_list_and_frame_count(tmp_path, name, overrides):
    torch.manual_seed(0)
    source = sct.create_model(name, num_classes=5, num_frames=4, **overrides)
    path = save_weights(source, tmp_path / "k400.safetensors")
    torch.manual_seed(1)
    target = sct.create_model(name, num_classes=7, num_frames=8, **overrides)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained(target, path)
    heads = sorted(k for k in report.new)
    assert heads and all(fresh[k].shape[0] == 7 for k in heads if k.endswith("bias"))
    assert any("another class list" in note for note in report.notes)
    assert any("4 -> 8 frames" in note for note in report.notes)
    loaded = target.state_dict()
    for key in heads:  # the classifier keeps its new initialisation
        assert torch.equal(loaded[key], fresh[key])
    for key, value in source.state_dict().items():
        if key not in heads and loaded[key].shape == value.shape:
            assert torch.equal(loaded[key], value), key
    with torch.no_grad():
        assert target.eval()(torch.randn(1, 3, 8, 32, 32)).shape == (1, 7)


def test_temporal_embedding_resampling_keeps_the_clip_token_and_the_ends():
    from sct.models.transfer import resample_time

    table = torch.arange(5.0).reshape(1, 5, 1)  # [CLS], then frames 1..4
    out = resample_time(table, 8, has_cls=True)
    assert out.shape == (1, 9, 1) and out[0, 0, 0] == 0
    assert out[0, 1, 0] == 1 and out[0, -1, 0] == 4
    assert torch.all(out[0, 2:, 0] >= out[0, 1:-1, 0])
