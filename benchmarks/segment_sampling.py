"""Segment sampling against fixed-rate clips on videos whose class shows only across their whole length.

The synthetic motion set's time-reversed pairs, written with ``motion_frames``: each video is
``video_frames`` long but its motion takes only ``motion_frames`` frames at a random moment, the object
standing still before and after. A small learner (:func:`probe`) is trained on the clips of each sampler,
read through ``VideoDataset`` exactly as training reads them, and tested on held-out videos (one view):

- ``clip``: 8 consecutive frames (``sampling_rate: 1``), the Kinetics-style clip, covering a sixth of
  the video; it usually lands on a still stretch;
- ``clip, stride``: 8 frames ``video_frames / 8`` apart: a fixed-rate clip stretched to the length of
  these videos (they all have one length, so it covers each of them; on real sets it would not);
- ``segment``: one frame from each of 8 equal segments (``data.sampling: segment``).

Writes the marked ``segment_sampling`` section of docs/data.md. ``tests/test_segment_sampling.py`` runs
the same learner on one small set (one pair, two samplers, one seed).

    .venv/bin/python benchmarks/segment_sampling.py               # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/segment_sampling.py --seeds 1 --videos-per-class 20 --doc /tmp/x.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.data.datasets import DataConfig, build_dataset, collate
from sct.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ("move_right", "move_left", "move_down", "move_up", "grow", "shrink", "fade_in", "fade_out")
CLIP_FRAMES = 8
SIZE = 32


def probe(num_classes: int) -> nn.Module:
    """``(B, 3, 8, 32, 32)`` -> ``(B, num_classes)``: two per-frame convolutions down to a 4 x 4 map that
    keeps where things are, then one linear layer over every frame and position (it can weigh late
    frames against early ones, which a reversal pair needs)."""
    return nn.Sequential(
        nn.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.ReLU(),
        nn.Conv3d(8, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.ReLU(),
        nn.AdaptiveAvgPool3d((None, 4, 4)), nn.Flatten(), nn.Linear(8 * CLIP_FRAMES * 16, num_classes),
    )


def train_and_test(root: Path, sampling: str, sampling_rate: int = 1, *, epochs: int = 25, seed: int = 0) -> float:
    """Test top-1 (%) of :func:`probe` trained on 8-frame clips of ``sampling`` from the set at ``root``."""
    cfg = DataConfig(root=str(root), sampling=sampling, num_frames=CLIP_FRAMES, sampling_rate=sampling_rate,
                     crop_size=SIZE, train_short_side=(SIZE, SIZE), flip=False, cache_mb=512, seed=seed)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    torch.manual_seed(seed)
    model = probe(len(train.class_names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        order = torch.Generator().manual_seed(seed * 1000 + epoch)
        for batch in DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate, generator=order):
            loss = nn.functional.cross_entropy(model(batch["video"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    correct = 0
    with torch.inference_mode():
        for batch in DataLoader(test, batch_size=64, collate_fn=collate):
            correct += int((model(batch["video"]).argmax(1) == batch["label"]).sum())
    return 100.0 * correct / len(test)


def samplers(video_frames: int) -> dict[str, tuple[str, int]]:
    """Row label -> (data.sampling, data.sampling_rate)."""
    stride = video_frames // CLIP_FRAMES
    return {
        "clip: 8 consecutive frames": ("clip", 1),
        f"clip: 8 frames {stride} apart (spans these videos)": ("clip", stride),
        "segment: 8 segments": ("segment", 1),
    }


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "segment_sampling"), help="where the videos go")
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--video-frames", type=int, default=48)
    parser.add_argument("--motion-frames", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "data.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny convolutions: extra threads only add overhead
    start = time.perf_counter()
    data = generate(Path(args.work) / "data", videos_per_class=args.videos_per_class, num_frames=args.video_frames,
                    motion_frames=args.motion_frames, size=SIZE, classes=CLASSES, workers=2, progress=False)
    results = {}
    for label, (sampling, rate) in samplers(args.video_frames).items():
        results[label] = [train_and_test(data, sampling, rate, epochs=args.epochs, seed=s) for s in range(args.seeds)]
        print(label, results[label], flush=True)
    (Path(args.work) / "results.json").write_text(json.dumps(results, indent=2))
    n_train = round(args.videos_per_class * 0.7) * len(CLASSES)
    n_test = round(args.videos_per_class * 0.15) * len(CLASSES)
    rows = [[label, _mean_std(scores)] for label, scores in results.items()]
    text = f"""Measured by `benchmarks/segment_sampling.py` ({(time.perf_counter() - start) / 60:.0f} min on
{describe_machine()}, shared with other jobs). Videos: the synthetic set's {len(CLASSES)} classes (4
time-reversed pairs) x {args.videos_per_class} ({n_train} train, {n_test} test), {args.video_frames} frames of
{SIZE} x {SIZE} at 10 fps, the motion taking {args.motion_frames} of them at a random moment
(`generate(..., motion_frames={args.motion_frames})`). Learner: a small CNN that keeps frame order and
coarse position (`probe` in the script), {args.epochs} epochs, 8 input frames, one test view; test top-1 (%)
over {args.seeds} seed(s), mean +- std. Chance is 12.5%; telling the pairs apart but not the direction within a
pair gives 25%.

{markdown_table(["sampler", "test top-1 (%)"], rows)}"""
    update_doc_section(args.doc, "segment_sampling", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
