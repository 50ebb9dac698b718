"""Gradient checkpointing for every model family: the same loss and gradients as without it, less saved
activation memory, LSH rotations drawn once per step, and ``train.grad_checkpointing`` in a real run; the
recomputed layer's MLP held a block of rows at a time."""

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sct
from engine_support import synthetic_set, tiny_config
from sct.analysis.tensor_memory import TensorMemory
from sct.engine.train import train
from sct.errors import ConfigError
from sct.models import blocks, checkpointing
from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.lsh import LSHSelfAttention
from sct.models.blocks import Mlp, TransformerLayer
from sct.models.checkpointing import recomputed_mlp, set_grad_checkpointing

_VIT = dict(img_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_ratio=2.0)
# One small model per family; SCT keeps its LSH global layer (65 tokens > chunk 32, so it hashes) and
# drop-path, the two parts that draw random numbers inside a layer.
MODELS = {
    "sct_tiny": dict(img_size=32, drop_path_rate=0.2),
    "vit_b16_frames": _VIT,
    "tsm_vit_b16": _VIT,
    "xvit_b16": _VIT,
    "timesformer_b16": _VIT,
    "vit_b16_sct": dict(_VIT, temporal_heads=4, temporal_dim_head=8, clip_dim=16, clip_mlp_dim=32, clip_heads=2,
                        clip_depth=1),
}


