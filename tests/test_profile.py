"""`sct profile`: params and MACs per model and per module, FLOPs x views, HF peers."""

import dataclasses
import json

import pytest
import torch
from einops import rearrange

from sct.analysis.flops import parse_views, profile_model
from sct.analysis.peers import build_model, input_shape
from sct.cli import main as cli_main
from sct.errors import ConfigError
from sct.models.registry import register


@dataclasses.dataclass
class _ProfileToyConfig:
    num_classes: int = 5
    num_frames: int = 2
    img_size: int = 4


class _ProfileToy(torch.nn.Module):
    """Per-pixel Linear(3, 8), mean, Linear(8, classes): MACs = T*H*W*3*8 + 8*classes."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = torch.nn.Linear(3, 8)
        self.head = torch.nn.Linear(8, config.num_classes)

    def forward(self, x):
        return self.head(self.embed(rearrange(x, "b c t h w -> b (t h w) c")).mean(1))


register("_profile_toy", _ProfileToy, _ProfileToyConfig())

_TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def test_profile_counts_macs_per_module_and_per_view():
    model = build_model("_profile_toy", num_classes=5, num_frames=2, img_size=4)
    p = profile_model(model, "_profile_toy", views=(4, 3))
    embed, head = 2 * 4 * 4 * 3 * 8, 8 * 5
    assert p["macs"] == embed + head
    assert {m["module"]: m["macs"] for m in p["modules"]} == {"embed": embed, "head": head}
    assert p["params"] == (3 * 8 + 8) + (8 * 5 + 5)
    assert p["macs_x_views"] == 12 * (embed + head)


def test_parse_views_accepts_txs_and_names_bad_input():
    assert parse_views("4x3") == (4, 3)
    with pytest.raises(ConfigError, match="--views"):
        parse_views("4-3")
    with pytest.raises(ConfigError, match="--views"):
        parse_views("0x3")


def test_cli_profile_json_and_markdown(capsys):
    assert cli_main(["profile", "_profile_toy", "--frames", "3", "--size", "2", "--views", "2x1", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)
    assert (p["frames"], p["size"], p["views"]) == (3, 2, [2, 1])
    assert p["macs"] == 3 * 2 * 2 * 3 * 8 + 8 * 400
    assert cli_main(["profile", "_profile_toy"]) == 0
    out = capsys.readouterr().out
    assert "TFLOPs x views" in out and "### _profile_toy per module" in out and "| embed |" in out


def test_cli_profile_unknown_model_is_a_user_error(capsys):
    assert cli_main(["profile", "no_such_model"]) == 1
    assert "no_such_model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hf:timesformer", "hf:videomae", "hf:vivit"])
def test_hf_peers_build_run_and_profile(name):
    pytest.importorskip("transformers")
    fields = dict(_TINY_VIT, patch_size=8)
    if name == "hf:vivit":
        fields = dict(_TINY_VIT, tubelet_size=[2, 8, 8])
    model = build_model(name, num_classes=3, num_frames=4, img_size=16, **fields)
    assert input_shape(model) == (4, 16)
    assert model(torch.randn(2, 3, 4, 16, 16)).shape == (2, 3)
    p = profile_model(model, name)
    assert p["macs"] > 0
    assert sum(m["macs"] for m in p["modules"]) == p["macs"]


def test_unknown_hf_peer_lists_known_ones():
    with pytest.raises(ConfigError, match="hf:timesformer"):
        build_model("hf:nope")
