"""Parameter and multiply-accumulate (MAC) counts, the papers' "GFLOPs" convention.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC and ignores the CPU SDPA kernel;
we register a formula for it and halve the totals. ``sct profile`` prints these counts per model and
per module, with the cost of a whole multi-view test protocol.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sct.analysis.peers import build_model, input_shape
from sct.analysis.report import markdown_table
from sct.errors import ConfigError

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of ``softmax(q k^T) v`` for ``(B, H, N_q, d)`` x ``(B, H, N_k, d)`` shapes (2 per MAC)."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n_q * n_k * (d + d_v)


def sdpa_flop_mapping() -> dict:
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: torch.Tensor, depth: int = 1) -> tuple[int, dict[str, int]]:
    """MACs of one forward pass of ``model(*inputs)``: the total and per module up to ``depth``.

    Module names are FlopCounterMode's (``"Global"`` for the total, then dotted child names).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, depth=depth, custom_mapping=sdpa_flop_mapping())
    with counter:
        model(*inputs)
    model.train(was_training)
    per_module: dict[str, int] = defaultdict(int)
    for name, ops in counter.get_flop_counts().items():
        per_module[name] = sum(ops.values()) // 2
    return counter.get_total_flops() // 2, dict(per_module)


def component_split(model: nn.Module, clip: torch.Tensor, components: dict[str, str]) -> dict[str, tuple[int, int]]:
    """``{component: (params, MACs)}`` of one forward pass on ``clip``.

    ``components`` maps a submodule or parameter name (one dotted part, e.g. ``"local"``) to a component
    label; each parameter and each module's MACs go to the first part of their name found there, and what
    no part names goes to ``"other"``.
    """
    def component(name: str) -> str | None:
        return next((components[part] for part in name.split(".") if part in components), None)

    split: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, param in model.named_parameters():
        split[component(name) or "other"][0] += param.numel()
    total, per_module = count_macs(model, clip, depth=8)
    root = type(model).__name__
    named = {name.removeprefix(f"{root}."): macs for name, macs in per_module.items() if name != "Global"}
    counted = 0
    for name, macs in named.items():
        label = component(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        if label is not None and not any(p in named and component(p) is not None for p in parents):
            split[label][1] += macs
            counted += macs
    split["other"][1] += total - counted
    return {label: (params, macs) for label, (params, macs) in split.items() if params or macs}


def parse_views(text: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(4, 3)``: temporal x spatial test views (the papers' "x views")."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        temporal, spatial = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--views must look like 4x3 (temporal x spatial), got {text!r}") from None
    if temporal < 1 or spatial < 1:
        raise ConfigError(f"--views must be positive, got {text!r}")
    return temporal, spatial


def profile_model(model: nn.Module, name: str, views: tuple[int, int] = (1, 1), depth: int = 1) -> dict:
    """Params and MACs of ``model`` on one clip of its configured size, in total and per module.

    Modules are those ``depth`` levels below the model (1 = top-level children). Returns a JSON-able
    dict; ``macs_x_views`` is the cost of the whole test protocol (``views`` = temporal x spatial).
    """
    frames, size = input_shape(model)
    clip = torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0))
    total, per_module = count_macs(model, clip, depth=depth)
    root = type(model).__name__

    def macs_of(name: str, module: nn.Module) -> int:
        # Containers that are never called themselves (ModuleList) have no entry: sum their children.
        key = f"{root}.{name}"
        if key in per_module:
            return per_module[key]
        return sum(macs_of(f"{name}.{child_name}", child) for child_name, child in module.named_children())

    params = count_params(model)
    modules = [
        {"module": name, "params": count_params(module), "macs": macs_of(name, module)}
        for name, module in model.named_modules()
        if name and (name.count(".") == depth - 1 or (name.count(".") < depth - 1 and not list(module.children())))
    ]
    return {"model": name, "frames": frames, "size": size, "params": params, "macs": total,
            "views": list(views), "macs_x_views": total * views[0] * views[1], "modules": modules}


def _summary_rows(profiles: list[dict]) -> list[list[object]]:
    rows = []
    for p in profiles:
        t, s = p["views"]
        rows.append([p["model"], p["frames"], p["size"], f"{p['params'] / 1e6:.2f}", f"{p['macs'] / 1e9:.2f}",
                     f"{p['macs'] / 1e12:.3f}x{t}x{s}", f"{p['macs_x_views'] / 1e9:.1f}"])
    return rows


def _module_rows(profile: dict) -> list[list[object]]:
    total = max(profile["macs"], 1)
    return [[m["module"], f"{m['params'] / 1e6:.3f}", f"{m['macs'] / 1e9:.3f}", f"{100 * m['macs'] / total:.1f}"]
            for m in profile["modules"]]


def format_profiles(profiles: list[dict]) -> str:
    """Markdown: one summary table, then a per-module table for each model."""
    parts = [markdown_table(["model", "frames", "size", "params (M)", "GFLOPs", "TFLOPs x views", "GFLOPs x views"],
                            _summary_rows(profiles))]
    for p in profiles:
        parts.append(f"### {p['model']} per module\n\n"
                     + markdown_table(["module", "params (M)", "GFLOPs", "% of FLOPs"], _module_rows(p)))
    return "\n\n".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="registered model names (see sct.list_models()) or hf:timesformer, hf:vivit, hf:videomae")
    parser.add_argument("--frames", type=int, default=None, help="clip length T (default: the model's)")
    parser.add_argument("--size", type=int, default=None, help="crop size S (default: the model's)")
    parser.add_argument("--views", default="1x1", help="test views, temporal x spatial, e.g. 4x3 (default 1x1)")
    parser.add_argument("--classes", type=int, default=400, help="classifier width (default 400)")
    parser.add_argument("--depth", type=int, default=1, help="module depth of the per-module table (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")


def run(args: argparse.Namespace) -> int:
    views = parse_views(args.views)
    if args.depth < 1:
        raise ConfigError(f"--depth must be >= 1, got {args.depth}")
    profiles = []
    for name in args.models:
        model = build_model(name, num_classes=args.classes, num_frames=args.frames, img_size=args.size)
        profiles.append(profile_model(model, name, views, args.depth))
    print(json.dumps(profiles, indent=2) if args.json else format_profiles(profiles))
    return 0
