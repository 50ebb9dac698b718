"""Optimiser parameter groups, the warmup + cosine schedule, and the weight EMA."""

import math

import pytest
import torch

from sct.config import OptimConfig
from sct.engine.ema import ModelEMA
from sct.engine.optim import WarmupCosineSchedule, build_optimizer, build_schedule


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def test_schedule_warms_up_linearly_then_anneals_to_min_lr():
    opt = torch.optim.SGD(_model().parameters(), lr=1.0)
    schedule = WarmupCosineSchedule(opt, lr=0.4, total_steps=100, warmup_steps=10, min_lr=0.01, start_factor=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step()
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[5] == pytest.approx(0.04 + 0.36 * 0.5)
    assert lrs[10] == pytest.approx(0.4)
    assert lrs[55] == pytest.approx(0.01 + 0.39 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "cosine part must not increase"
    assert schedule.lr_at(100) == pytest.approx(0.01)


def test_schedule_state_resumes_at_the_same_lr():
    opt = torch.optim.SGD(_model().parameters(), lr=1.0)
    cfg = OptimConfig(lr=0.3, warmup_epochs=2)
    first = build_schedule(opt, cfg, steps_per_epoch=7, epochs=10)
    for _ in range(23):
        first.step()
    other = torch.optim.SGD(_model().parameters(), lr=1.0)
    second = build_schedule(other, cfg, steps_per_epoch=7, epochs=10)
    second.load_state_dict(first.state_dict())
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == first.lr_at(23)
    assert first.warmup_steps == 14 and first.total_steps == 70


def test_biases_and_norms_are_not_decayed():
    opt = build_optimizer(_model(), OptimConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [(8, 4), (2, 8)] and decayed["weight_decay"] == 0.1
    assert len(plain["params"]) == 4 and plain["weight_decay"] == 0.0
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert isinstance(build_optimizer(_model(), OptimConfig(name="adamw", lr=1e-3)), torch.optim.AdamW)


def test_ema_follows_the_weights_with_its_decay():
    model = _model()
    ema = ModelEMA(model, decay=0.9)
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["0.weight"], before + 0.1)


def test_layer_decay_scales_the_rate_from_the_head_down_to_the_embedding():
    import sct
    from sct.config import OptimConfig
    from sct.engine.optim import WarmupCosineSchedule, build_optimizer

    model = sct.create_model("sct_tiny", num_classes=3)  # 2 blocks: embedding 0, blocks 1-2, clip encoder 3
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=1.0, layer_decay=0.5))
    WarmupCosineSchedule(opt, lr=1.0, total_steps=10, warmup_steps=0)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["clip_encoder.head.weight"])] == 1.0
    assert lr_of[id(params["blocks.1.temporal.0.mlp.fc1.weight"])] == 0.5
    assert lr_of[id(params["blocks.0.temporal.0.mlp.fc1.weight"])] == 0.25
    assert lr_of[id(params["patch_embed.proj.weight"])] == 0.125
    plain = build_optimizer(model, OptimConfig(name="adamw", lr=1.0))
    assert len(plain.param_groups) == 2


def test_layer_decay_keeps_the_models_own_no_weight_decay():
    from sct.engine.optim import parameter_groups

    class Declares(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])
            self.table = torch.nn.Parameter(torch.zeros(4, 4))  # a 2-D name no guess would catch

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = Declares()
    groups = parameter_groups(model, OptimConfig(weight_decay=0.05, layer_decay=0.5))
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert wd[id(model.table)] == 0.0 and wd[id(model.blocks[0].bias)] == 0.0
    assert wd[id(model.blocks[0].weight)] == 0.05 == wd[id(model.blocks[1].weight)]
    assert scale[id(model.blocks[0].weight)] == 0.25 and scale[id(model.blocks[1].weight)] == 0.5
    assert scale[id(model.table)] == 1.0
