"""`sct visualize`: rollout wiring through real models (known answers), PNG/GIF output from a real mp4."""

import numpy as np
import pytest
import torch
from PIL import Image

import sct
from sct.analysis.visualize import attention_maps, stored_attention
from sct.cli import main as cli_main
from sct.config import dump_config, load_config
from sct.data.synthetic import write_video
from sct.engine.checkpoint import model_metadata, save_weights
from sct.errors import VideoDecodeError

_TINY_VIT = {"dim": 32, "depth": 2, "heads": 2, "patch_size": 8}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A real H.264 mp4: a white square moving right over 8 frames."""
    frames = np.zeros((8, 48, 48, 3), np.uint8)
    for t in range(8):
        frames[t, 10:22, 2 + 3 * t:14 + 3 * t] = 255
    path = tmp_path_factory.mktemp("video") / "box.mp4"
    write_video(path, frames)
    return path


def _tiny_sct(**overrides):
    torch.manual_seed(0)
    return sct.create_model("sct_tiny", num_classes=3, num_frames=4, img_size=32, **overrides).eval()


def _identity_everywhere(model):
    """Replace every stored attention map by the identity (same shape): relevance then stays put."""
    for m in model.modules():
        weights = getattr(m, "last_attention", None)
        if isinstance(weights, torch.Tensor):
            eye = torch.eye(weights.shape[-1], dtype=weights.dtype)
            m.last_attention = eye.expand_as(weights).clone()


@pytest.mark.parametrize(("residual", "reading", "expected_frames"), [
    (False, "keys", {0: 1 / 16}),
    (False, "values", {2: 1 / 16}),
    (True, "keys", {0: 1 / 64, 1: 1 / 64}),
    (True, "values", {2: 1 / 32}),
])
def test_sct_rollout_follows_frame_weights_shift_and_pooling(residual, reading, expected_frames):
    """Known answer: clip [CLS] reads frame 2 only; frame 2's [CLS] reads patch (0, 1) of the last 2x2 grid.

    Every other map is the identity. Without the shifted layers' residual (Eq. 7 literally) the
    "keys" reading moves relevance one frame back per shifted layer (2 -> 1 -> 0) and "values" keeps
    it on frame 2. With the residual, half of each step stays: patch (0, 1) gets 1/2 in the last
    block, and the first block's shifted layer splits it between frames 1 and 0 ("keys"). The [CLS]
    share is dropped where the [CLS] starts (a learnt token). Two 2x2 poolings spread patch (0, 1)
    of the 2x2 grid over the top-right quarter of the 8x8 patch grid, 1/16 of it to each cell.
    """
    model = _tiny_sct(temporal_residual=residual)
    with stored_attention(model):
        model(torch.randn(1, 3, 4, 32, 32))
    _identity_everywhere(model)
    clip_attn = model.clip_encoder.layers[0].attn.last_attention  # (1, H, T+1, T+1)
    clip_attn[0, :, 0] = 0.0
    clip_attn[0, :, 0, 3] = 1.0  # token 3 = frame 2
    shifted = model.blocks[-1].temporal[0].attn.last_attention  # (1, T, H, 1 + 4, 1 + 4)
    shifted[0, 2, :, 0] = 0.0
    shifted[0, 2, :, 0, 2] = 1.0  # token 2 = patch (0, 1) of the 2x2 grid
    relevance, weights = model.relevance(4, (32, 32), reading)
    torch.testing.assert_close(weights, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    expected = torch.zeros(4, 8, 8, dtype=torch.float64)
    for frame, value in expected_frames.items():
        expected[frame, :4, 4:] = value
    torch.testing.assert_close(relevance, expected)


@pytest.mark.parametrize("overrides", [
    {},
    {"temporal_kind": "space_time_concat"},
    {"global_kind": "dense", "local_kind": "conv"},
    {"clip_depth": 0},
])
def test_sct_variants_give_clip_normalised_maps(overrides):
    model = _tiny_sct(**overrides)
    maps, weights, logits = attention_maps(model, torch.randn(3, 4, 32, 32))
    assert maps.shape == (4, 32, 32) and logits.shape == (3,)
    assert maps.min() == 0 and maps.max() == pytest.approx(1.0)
    assert weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "overrides"), [
    ("xvit_b16", {}),
    ("tsm_vit_b16", {}),
    ("timesformer_b16", {}),
    ("vit_b16_frames", {}),
    ("vit_b16_sct", {"temporal_heads": 2, "temporal_dim_head": 16, "clip_dim": 16, "clip_mlp_dim": 32,
                     "clip_depth": 1, "clip_heads": 2}),
])
def test_vit_family_maps(name, overrides):
    torch.manual_seed(0)
    model = sct.create_model(name, num_classes=3, num_frames=4, img_size=32, **_TINY_VIT, **overrides)
    maps, weights, _ = attention_maps(model, torch.randn(3, 4, 32, 32))
    assert maps.shape == (4, 32, 32) and maps.max() == pytest.approx(1.0)
    assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)


def test_xvit_mixing_spreads_relevance_to_neighbour_frames_and_space_attention_does_not():
    """One layer, identity attention except frame 2's CLS row reading patch 1: X-ViT's mixed values bring
    in frames 1 and 3 (1/8 of the channels each); the plain per-frame ViT keeps everything on frame 2."""
    def relevance(name):
        torch.manual_seed(0)
        model = sct.create_model(name, num_classes=3, num_frames=4, img_size=32,
                                 **{**_TINY_VIT, "depth": 1}, head="temporal_attention").eval()
        with stored_attention(model):
            model(torch.randn(1, 3, 4, 32, 32))
        _identity_everywhere(model)
        head = model.head.layer.attn.last_attention
        head[0, :, 0] = 0.0
        head[0, :, 0, 3] = 1.0
        last = model.encoder.blocks[-1].attn.last_attention
        last[0, 2, :, 0] = 0.0
        last[0, 2, :, 0, 1] = 1.0
        return model.relevance(4, (32, 32), "keys")[0]

    mixed, plain = relevance("xvit_b16"), relevance("vit_b16_frames")
    assert plain[2].sum() > 0 and plain[[0, 1, 3]].sum() == 0
    assert mixed[1].sum() > 0 and mixed[3].sum() > 0 and mixed[0].sum() == 0
    torch.testing.assert_close(mixed[1].sum() / mixed[2].sum(), torch.tensor(1 / 6, dtype=torch.float64))


def test_cli_visualize_random_model_writes_png_and_gif(video, tmp_path, capsys):
    assert cli_main(["visualize", str(video), "--model", "sct_tiny", "--frames", "4", "--size", "32",
                     "--out", str(tmp_path), "--gif"]) == 0
    png, gif = tmp_path / "box_attention.png", tmp_path / "box_attention.gif"
    assert Image.open(png).size[0] > 100
    with Image.open(gif) as g:
        assert g.n_frames == 4
    assert "wrote" in capsys.readouterr().out


def test_cli_visualize_from_checkpoint(video, tmp_path):
    cfg = load_config(None, ["model.name=sct_tiny", "data.num_frames=4", "data.crop_size=32"])
    model = _tiny_sct()
    weights = tmp_path / "model.safetensors"
    save_weights(weights, model.state_dict(), model_metadata(model, "sct_tiny", ["a", "b", "c"], dump_config(cfg)))
    assert cli_main(["visualize", str(video), "--checkpoint", str(weights)]) == 0
    assert (tmp_path / "box_attention.png").is_file()


def test_missing_video_is_a_typed_error(tmp_path):
    from sct.analysis.visualize import read_clip
    from sct.data.datasets import DataConfig

    with pytest.raises(VideoDecodeError, match="nope.mp4"):
        read_clip(tmp_path / "nope.mp4", DataConfig(), ["a"])
