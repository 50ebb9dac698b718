"""SCT-S/M/L, X-ViT, TSM-ViT, TimeSformer and the Hugging Face peers under one `sct bench` protocol.

Every model gets the same clips (same seed, same T x S), each in a fresh process, with the machine's
matmul GFLOP/s measured in the same run; the papers' runtime figures are listed beside ours, compared
as ratios to SCT-S (absolute times are not comparable: V100 GPUs there, this machine's CPU here).
Writes the ``bench`` section of docs/benchmarks.md and the raw JSON next to it.

    .venv/bin/python benchmarks/bench_models.py                 # 8 x 224 x 224 clips, 3 repeats
    .venv/bin/python benchmarks/bench_models.py --quick         # 2 x 64 x 64, three models: checks the script
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sct.analysis.bench import BenchSettings, format_report, run_bench  # noqa: E402
from sct.analysis.report import markdown_table, update_doc_section  # noqa: E402

MODELS = ["sct_s", "sct_m", "sct_l", "xvit_b16", "tsm_vit_b16", "timesformer_b16",
          "hf:timesformer", "hf:vivit", "hf:videomae"]

# Papers' figures: SCT Table 6 (runtime in s, batch 1, one V100 16GB, mean of 50 inferences; SCT at 24
# frames, TimeSformer at its own protocol) and X-ViT supplementary Table 1 (videos/s on 8 V100s).
SCT_TABLE6_RUNTIME = {"sct_s": 0.051, "sct_m": 0.072, "sct_l": 0.106, "timesformer_b16": 0.475}
XVIT_SUPP_VIDEOS_PER_S = {"xvit_b16": 12.0, "timesformer_b16": 0.69, "vivit-L": 0.66, "SlowFast 8 frames": 0.69,
                          "TEA": 2.4, "bLVNet": 7.5, "I3D-NL ResNet101": 0.37}


def paper_table(report: dict) -> str:
    """Our batch-1 latency and clips/s beside the papers' figures, each as a ratio to SCT-S / X-ViT."""
    ours = {r["model"]: r for r in report["results"] if "error" not in r}
    rows = []
    base = ours.get("sct_s")
    for name, seconds in SCT_TABLE6_RUNTIME.items():
        r = ours.get(name)
        ratio = (f"{r['latency']['median_s'] / base['latency']['median_s']:.2f}" if r and base else "-")
        rows.append([name, "SCT Table 6: runtime (s), batch 1", f"{seconds:.3f}",
                     f"{seconds / SCT_TABLE6_RUNTIME['sct_s']:.2f}", f"{r['latency']['median_s']:.2f}" if r else "-",
                     ratio])
    xvit = ours.get("xvit_b16")
    for name, vps in XVIT_SUPP_VIDEOS_PER_S.items():
        r = ours.get(name)
        ratio = f"{r['clips_per_s'] / xvit['clips_per_s']:.2f}" if r and xvit else "-"
        rows.append([name, "X-ViT supp. Table 1: videos/s, 8 V100", f"{vps:g}",
                     f"{vps / XVIT_SUPP_VIDEOS_PER_S['xvit_b16']:.2f}", f"{r['clips_per_s']:.2f}" if r else "-",
                     ratio])
    return markdown_table(["model", "paper figure", "paper", "paper ratio (to SCT-S / to X-ViT)",
                           "ours (latency s / clips/s)", "our ratio"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny clips and three models, no doc update")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    models = args.models.split(",")
    settings = BenchSettings(frames=args.frames, size=args.size, batch=args.batch, repeats=args.repeats, warmup=1)
    if args.quick:
        models = ["sct_s", "xvit_b16", "hf:vivit"]
        settings = BenchSettings(frames=2, size=64, batch=2, repeats=2, warmup=1)
    report = run_bench(models, settings, timeout=900,
                       progress=lambda name: print(f"benchmarking {name} ...", file=sys.stderr, flush=True))
    text = (format_report(report) + "\n\nAgainst the papers (absolute numbers are not comparable across hardware; "
            "ratios are, roughly — the papers ran SCT at 24 frames, we run every model on the same "
            f"{settings.frames}-frame clips):\n\n" + paper_table(report))
    print(text)
    if not args.quick:
        update_doc_section(args.doc, "bench", text, title="Model benchmark: latency, throughput, memory (sct bench)")
        Path(args.doc).with_name("bench.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
