"""Segment sampling against fixed-rate clips on videos whose class shows only across their whole length.

The synthetic motion set's time-reversed pairs, written with ``motion_frames``: each video is
``video_frames`` long but its motion takes only ``motion_frames`` frames at a random moment, the object
standing still before and after. sct_tiny is trained (the demo's recipe, fewer clips) and tested with

- ``clip``: 8 consecutive frames (``sampling_rate: 1``), the Kinetics-style clip, which covers a sixth of
  the video and usually sees only a still stretch;
- ``clip, stride``: 8 frames ``video_frames / 8`` apart, a fixed-rate clip stretched to the length of
  these (equal-length) videos;
- ``segment``: one frame from each of 8 equal segments (``data.sampling: segment``).

Writes the marked ``segment_sampling`` section of docs/data.md.

    .venv/bin/python benchmarks/segment_sampling.py            # about 15 min on 2 idle cores
    .venv/bin/python benchmarks/segment_sampling.py --epochs 2 --videos-per-class 20 --doc /tmp/x.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sct.analysis.hardware import describe_machine  # noqa: E402
from sct.analysis.report import markdown_table, update_doc_section  # noqa: E402
from sct.config import load_config  # noqa: E402
from sct.data.synthetic import generate  # noqa: E402
from sct.engine.evaluate import evaluate  # noqa: E402
from sct.engine.train import train  # noqa: E402

CLASSES = ("move_right", "move_left", "move_down", "move_up", "grow", "shrink", "fade_in", "fade_out")
CLIP_FRAMES = 8


def samplers(video_frames: int) -> dict[str, list[str]]:
    """Row label -> data overrides."""
    return {
        "clip, 8 consecutive frames": ["data.sampling=clip", "data.sampling_rate=1"],
        f"clip, 8 frames {video_frames // CLIP_FRAMES} apart": [
            "data.sampling=clip", f"data.sampling_rate={video_frames // CLIP_FRAMES}"],
        "segment, 8 segments": ["data.sampling=segment"],
    }


def run_config(data_root: Path, out: Path, args: argparse.Namespace, extra: list[str]):
    """The demo recipe (sct_tiny, one ViLT chunk per 32 px frame, AdamW 3e-4) at this scale."""
    return load_config(None, [
        f"output_dir={out}", "seed=0", "model.name=sct_tiny", "model.chunk_size=8", "resume=auto",
        f"data.root={data_root}", "data.format=csv", f"data.num_frames={CLIP_FRAMES}", "data.crop_size=32",
        "data.flip=false", "data.cache_mb=512", "optim.name=adamw", "optim.lr=0.0003", "optim.weight_decay=0.05",
        "optim.warmup_epochs=1", "optim.clip_grad=1.0", "train.label_smoothing=0.1", f"train.epochs={args.epochs}",
        "train.batch_size=16", "train.num_workers=0", "train.num_threads=2", "train.eval_every_epochs=0",
        "train.log_every_steps=1000", "train.device=cpu", "eval.views=1x1", "eval.num_workers=0",
        "eval.batch_size=32", *extra,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "segment_sampling"), help="data and run folders")
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--video-frames", type=int, default=48)
    parser.add_argument("--motion-frames", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "data.md"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    start = time.perf_counter()
    data = generate(work / "data", videos_per_class=args.videos_per_class, num_frames=args.video_frames,
                    motion_frames=args.motion_frames, size=32, classes=CLASSES, workers=2, progress=False)
    rows, results = [], {}
    for i, (label, extra) in enumerate(samplers(args.video_frames).items()):
        cfg = run_config(data, work / f"run{i}", args, extra)
        tic = time.perf_counter()
        weights = train(cfg) / "model.safetensors"
        result = evaluate(weights, views="1x1", num_workers=0, device="cpu")
        results[label] = {"top1": result["top1"], "train_seconds": time.perf_counter() - tic}
        rows.append([label, f"{result['top1']:.1f}", f"{results[label]['train_seconds'] / 60:.1f}"])
        print(label, results[label], flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    n_train = round(args.videos_per_class * 0.7) * len(CLASSES)
    n_test = round(args.videos_per_class * 0.15) * len(CLASSES)
    text = f"""Measured by `benchmarks/segment_sampling.py` ({(time.perf_counter() - start) / 60:.0f} min on
{describe_machine()}). Synthetic set: {len(CLASSES)} classes (4 time-reversed pairs) x {args.videos_per_class}
videos ({n_train} train, {n_test} test) of {args.video_frames} frames at 32 x 32 whose motion takes
{args.motion_frames} frames at a random moment (`generate(..., motion_frames={args.motion_frames})`); sct_tiny
with the demo's recipe, {args.epochs} epochs, 8 input frames, one test view. Chance is 12.5%; a model that
tells the pairs apart but not the direction within a pair gets 25%.

{markdown_table(["sampler", "test top-1 (%)", "training (min)"], rows)}"""
    update_doc_section(args.doc, "segment_sampling", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
