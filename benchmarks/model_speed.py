"""SCT forward speed: seconds per clip and achieved GFLOP/s against this machine's matmul GFLOP/s.

SCT-S (default) at batch 1, 24 x 224 x 224, fp32 and bf16 (CPU autocast), with a per-component
breakdown of where the time goes, plus the training step time of ``sct_tiny`` (the demo model).
The matmul reference is measured in the same run, so the ratio is fair on a noisy machine.
Writes the ``model_speed`` section of docs/benchmarks.md.

    .venv/bin/python benchmarks/model_speed.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/model_speed.py --quick    # 8 frames at 112 px, to check the script
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

import sct
from sct.analysis.bench import median_seconds, training_step
from sct.analysis.flops import count_macs
from sct.analysis.hardware import describe_machine, matmul_gflops
from sct.analysis.report import markdown_table, update_doc_section

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _autocast(dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=DTYPES[dtype])


def time_forward(model: torch.nn.Module, x: torch.Tensor, dtype: str, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` forward passes (after one warm-up), inference mode."""
    times = []
    with torch.inference_mode(), _autocast(dtype):
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return times


def component_seconds(model: torch.nn.Module, x: torch.Tensor, dtype: str) -> dict[str, float]:
    """Seconds spent in each part of one forward: patch embedding, each block's parts, clip encoder."""
    spent: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    parts = {"patch_embed": model.patch_embed, "clip_encoder": model.clip_encoder}
    for b, block in enumerate(model.blocks):
        for name in ("local", "global_", "pool", "temporal"):
            part = getattr(block, name)
            if part is not None and not (isinstance(part, torch.nn.ModuleList) and len(part) == 0):
                parts[f"block{b}.{name.rstrip('_')}"] = part
    def start(name):
        return lambda _module, _args: starts.__setitem__(name, time.perf_counter())

    def stop(name):
        def hook(_module, _args, _out):
            spent[name] += time.perf_counter() - starts[name]
        return hook

    for name, module in parts.items():
        for m in (list(module) if isinstance(module, torch.nn.ModuleList) else [module]):
            handles += [m.register_forward_pre_hook(start(name)), m.register_forward_hook(stop(name))]
    with torch.inference_mode(), _autocast(dtype):
        model(x)
    for h in handles:
        h.remove()
    return dict(spent)


def tiny_step_seconds(repeats: int) -> tuple[float, str]:
    """Median seconds of one sct_tiny training step (forward + backward + AdamW) at 8 x 16 x 64 x 64.

    The first two steps are warm-up (allocator and oneDNN primitive creation take seconds on a CPU).
    """
    torch.manual_seed(0)
    model = sct.create_model("sct_tiny", num_classes=10, num_frames=16, img_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 16, 64, 64), torch.randint(0, 10, (8,))
    return median_seconds(training_step(model, opt, x, y), repeats, warmup=2), "8 clips x 16 frames x 64 x 64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sct_s")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 frames at 112 px, one repeat (script check)")
    parser.add_argument("--no-doc", action="store_true", help="print only, do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.repeats = 8, 112, 1

    torch.manual_seed(0)
    model = sct.create_model(args.model, num_classes=400, num_frames=args.frames, img_size=args.size).eval()
    x = torch.randn(1, 3, args.frames, args.size, args.size)
    macs, _ = count_macs(model, x)
    gflop = 2 * macs / 1e9
    peak = {d: matmul_gflops(DTYPES[d]) for d in DTYPES}

    rows, breakdown = [], {}
    for dtype in DTYPES:
        secs = statistics.median(time_forward(model, x, dtype, args.repeats))
        achieved = gflop / secs
        rows.append([dtype, f"{secs:.2f}", f"{achieved:.1f}", f"{peak['fp32']:.1f}", f"{achieved / peak['fp32']:.0%}",
                     f"{peak[dtype]:.1f}"])
        breakdown[dtype] = component_seconds(model, x, dtype)
        print(f"{dtype}: {secs:.2f} s/clip, {achieved:.1f} GFLOP/s", flush=True)
    step_s, step_shape = tiny_step_seconds(max(args.repeats, 5))
    print(f"sct_tiny train step: {step_s:.3f} s ({step_shape})", flush=True)

    total = {d: sum(breakdown[d].values()) for d in DTYPES}
    parts = sorted(breakdown["fp32"], key=lambda k: -breakdown["fp32"][k])
    md = [
        f"`{args.model}` forward, batch 1, {args.frames} x {args.size} x {args.size}, "
        f"{macs / 1e9:.2f} GMACs = {gflop:.1f} GFLOP per clip (`sct.analysis.flops.count_macs`), "
        f"inference mode, median of {args.repeats}. bf16 = CPU autocast. Machine: {describe_machine()}.",
        "",
        markdown_table(["dtype", "s / clip", "achieved GFLOP/s", "fp32 matmul GFLOP/s (same run)",
                        "achieved / fp32 matmul", "matmul GFLOP/s in this dtype"], rows),
        "",
        "Where the time goes (one forward, seconds; hooks on each part):",
        "",
        markdown_table(["part", "fp32 s", "fp32 share", "bf16 s"],
                       [[p, f"{breakdown['fp32'][p]:.3f}", f"{breakdown['fp32'][p] / total['fp32']:.0%}",
                         f"{breakdown['bf16'].get(p, 0.0):.3f}"] for p in parts]),
        "",
        f"`sct_tiny` training step (forward + backward + AdamW, {step_shape}, fp32): **{step_s:.3f} s**.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/model_speed.py`.",
    ]
    text = "\n".join(md)
    print(text)
    if not args.no_doc:
        update_doc_section(DOC, "model_speed", text, title="SCT model speed")


if __name__ == "__main__":
    main()
