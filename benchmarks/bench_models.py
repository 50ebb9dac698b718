"""SCT-S/M/L, X-ViT, TSM-ViT, TimeSformer and the Hugging Face peers under `sct bench` protocols.

``--protocol equal`` (default): every model gets the same clips (same seed, same T x S), each in a fresh
process, with the machine's matmul GFLOP/s measured in the same run; X-ViT's speed table (supplementary
Table 1, videos/s) is set beside ours as ratios to X-ViT. Writes the ``bench`` section of
docs/benchmarks.md and ``docs/bench.json``.

``--protocol table6``: SCT Table 6's runtime protocol, batch-1 latency with each model at the input of its
row: SCT-S/M/L at 24 x 224 x 224 and TimeSformer at 96 x 224 x 224 (the row's 2.38 TFLOPs are
TimeSformer-L's). Our latency beside the paper's V100 runtime, both as ratios to SCT-S (absolute times
are not comparable: one V100 there, this machine's CPU here). Writes the ``bench_table6`` section and
``docs/bench_table6.json``.

    .venv/bin/python benchmarks/bench_models.py                     # 8 x 224 x 224 clips, 3 repeats
    .venv/bin/python benchmarks/bench_models.py --protocol table6   # 24 / 96 x 224 x 224, batch 1
    .venv/bin/python benchmarks/bench_models.py --quick             # 2 x 64 x 64, three models: checks the script
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sct.analysis.bench import BenchSettings, format_report, run_bench
from sct.analysis.report import markdown_table, update_doc_section

ROOT = Path(__file__).resolve().parents[1]

MODELS = ["sct_s", "sct_m", "sct_l", "xvit_b16", "tsm_vit_b16", "timesformer_b16",
          "hf:timesformer", "hf:vivit", "hf:videomae"]

# SCT Table 6: (frames at 224 px, TFLOPs per view, runtime in s at batch 1 on one V100 16GB, mean of 50
# inferences). TimeSformer's row (2.38 TFLOPs x 1 x 3, 121M) is TimeSformer-L: 96 frames.
SCT_TABLE6 = {"sct_s": (24, 0.088, 0.051), "sct_m": (24, 0.163, 0.072), "sct_l": (24, 0.343, 0.106),
              "timesformer_b16": (96, 2.38, 0.475)}
# X-ViT supplementary Table 1: videos/s on 8 V100s (inputs not given there).
XVIT_SUPP_VIDEOS_PER_S = {"xvit_b16": 12.0, "timesformer_b16": 0.69, "vivit-L": 0.66, "SlowFast 8 frames": 0.69,
                          "TEA": 2.4, "bLVNet": 7.5, "I3D-NL ResNet101": 0.37}


def _progress(name: str) -> None:
    print(f"benchmarking {name} ...", file=sys.stderr, flush=True)


def _ok(report: dict) -> dict[str, dict]:
    return {r["model"]: r for r in report["results"] if "error" not in r}


def xvit_table(report: dict) -> str:
    """Our clips/s beside X-ViT supplementary Table 1's videos/s, each as a ratio to X-ViT."""
    ours = _ok(report)
    xvit = ours.get("xvit_b16")
    rows = []
    for name, vps in XVIT_SUPP_VIDEOS_PER_S.items():
        r = ours.get(name)
        rows.append([name, f"{vps:g}", f"{vps / XVIT_SUPP_VIDEOS_PER_S['xvit_b16']:.2f}",
                     f"{r['clips_per_s']:.2f}" if r else "-",
                     f"{r['clips_per_s'] / xvit['clips_per_s']:.2f}" if r and xvit else "-"])
    return markdown_table(["model", "paper videos/s (8 V100)", "paper ratio to X-ViT", "ours clips/s",
                           "our ratio to X-ViT"], rows)


def table6_table(reports: list[dict]) -> str:
    """Our batch-1 latency beside SCT Table 6's runtime, each model at its row's input, as ratios to SCT-S."""
    ours = {name: r for report in reports for name, r in _ok(report).items()}
    base = ours.get("sct_s")
    rows = []
    for name, (frames, tflops, seconds) in SCT_TABLE6.items():
        r = ours.get(name)
        latency = r["latency"]["median_s"] if r else None
        rows.append([name, f"{frames}x224x224", f"{tflops:.3f}", f"{r['macs'] / 1e12:.3f}" if r else "-",
                     f"{seconds:.3f}", f"{seconds / SCT_TABLE6['sct_s'][2]:.2f}",
                     f"{latency:.2f}" if r else "-",
                     f"{latency / base['latency']['median_s']:.2f}" if r and base else "-"])
    return markdown_table(["model", "input", "paper TFLOPs (MACs)", "ours TMACs", "paper runtime (s, V100)",
                           "paper ratio to SCT-S", "ours latency (s, this CPU)", "our ratio to SCT-S"], rows)


def run_equal(args: argparse.Namespace) -> tuple[str, dict]:
    models = args.models.split(",") if args.models else MODELS
    settings = BenchSettings(frames=args.frames, size=args.size, batch=args.batch, repeats=args.repeats, warmup=1)
    if args.quick:
        models = ["sct_s", "xvit_b16", "hf:vivit"]
        settings = BenchSettings(frames=2, size=64, batch=2, repeats=2, warmup=1)
    report = run_bench(models, settings, timeout=900, progress=_progress)
    text = (format_report(report) + "\n\nAgainst X-ViT's speed table (absolute numbers are not comparable "
            "across hardware; ratios are, roughly):\n\n" + xvit_table(report))
    return text, report


def run_table6(args: argparse.Namespace) -> tuple[str, dict]:
    models = args.models.split(",") if args.models else list(SCT_TABLE6)
    by_frames: dict[int, list[str]] = {}
    for name in models:
        by_frames.setdefault(SCT_TABLE6[name][0] if name in SCT_TABLE6 else args.frames, []).append(name)
    reports = [run_bench(names, BenchSettings(frames=frames, size=224, batch=1, repeats=args.repeats, warmup=1),
                         timeout=1800, progress=_progress)
               for frames, names in by_frames.items()]
    text = "\n\n".join(format_report(r) for r in reports)
    text += "\n\nAgainst SCT Table 6 (batch 1; absolute times are not comparable across hardware):\n\n"
    return text + table6_table(reports), {"reports": reports}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("equal", "table6"), default="equal")
    parser.add_argument("--quick", action="store_true", help="equal protocol, tiny clips, three models, no doc update")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=None, help="comma-separated (default: the protocol's models)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    text, report = run_table6(args) if args.protocol == "table6" else run_equal(args)
    print(text)
    if not args.quick:
        key, title = (("bench_table6", "SCT Table 6 runtime protocol (sct bench, batch 1)") if args.protocol == "table6"
                      else ("bench", "Model benchmark: latency, throughput, memory (sct bench)"))
        update_doc_section(args.doc, key, text, title=title)
        Path(args.doc).with_name(f"{key}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
