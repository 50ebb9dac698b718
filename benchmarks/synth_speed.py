"""Synthetic motion set: generation speed, and a check that single frames carry no class within a pair.

1. Time ``generate`` for 1000 clips (10 classes x 100, 16 frames of 64x64) with 1 worker and with
   every CPU, and split one clip's cost into rendering (numpy) and encoding (PyAV/x264).
2. A leakage check on the generated set (train split -> test split): one small 2D CNN trained on an
   order-blind summary of each clip (mean and std of its frames over time) and one on an order-aware
   summary (mean and time-weighted mean). Within a time-reversed pair the first must sit at chance
   (50%) while the second separates the pair.
3. How many clips the hard pair (rotation) needs: a tiny 3D CNN on that pair alone.

Writes the section ``synth`` of docs/benchmarks.md.  Usage: ``python benchmarks/synth_speed.py``.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.data.synthetic import (
    DEFAULT_CLASSES,
    PAIRS,
    clip_rng,
    generate,
    render_clip,
    sample_clip,
    write_video,
)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage,
                                                      (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def time_generate(out: Path, videos_per_class: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of generating the default set."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    generate(out, videos_per_class=videos_per_class, workers=workers, progress=False)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def time_stages(scratch: Path, clips: int = 50) -> tuple[float, float]:
    """Milliseconds per clip spent rendering and spent encoding, one process."""
    render = encode = 0.0
    for i in range(clips):
        name = DEFAULT_CLASSES[i % len(DEFAULT_CLASSES)]
        t0 = time.perf_counter()
        frames = render_clip(name, sample_clip(name, clip_rng(0, name, i)))
        t1 = time.perf_counter()
        write_video(scratch / "stage.mp4", frames)
        t2 = time.perf_counter()
        render, encode = render + t1 - t0, encode + t2 - t1
    return 1000 * render / clips, 1000 * encode / clips


def summaries(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two 6-channel 32x32 summaries of a clip: order-blind [mean, std over time] and order-aware
    [mean, time-weighted mean]; the second flips sign under time reversal, the first cannot change."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)
    t, h, w, _ = frames.shape
    frames = frames.reshape(t, 32, h // 32, 32, w // 32, 3).mean((2, 4)).transpose(0, 3, 1, 2) / 255
    ramp = np.arange(t, dtype=np.float32) - (t - 1) / 2
    trend = np.tensordot(ramp / np.abs(ramp).sum(), frames, axes=1)
    mean = frames.mean(0)
    return np.concatenate([mean, frames.std(0)]), np.concatenate([mean, trend])


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order-blind and order-aware summaries ``(N, 6, 32, 32)`` of a split, and labels ``(N,)``."""
    classes = (root / "classes.txt").read_text().split()
    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    blind, aware = zip(*(summaries(root / r["path"]) for r in rows))
    return np.stack(blind), np.stack(aware), np.array([classes.index(r["label"]) for r in rows])


