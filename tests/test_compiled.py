"""``train.compile``: the compiled model gives the model's outputs, and a failing compiler falls back to eager."""

import pytest
import torch
from torch import nn

from sct.config import TrainConfig
from sct.engine.compiled import CompiledWithFallback
from sct.errors import ConfigError
from sct.models.attention.lsh import LSHSelfAttention


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))


def _broken_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler here")


def test_compiled_model_matches_eager_and_trains():
    model, x = _model(), torch.randn(4, 8)
    compiled = CompiledWithFallback(model, backend="eager")
    expected = model(x)
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert compiled.error is None and all(p.grad is not None for p in model.parameters())


def test_compile_failure_warns_once_and_runs_eagerly():
    model, x = _model(), torch.randn(4, 8)
    compiled = CompiledWithFallback(model, backend=_broken_backend)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here.*running the model eagerly"):
        out = compiled(x)
    torch.testing.assert_close(out, model(x))
    assert "no C++ compiler here" in compiled.error
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))  # no second attempt, no second warning


def test_errors_of_the_model_itself_still_propagate():
    compiled = CompiledWithFallback(_model(), backend=_broken_backend)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        compiled(torch.randn(4, 5))


def test_train_compile_must_be_a_boolean():
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        TrainConfig(compile="yes")


def test_compiling_an_lsh_layer_leaves_its_block_loop_to_eager():
    """The blocked LSH attention is not traced: its Python loop would otherwise be unrolled into the graph."""
    layer = LSHSelfAttention(32, 2, chunk_length=16).eval()
    x = torch.randn(1, 256, 32)
    explanation = torch._dynamo.explain(layer)(x)
    # The projections and reshapes around the attention only (88 nodes when the blocks are traced).
    assert sum(len(graph.graph.nodes) for graph in explanation.graphs) < 40
    torch.testing.assert_close(torch.compile(layer, backend="eager")(x), layer(x))
