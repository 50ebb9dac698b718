"""What a checkpointed training step holds at its peak: tensor bytes by maker, SCT-S/M/L at 24x224.

One training step (forward, cross-entropy, backward; batch 1) with ``grad_checkpointing`` under
``sct.analysis.tensor_memory.TensorMemory``: the most tensor bytes made during the step held at once, and
who made them at that moment: the module whose forward pass ran (a checkpointed layer's replay included),
or "after M" for backward kernels that run after module M was last entered; the parameters' gradients are
shown as such. Tensors under 1 MiB are not followed. Parameters, the clip and AdamW's state are made before
the step and not counted. Tensor bytes leave the allocator out: ``training_speed.py --protocol
checkpointing`` measures the process's peak. Memory does not depend on the machine's load, so this needs
no measurement lock; it takes minutes (every operator is followed).

    .venv/bin/python benchmarks/checkpointing_memory.py --models sct_l    # writes docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import sct
from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.analysis.tensor_memory import TensorMemory

ROOT = Path(__file__).resolve().parents[1]
KEY = "training_checkpointing_breakdown"
MiB = 2**20


def breakdown(name: str, frames: int, size: int) -> dict:
    """Peak tensor bytes of one checkpointed step of ``name`` and what holds them (bytes by maker)."""
    torch.manual_seed(0)
    model = sct.create_model(name, num_classes=400, num_frames=frames, img_size=size, grad_checkpointing=True)
    model.train()
    clip = torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0))
    with TensorMemory({m: n for n, m in model.named_modules()}) as memory:
        torch.nn.functional.cross_entropy(model(clip), torch.tensor([7])).backward()
    grads = {p.grad.untyped_storage().data_ptr(): "parameter gradients" for p in model.parameters()
             if p.grad is not None}
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peak": memory.peak, "held": dict(memory.breakdown(grads).most_common()), "param_bytes": params}


def report(results: dict, top: int) -> str:
    parts = []
    for name, r in sorted(results.items()):
        rows = [[label, f"{size / MiB:.0f}", f"{100 * size / r['peak']:.0f}%"]
                for label, size in list(r["held"].items())[:top]]
        rest = r["peak"] - sum(size for _, size in list(r["held"].items())[:top])
        rows.append(["everything else", f"{rest / MiB:.0f}", f"{100 * rest / r['peak']:.0f}%"])
        parts.append(f"**{name}**: {r['peak'] / MiB:.0f} MiB of tensors at the peak (parameters: "
                     f"{r['param_bytes'] / MiB:.0f} MiB, AdamW's state twice that, neither counted here)\n\n"
                     + markdown_table(["held by (module: operator)", "MiB", "share"], rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sct_s,sct_m,sct_l")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--top", type=int, default=12, help="makers listed per model")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    saved = Path(args.doc).with_name(f"{KEY}.json")
    clip = f"{args.frames}x{args.size}"
    previous = json.loads(saved.read_text()) if saved.exists() and not args.no_doc else {}
    results = previous.get("rows", {}) if previous.get("clip") == clip else {}
    for name in args.models.split(","):
        start = time.time()
        results[name] = breakdown(name, args.frames, args.size)
        print(f"{name}: peak {results[name]['peak'] / MiB:.0f} MiB ({time.time() - start:.0f} s)", file=sys.stderr)
    text = (f"`python benchmarks/checkpointing_memory.py` on {describe_machine()}; fp32, batch 1, clip "
            f"{args.frames}x{args.size}x{args.size}, one training step with `grad_checkpointing`.\n\n"
            + report(results, args.top))
    print(text)
    if not args.no_doc:
        update_doc_section(args.doc, KEY, text, title="What a checkpointed step holds at its peak")
        saved.write_text(json.dumps({"clip": clip, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