def small_cnn(channels: int, num_classes: int) -> torch.nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[torch.nn.Module]:
        return [torch.nn.Conv2d(cin, cout, 3, stride, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    return torch.nn.Sequential(*block(channels, 16, 2), *block(16, 32, 2), *block(32, 64, 2),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes))


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> torch.nn.Module:
    """AdamW + one-cycle schedule over ``epochs`` of shuffled batches; returns the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * -(-len(x) // batch_size))
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
            schedule.step()
    return model.eval()


def fit_and_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                    epochs: int = 15) -> np.ndarray:
    """Train a small 2D CNN on summaries ``(N, C, 32, 32)``; returns test logits ``(M, classes)``."""
    torch.manual_seed(0)
    mean, std = train_x.mean((0, 2, 3), keepdims=True), train_x.std((0, 2, 3), keepdims=True) + 1e-6
    x, xt = (torch.from_numpy((a - mean) / std) for a in (train_x, test_x))
    y = torch.from_numpy(train_y)
    model = fit(small_cnn(x.shape[1], num_classes), x, y, epochs, batch_size=32)
    with torch.no_grad():
        return model(xt).numpy()


def beats_partner(logits: np.ndarray, labels: np.ndarray, partner: dict[int, int]) -> np.ndarray:
    """``(N,)`` bool: the clip's class logit beats that of its time-reversed partner class."""
    rows = np.arange(len(labels))
    return logits[rows, labels] > logits[rows, [partner[c] for c in labels]]


def leakage_table(root: Path) -> tuple[str, int]:
    """The table of the leakage check, and the number of test clips it used."""
    classes = (root / "classes.txt").read_text().split()
    pairs = [p for p in PAIRS if p.forward in classes and p.backward in classes]
    partner = {}
    for p in pairs:
        a, b = classes.index(p.forward), classes.index(p.backward)
        partner[a], partner[b] = b, a
    train_blind, train_aware, train_y = load_split(root, "train")
    test_blind, test_aware, test_y = load_split(root, "test")
    rows = []
    for name, train_x, test_x in (("[mean, std] over time (order-blind)", train_blind, test_blind),
                                  ("[mean, time-weighted mean] (order-aware)", train_aware, test_aware)):
        logits = fit_and_predict(train_x, train_y, test_x, len(classes))
        won = beats_partner(logits, test_y, partner)
        in_pair = [np.isin(test_y, [classes.index(p.forward), classes.index(p.backward)]) for p in pairs]
        rows.append([name, f"{100 * (logits.argmax(1) == test_y).mean():.1f}%", f"{100 * won.mean():.1f}%",
                     *(f"{100 * won[mask].mean():.0f}%" for mask in in_pair)])
    table = markdown_table(["small 2D CNN on a 32x32 clip summary", f"test top-1 ({len(classes)} classes)",
                            "within pair (chance 50%)", *(f"{p.forward}/{p.backward}" for p in pairs)], rows)
    return table, len(test_y)


def load_clips(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded clips ``(N, 3, T, H, W)`` scaled to about [-2, 2] and labels ``(N,)`` of one split."""
    classes = (root / "classes.txt").read_text().split()
    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clips = []
    for row in rows:
        with av.open(str(root / row["path"])) as container:
            clips.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 255
    return (x - 0.5) / 0.25, torch.tensor([classes.index(r["label"]) for r in rows])


def tiny_3d_cnn(num_classes: int) -> torch.nn.Module:
    def block(cin: int, cout: int, stride: tuple[int, int, int]) -> list[torch.nn.Module]:
        return [torch.nn.Conv3d(cin, cout, 3, stride, padding=1), torch.nn.BatchNorm3d(cout), torch.nn.ReLU()]

    return torch.nn.Sequential(*block(3, 16, (1, 2, 2)), *block(16, 32, (2, 2, 2)), *block(32, 64, (2, 2, 2)),
                               torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes))


def rotation_check(scratch: Path, counts: tuple[int, ...] = (100, 300), epochs: int = 30) -> str:
    """Test accuracy of a tiny 3D CNN on the rotation pair alone (16 frames of 32x32) per clips per class."""
    rows = []
    for count in counts:
        root = generate(scratch / f"rotation{count}", videos_per_class=count, size=32,
                        classes=["rotate_clockwise", "rotate_anticlockwise"], progress=False)
        (x, y), (xt, yt) = load_clips(root, "train"), load_clips(root, "test")
        torch.manual_seed(0)
        model = fit(tiny_3d_cnn(2), x, y, epochs, batch_size=16)
        with torch.no_grad():
            accuracy = (model(xt).argmax(1) == yt).float().mean().item()
        rows.append([count, len(y) // 2, len(yt), f"{100 * accuracy:.0f}%"])
    return markdown_table(["clips per class", "train clips per class", "test clips", "test accuracy (chance 50%)"],
                          rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--doc", default="docs/benchmarks.md")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    total = args.videos_per_class * len(DEFAULT_CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        load_before = os.getloadavg()[0]
        render_ms, encode_ms = time_stages(tmp)
        speed_rows = []
        for workers in sorted({1, cpus}):
            seconds, cpu = time_generate(tmp / f"w{workers}", args.videos_per_class, workers)
            speed_rows.append([workers, total, f"{seconds:.1f}", f"{total / seconds:.1f}", f"{cpu:.1f}"])
        size_mb = sum(p.stat().st_size for p in (tmp / "w1").rglob("*.mp4")) / 2**20
        identical = all((tmp / "w1" / p.relative_to(tmp / f"w{cpus}")).read_bytes() == p.read_bytes()
                        for p in (tmp / f"w{cpus}").rglob("*.mp4"))
        load_after = os.getloadavg()[0]
        leakage, num_test = leakage_table(tmp / "w1")
        per_pair = num_test // (len(DEFAULT_CLASSES) // 2)
        epochs = 30
        rotation = rotation_check(tmp, epochs=epochs)
    speed = markdown_table(["workers", "clips", "wall seconds", "clips/s", "CPU seconds"], speed_rows)
    text = f"""Machine: {describe_machine()}, {cpus} CPUs, shared with other jobs (1-minute load average
{load_before:.1f} before, {load_after:.1f} after the run), so treat times as upper bounds.

`generate()` of the default set: {len(DEFAULT_CLASSES)} classes x {args.videos_per_class} clips, 16 frames of
64x64, H.264 intra-only qp 20 ({size_mb:.1f} MiB on disk). Target: 1000 clips in under 2 minutes on 2 cores.

{speed}

Per clip in one process: rendering {render_ms:.1f} ms (numpy), encoding {encode_ms:.1f} ms (PyAV/libx264, with
muxing and the file write). Files from 1 and {cpus} workers byte-identical: {identical}.

Leakage check on that set (train split -> test split). A time-reversed pair has the same single-frame
statistics by construction, so a model that sees only an order-blind summary of a clip must sit at 50%
within pairs; the same model given an order-aware summary separates them. With {num_test} test clips
a pure guess lands within 50% +- {196 * (0.25 / num_test) ** 0.5:.0f}% (95%), and each pair's column
(about {per_pair} clips) within +-{196 * (0.25 / per_pair) ** 0.5:.0f}%:

{leakage}

The hard pair: rotation direction is the sign of a curl in the motion field around an object of random
shape and orientation. A tiny 3D CNN (three conv layers, {epochs} epochs) trained on
`rotate_clockwise` / `rotate_anticlockwise` alone, 16 frames of 32x32, by clips per class:

{rotation}

Reproduce: `python benchmarks/synth_speed.py`."""
    update_doc_section(args.doc, "synth", text, title="Synthetic dataset generation")
    print(text)


if __name__ == "__main__":
    main()
