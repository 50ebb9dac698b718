"""Registry, shared blocks, CLI dispatch and doc-section writing."""

import dataclasses

import pytest
import torch

import sct
from sct.analysis.report import update_doc_section
from sct.cli import main as cli_main
from sct.errors import ConfigError
from sct.models.attention.dense import MultiHeadAttention, attention
from sct.models.blocks import DropPath, PatchEmbed, TransformerLayer
from sct.models.registry import build_config, register


@dataclasses.dataclass
class _ToyConfig:
    num_classes: int = 3
    num_frames: int = 2
    img_size: int = 8


class _Toy(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.head = torch.nn.Linear(3, config.num_classes)

    def forward(self, x):
        return self.head(x.mean(dim=(2, 3, 4)))


register("_toy_for_tests", _Toy, _ToyConfig())


def test_create_model_applies_arguments_and_overrides():
    model = sct.create_model("_toy_for_tests", num_classes=5, num_frames=4)
    assert model.config.num_classes == 5 and model.config.num_frames == 4
    assert model(torch.randn(2, 3, 4, 8, 8)).shape == (2, 5)


def test_unknown_override_names_the_option():
    with pytest.raises(ConfigError, match="not_a_field"):
        build_config("_toy_for_tests", not_a_field=1)


def test_unknown_model_lists_registered_names():
    with pytest.raises(ConfigError, match="_toy_for_tests"):
        sct.create_model("no_such_model")


def test_dense_attention_weights_match_sdpa():
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    fused, _ = attention(q, k, v)
    explicit, weights = attention(q, k, v, return_weights=True)
    torch.testing.assert_close(fused, explicit)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))


def test_transformer_layer_keeps_shape_and_drop_path_is_identity_in_eval():
    layer = TransformerLayer(16, MultiHeadAttention(16, 4), 32, drop_path=0.5).eval()
    x = torch.randn(2, 3, 5, 16)
    assert layer(x).shape == x.shape
    assert torch.equal(DropPath(0.5).eval()(x), x)


def test_patch_embed_grid():
    assert PatchEmbed(4, 8)(torch.randn(2, 3, 16, 12)).shape == (2, 4, 3, 8)


def test_update_doc_section_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "b.md"
    update_doc_section(doc, "a", "first", title="A")
    update_doc_section(doc, "b", "other", title="B")
    update_doc_section(doc, "a", "second")
    text = doc.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("## A") == 1


def test_cli_lists_verbs_and_rejects_unknown(capsys):
    assert cli_main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2