def _build(name: str, checkpointing: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return sct.create_model(name, num_classes=5, num_frames=4, grad_checkpointing=checkpointing,
                            **MODELS[name]).train()


def _step(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One forward/backward on a fixed clip: loss, gradients, and the bytes autograd saved outside
    checkpointed layers."""
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(clip), torch.tensor([1, 3]))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, sum(saved)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpointing_keeps_loss_and_gradients_and_saves_less(name):
    plain, checkpointed = _build(name, False), _build(name, True)
    loss, grads, saved = _step(plain)
    loss_c, grads_c, saved_c = _step(checkpointed)
    assert torch.equal(loss, loss_c)
    assert grads.keys() == grads_c.keys() and len(grads) > 0
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-5, atol=1e-6, msg=key)
    assert saved_c < 0.5 * saved, f"{name}: {saved_c} bytes kept for backward with checkpointing, {saved} without"


def test_lsh_rotations_are_drawn_once_per_step_with_checkpointing():
    model = _build("sct_tiny", True)
    lsh = [m for m in model.modules() if isinstance(m, LSHSelfAttention)]
    assert lsh
    _step(model)
    assert [int(m.draws) for m in lsh] == [1] * len(lsh), "the backward replay must not count as a new draw"


def test_checkpointing_only_in_training_with_autograd():
    model = _build("sct_tiny", True).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = _build("sct_tiny", False).eval()(clip)
        torch.testing.assert_close(model(clip), expected)


def test_a_model_without_transformer_layers_is_refused():
    with pytest.raises(ValueError, match="Linear has no layer"):
        set_grad_checkpointing(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def test_train_grad_checkpointing_gives_the_same_run(data, tmp_path):
    losses = []
    for flag in ("false", "true"):
        run_dir = train(tiny_config(data, tmp_path / flag, f"train.grad_checkpointing={flag}", "train.max_steps=2",
                                    "train.eval_every_epochs=0"))
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        losses.append([r["loss"] for r in map(json.loads, lines) if r["type"] == "step"])
    assert len(losses[0]) == 2
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_train_option_must_be_a_boolean(data, tmp_path):
    with pytest.raises(ConfigError, match="train.grad_checkpointing"):
        train(tiny_config(data, tmp_path / "run", "train.grad_checkpointing=often"))


def _mlp_step(mlp: torch.nn.Module, forward, x: torch.Tensor, grad: torch.Tensor):
    """Output, gradients (input and parameters) and the non-parameter bytes autograd kept for backward."""
    saved = []
    params = {p.untyped_storage().data_ptr() for p in mlp.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved.append(t.numel() * t.element_size())
        return t

    x = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(mlp, x)
    out.backward(grad)
    return out.detach(), [x.grad] + [p.grad for p in mlp.parameters()], sum(saved)


def test_recomputed_mlp_keeps_only_its_input_and_gives_the_mlps_gradients(monkeypatch):
    monkeypatch.setattr(checkpointing, "HIDDEN_BLOCK", 32 * 7)  # 7 rows per block: 43 blocks, the last one short
    torch.manual_seed(0)
    mlp = Mlp(8, 32)
    x, grad = torch.randn(3, 100, 8), torch.randn(3, 100, 8)
    out, grads, saved = _mlp_step(mlp, lambda m, t: m(t), x, grad)
    mlp.zero_grad(set_to_none=True)
    out_r, grads_r, saved_r = _mlp_step(mlp, recomputed_mlp, x, grad)
    torch.testing.assert_close(out_r, out, rtol=1e-6, atol=1e-7)
    for g_r, g in zip(grads_r, grads):  # weight gradients summed over 43 blocks instead of one matmul: rounding
        torch.testing.assert_close(g_r, g, rtol=1e-5, atol=1e-5)
    assert saved_r == x.numel() * 4 and saved > 8 * saved_r  # the input only; the MLP keeps 4x wider tensors


def test_recomputed_mlp_replays_autocast_and_skips_frozen_weights():
    torch.manual_seed(0)
    mlp = Mlp(8, 32)
    mlp.fc1.weight.requires_grad_(False)
    x, grad = torch.randn(50, 8), torch.randn(50, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads, _ = _mlp_step(mlp, lambda m, t: m(t), x, grad)
        mlp.zero_grad(set_to_none=True)
        out_r, grads_r, _ = _mlp_step(mlp, recomputed_mlp, x, grad)
    assert out_r.dtype == out.dtype == torch.bfloat16
    assert grads_r[1] is None and grads[1] is None
    for g_r, g in zip(grads_r, grads):
        if g is not None:
            assert g_r.dtype == g.dtype == torch.float32
            torch.testing.assert_close(g_r, g, rtol=2e-2, atol=2e-2)


def _peak_backward(layer: torch.nn.Module, x: torch.Tensor) -> int:
    out = layer(x)
    with TensorMemory(min_bytes=0) as memory:
        out.backward(torch.ones_like(out))
    return memory.peak


def test_a_checkpointed_layer_recomputes_without_holding_its_hidden_activations(monkeypatch):
    """The layer recomputed in backward holds its MLP's 4x-wide activations one block of rows at a time."""
    monkeypatch.setattr(checkpointing, "HIDDEN_BLOCK", 64 * 256)
    torch.manual_seed(0)
    layer = TransformerLayer(16, MultiHeadAttention(16, 2), 64).train()
    layer.grad_checkpointing = True
    x = torch.randn(256, 16, 16, requires_grad=True)  # 4096 tokens: each hidden activation is 1 MiB
    peak = _peak_backward(layer, x)
    monkeypatch.setattr(blocks, "recomputed_mlp", lambda mlp, t: mlp(t))
    peak_whole = _peak_backward(layer, x)
    hidden = 4096 * 64 * 4
    assert peak_whole - peak > 1.5 * hidden, (peak, peak_whole)


class _GeluCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.ops.aten.gelu.default
        return func(*args, **(kwargs or {}))


def test_the_replay_of_a_checkpointed_layer_skips_its_mlp():
    """GELU runs in the forward pass and once more for the gradients, not a third time in the layer's replay."""
    torch.manual_seed(0)
    layer = TransformerLayer(16, MultiHeadAttention(16, 2), 64, drop_path=0.5).train()
    layer.grad_checkpointing = True
    x = torch.randn(8, 16, 16, requires_grad=True)
    with _GeluCalls() as gelu:
        torch.manual_seed(1)
        layer(x).sum().backward()
    assert gelu.calls == 2
    grad = x.grad
    layer.grad_checkpointing, x.grad = False, None
    torch.manual_seed(1)
    layer(x).sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-6)


def test_checkpointing_under_bf16_autocast_keeps_loss_and_gradients():
    results = []
    for flag in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grads, _ = _step(_build("sct_tiny", flag))
        results.append((loss, grads))
    (loss, grads), (loss_c, grads_c) = results
    assert torch.equal(loss, loss_c)
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-2, atol=1e-4, msg=key)
