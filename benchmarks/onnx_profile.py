"""Where an exported model's time goes: onnxruntime's own profile by op type and by module, beside
PyTorch eager's time per module, on one random clip (single-threaded by default).

    .venv/bin/python benchmarks/onnx_profile.py --model sct_s --frames 8 --size 224
    .venv/bin/python benchmarks/onnx_profile.py --model sct_s --onnx sct_s.onnx     # an export made before

onnxruntime runs with ``ORT_ENABLE_ALL`` graph optimisation (its default) and ``enable_profiling``; the
second of two runs is summed per node. onnxruntime's modules are the exporter's node-name scopes
(``blocks.0/local/layers/...``, slash-separated) cut to ``--depth`` parts; the eager times come from forward
hooks on the modules whose dotted names (``blocks.0.local``) have ``--depth`` parts.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from sct.deploy.export import export_onnx, model_export_source


def ort_profile(path: Path, clip: torch.Tensor, threads: int, depth: int) -> tuple[collections.Counter, ...]:
    """Microseconds per op type and per module scope of the second of two onnxruntime runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.profile_file_prefix = str(path.with_suffix(".profile"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: clip.numpy()})
    trace = Path(session.end_profiling())
    nodes = [e for e in json.loads(trace.read_text()) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    trace.unlink()
    by_op, by_module = collections.Counter(), collections.Counter()
    for event in nodes[len(nodes) // 2:]:
        by_op[event["args"]["op_name"]] += event["dur"]
        scope = event["name"].split("/")[1:-1]
        by_module["/".join(scope[:depth]) or "(fused, no scope)"] += event["dur"]
    return by_op, by_module


def eager_profile(model: torch.nn.Module, clip: torch.Tensor, depth: int) -> collections.Counter:
    """Microseconds per module (names with ``depth`` parts) of one eager forward, after a warm-up."""
    spent, started = collections.Counter(), {}
    hooks = []
    for name, module in model.named_modules():
        if name and name.count(".") == depth - 1:
            hooks.append(module.register_forward_pre_hook(lambda m, _: started.__setitem__(m, time.perf_counter())))
            hooks.append(module.register_forward_hook(
                lambda m, _i, _o, name=name: spent.update({name: 1e6 * (time.perf_counter() - started[m])})))
    with torch.inference_mode():
        model(clip)
        spent.clear()
        start = time.perf_counter()
        model(clip)
        spent["(total)"] = 1e6 * (time.perf_counter() - start)
    for hook in hooks:
        hook.remove()
    return spent


def _print(title: str, counts: collections.Counter, top: int) -> None:
    forward = counts.pop("(total)", None)
    total = sum(counts.values()) or 1
    print(f"\n{title} (sum {total / 1e3:.0f} ms" + (f", whole forward {forward / 1e3:.0f} ms)" if forward else ")"))
    for key, value in counts.most_common(top):
        print(f"  {key:48s} {value / 1e3:9.1f} ms {100 * value / total:5.1f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sct_s")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--onnx", help="an existing export of --model at --frames x --size (skips the export)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", type=int, default=3, help="module name parts to group by (default 3)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, metadata = model_export_source(args.model, args.frames, args.size)
    model.eval()
    clip = torch.randn(1, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as work:
        path = Path(args.onnx) if args.onnx else export_onnx(model, Path(work) / "model.onnx", metadata=metadata)
        by_op, by_module = ort_profile(path, clip, args.threads, args.depth)
    _print("onnxruntime, by op type", by_op, args.top)
    _print("onnxruntime, by module", by_module, args.top)
    _print("PyTorch eager, by module", eager_profile(model, clip, args.depth), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
