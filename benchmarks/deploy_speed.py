"""Deployment speed on this machine's CPU: onnxruntime vs PyTorch eager, and ``sct stream``'s work reuse.

1. ``runtime``: SCT-S and X-ViT (ViT-B/16) at 8 x 224, random weights, exported with ``sct export``'s
   code; batch-1 latency and batch-``--batch`` throughput, PyTorch eager and onnxruntime interleaved
   repetition by repetition in one process (same threads), so their ratio is fair on a busy machine.
2. ``stream``: SCT-S at 224, window 24, stride 1 and 8: sustained model frames per second of the three
   strategies of :mod:`sct.deploy.reuse` (recompute every window; cyclic reuse; causal reuse, with the
   ``shift_mode=causal`` SCT-S), from their timed per-frame and per-window work after the window filled.

    .venv/bin/python benchmarks/deploy_speed.py                 # both, writes docs/benchmarks.md + JSON
    .venv/bin/python benchmarks/deploy_speed.py --only stream --pushes 4 --windows 1
    .venv/bin/python benchmarks/deploy_speed.py --only runtime --models sct_s   # one model's rows, the others kept

Writes the ``deploy`` section of docs/benchmarks.md and docs/bench_deploy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.deploy.export import export_onnx, model_export_source
from sct.deploy.onnx_model import OnnxModel
from sct.deploy.reuse import CausalReuse, CyclicReuse, Recompute

ROOT = Path(__file__).resolve().parents[1]

RUNTIME_MODELS = {"SCT-S": ("sct_s", {}), "X-ViT (ViT-B/16)": ("xvit_b16", {})}


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_runtime(label: str, name: str, frames: int, size: int, batch: int, repeats: int, work: Path) -> dict:
    """Median seconds of eager and onnxruntime at batch 1 and ``batch``, interleaved."""
    model, metadata = model_export_source(name, frames, size)
    model.eval()
    path = export_onnx(model, work / f"{name}.onnx", metadata=metadata)
    runtime = OnnxModel(path)
    gen = torch.Generator().manual_seed(0)
    clips = {b: torch.randn(b, 3, frames, size, size, generator=gen) for b in (1, batch)}
    times = {(kind, b): [] for kind in ("eager", "onnxruntime") for b in clips}
    with torch.inference_mode():
        for b, clip in clips.items():
            model(clip), runtime(clip)  # warm-up
            for _ in range(repeats):
                times["eager", b].append(_seconds(lambda: model(clip)))  # noqa: B023
                times["onnxruntime", b].append(_seconds(lambda: runtime(clip)))  # noqa: B023
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"[runtime] {label}: " + ", ".join(f"{k[0]} b{k[1]} {v * 1000:.0f} ms" for k, v in med.items())
          + f" (load average {_load()})", flush=True)
    return {"model": label, "name": name, "frames": frames, "size": size, "batch": batch, "repeats": repeats,
            "load_average": _load(), **{f"{kind}_b{b}_s": med[kind, b] for kind, b in med}}


def bench_stream(strategy: str, window: int, strides: list[int], size: int, pushes: int, windows: int) -> list[dict]:
    """Sustained model frames/s of one strategy at each stride, from its timed per-frame and per-window work.

    After the window has filled and one warm-up classification, ``pushes`` frames and ``windows``
    classifications are timed; a stride-K period costs ``K * push + classify``, so frames/s =
    ``K / (K * push + classify)``.
    """
    shift_mode = "causal" if strategy == "causal reuse" else "cyclic"
    model, _ = model_export_source("sct_s", window, size, shift_mode=shift_mode)
    model.eval()
    kind = {"recompute": Recompute, "cyclic reuse": CyclicReuse, "causal reuse": CausalReuse}[strategy]
    classifier = kind(model, window)
    gen = torch.Generator().manual_seed(0)
    frame = lambda: torch.randn(3, size, size, generator=gen)  # noqa: E731
    for _ in range(window):
        classifier.push(frame())
    classifier.classify()
    push = statistics.mean(_seconds(lambda: classifier.push(frame())) for _ in range(pushes))
    classify = statistics.mean(_seconds(classifier.classify) for _ in range(windows))
    rows = []
    for stride in strides:
        fps = stride / (stride * push + classify)
        print(f"[stream] {strategy}, window {window}, stride {stride}: {fps:.3f} frames/s", flush=True)
        rows.append({"strategy": strategy, "window": window, "stride": stride, "size": size, "push_s": push,
                     "classify_s": classify, "pushes": pushes, "windows": windows, "frames_per_second": fps})
    return rows


def format_doc(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; torch threads {report['threads']} (onnxruntime the same); "
             f"`benchmarks/deploy_speed.py`, {report['date']}.", ""]
    if report.get("runtime"):
        rows = []
        for r in report["runtime"]:
            b = r["batch"]
            rows.append([r["model"], f"{r['frames']}x{r['size']}", r.get("date", report["date"]),
                         r.get("load_average", "-"), f"{r['eager_b1_s'] * 1000:.0f}",
                         f"{r['onnxruntime_b1_s'] * 1000:.0f}", f"{r['eager_b1_s'] / r['onnxruntime_b1_s']:.2f}x",
                         f"{b / r[f'eager_b{b}_s']:.2f}", f"{b / r[f'onnxruntime_b{b}_s']:.2f}",
                         f"{r[f'eager_b{b}_s'] / r[f'onnxruntime_b{b}_s']:.2f}x"])
        b = report["runtime"][0]["batch"]
        lines += ["onnxruntime vs PyTorch eager (random weights, fp32, median of "
                  f"{report['runtime'][0]['repeats']} interleaved repetitions):", "",
                  markdown_table(["model", "input", "date", "load average (1/5/15 min)", "eager ms (batch 1)",
                                  "onnxruntime ms (batch 1)", "speed-up",
                                  f"eager clips/s (batch {b})", f"onnxruntime clips/s (batch {b})", "speed-up"], rows),
                  ""]
    if report.get("stream"):
        base = {r["stride"]: r["frames_per_second"] for r in report["stream"] if r["strategy"] == "recompute"}
        rows = [[r["strategy"], r["window"], r["stride"], f"{r['push_s'] * 1000:.0f}", f"{r['classify_s'] * 1000:.0f}",
                 f"{r['frames_per_second']:.3f}",
                 f"{r['frames_per_second'] / base[r['stride']]:.1f}x" if r["stride"] in base else "-"]
                for r in sorted(report["stream"], key=lambda r: r["stride"])]
        lines += [f"`sct stream` work reuse, SCT-S at {report['stream'][0]['size']} px (batch 1, random weights; "
                  "frames/s = K / (K x per-frame ms + per-window ms) at stride K):", "",
                  markdown_table(["strategy", "window", "stride", "per-frame ms", "per-window ms", "frames/s",
                                  "vs recompute"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("runtime", "stream"), help="one part only")
    parser.add_argument("--models", default=",".join(name for name, _ in RUNTIME_MODELS.values()),
                        help="runtime part: these models only (comma-separated names); the other rows are kept")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4, help="batch of the throughput runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--strides", default="1,8")
    parser.add_argument("--pushes", type=int, default=8, help="frames timed per stream strategy")
    parser.add_argument("--windows", type=int, default=2, help="window classifications timed per stream strategy")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = Path(args.doc).with_name("bench_deploy.json")
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report.update(machine=describe_machine(), threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d"))
    def save() -> None:  # after every measurement, so a stopped run keeps what it measured
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        update_doc_section(args.doc, "deploy", format_doc(report), title="Deployment: onnxruntime and `sct stream`")

    if args.only in (None, "runtime"):
        chosen = args.models.split(",")
        unknown = set(chosen) - {name for name, _ in RUNTIME_MODELS.values()}
        if unknown:
            parser.error(f"--models: unknown {', '.join(sorted(unknown))}")
        rows = {r["name"]: r for r in report.get("runtime", [])}
        with tempfile.TemporaryDirectory() as work:
            for label, (name, _) in RUNTIME_MODELS.items():
                if name in chosen:
                    rows[name] = {**bench_runtime(label, name, args.frames, args.size, args.batch, args.repeats,
                                                  Path(work)), "date": time.strftime("%Y-%m-%d %H:%M")}
                    report["runtime"] = [rows[n] for n, _ in RUNTIME_MODELS.values() if n in rows]
                    save()
    if args.only in (None, "stream"):
        report["stream"] = []
        for strategy in ("recompute", "cyclic reuse", "causal reuse"):
            report["stream"] += bench_stream(strategy, args.window, [int(s) for s in args.strides.split(",")],
                                             args.size, args.pushes, args.windows)
            save()
    print(f"wrote {args.doc} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
