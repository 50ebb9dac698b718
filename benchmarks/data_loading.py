"""Loader speed: decode + sample + augment clips/s, and its ratio to SCT-S's training-step rate.

Writes the ``data_loading`` section of docs/benchmarks.md. Run: ``python benchmarks/data_loading.py``
(``--quick`` for a short smoke run that writes nothing).

What is measured, all in one run on this machine:
- decode only: one 24-frame clip at stride 8 from a 320x240 / 640x480 H.264 file, seeking once to
  the keyframe before the clip (our reader) versus seeking once per frame (the naive way);
- decode + sample + augment (train transform: scale jitter 256-320, random 224 crop, flip, normalise)
  through a DataLoader with 0, 1 and 2 workers, in clips/s;
- one SCT-S training step (forward, backward, SGD update) at batch 1, 24 x 224 x 224, if
  ``sct.create_model("sct_s")`` exists; the ratio loader clips/s / training samples/s says how many
  times faster than the model the loader produces clips (>= 1: the loader keeps up).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.data.datasets import DataConfig, build_dataset, collate
from sct.data.decode import VideoReader

NUM_FRAMES, STRIDE, CROP = 24, 8, 224
SIZES = ((320, 240), (640, 480))
FPS, SECONDS, GOP = 30, 10, 60  # a Kinetics-like 10 s clip with a keyframe every 2 s


def write_test_video(path: Path, width: int, height: int, seed: int) -> Path:
    """A 10 s, 30 fps H.264 video of moving textured content (so the bit rate is video-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 60, (height, width, 1), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(GOP), "preset": "medium", "crf": "23"}
        for i in range(FPS * SECONDS):
            phase = i / FPS
            base = np.stack([128 + 100 * np.sin(xx / 40 + phase), 128 + 100 * np.cos(yy / 30 - 2 * phase),
                             128 + 100 * np.sin((xx + yy) / 60 + 3 * phase)], axis=-1)
            frame = np.clip(base, 0, 195).astype(np.uint8) + texture
            x0, y0 = int((i * 5) % (width - 60)), int(height / 2 + height / 4 * np.sin(phase * 2))
            frame[max(y0 - 30, 0):y0 + 30, x0:x0 + 60] = (240, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _clip_times(rng: np.random.Generator) -> np.ndarray:
    span = NUM_FRAMES * STRIDE / FPS
    return rng.uniform(0, SECONDS - span) + np.arange(NUM_FRAMES) * STRIDE / FPS


def time_decode(path: Path, repeats: int, per_frame_seek: bool, threads: str) -> tuple[float, float, float]:
    """Median and best ms per 24-frame clip, and mean frames decoded per clip."""
    rng = np.random.default_rng(0)
    times_ms, decoded = [], []
    for _ in range(repeats):
        times = _clip_times(rng)
        t0 = time.perf_counter()
        with VideoReader(path, threads=threads) as reader:
            if per_frame_seek:
                for t in times:
                    reader.read([t])
            else:
                reader.read(times)
        times_ms.append((time.perf_counter() - t0) * 1e3)
        decoded.append(reader.decoded)
    return statistics.median(times_ms), min(times_ms), float(np.mean(decoded))


def loader_rate(root: Path, csv_name: str, workers: int, clips: int) -> float:
    """Train clips/s through a DataLoader (batch 1) with ``workers`` worker processes.

    The clock starts before the workers do and stops at the ``clips``-th clip, so prefetching cannot
    flatter the rate; worker start-up (a fork, ~0.1 s) is included.
    """
    cfg = DataConfig(root=str(root), train=csv_name, format="csv", num_frames=NUM_FRAMES, sampling_rate=STRIDE,
                     crop_size=CROP)
    dataset = build_dataset(cfg, "train")
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=clips,
                                             generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers, collate_fn=collate)
    t0 = time.perf_counter()
    n = sum(int(batch["ok"].sum()) for batch in loader)
    return n / (time.perf_counter() - t0)


def sct_s_step_seconds(steps: int, device: str) -> float | None:
    """Seconds per SCT-S training step at batch 1 (24 x 224 x 224) on ``device``, or None if sct_s is missing."""
    import sct

    if "sct_s" not in sct.list_models():
        return None
    torch.manual_seed(0)
    model = sct.create_model("sct_s", num_classes=400, num_frames=NUM_FRAMES, img_size=CROP).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(1, 3, NUM_FRAMES, CROP, CROP, device=device), torch.tensor([3], device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()

    if device != "cpu":
        step()  # warm-up (CUDA context, kernels); on a CPU one step of ~1 min dwarfs first-call overheads
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, no doc update")
    parser.add_argument("--videos", type=int, default=4, help="distinct videos per resolution")
    parser.add_argument("--clips", type=int, default=40, help="clips timed per loader setting")
    parser.add_argument("--steps", type=int, default=1, help="SCT-S training steps timed")
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the SCT-S training step runs (the loader always runs on the CPU)")
    args = parser.parse_args()
    repeats, clips, steps = (3, 6, 1) if args.quick else (15, args.clips, args.steps)

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        decode_rows, loader_rows, rates = [], [], {}
        for w, h in SIZES:
            paths = [write_test_video(root / f"v{w}x{h}_{i}.mp4", w, h, seed=i) for i in range(args.videos)]
            name = f"{w}x{h}.csv"
            with open(root / name, "w", newline="") as f:
                csv.writer(f).writerows([("path", "label")] + [(p.name, "a") for p in paths])
            for threads in ("AUTO", "NONE"):
                once_ms, once_best, once_frames = time_decode(paths[0], repeats, False, threads)
                each_ms, each_best, each_frames = time_decode(paths[0], max(repeats // 3, 1), True, threads)
                decode_rows.append([f"{w}x{h}", threads, f"{once_ms:.0f} ({once_best:.0f})", f"{once_frames:.0f}",
                                    f"{each_ms:.0f} ({each_best:.0f})", f"{each_frames:.0f}",
                                    f"{each_ms / once_ms:.1f}x"])
                print(decode_rows[-1], flush=True)
            for workers in (0, 1, 2):
                rates[(w, h, workers)] = loader_rate(root, name, workers, clips)
                print(f"{w}x{h} workers={workers}: {rates[(w, h, workers)]:.2f} clips/s", flush=True)

    step_s = sct_s_step_seconds(steps, args.device)
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"SCT-S training step (batch 1): {step_s if step_s is None else f'{step_s:.2f} s'}", flush=True)
    for (w, h, workers), rate in rates.items():
        ratio = "n/a (sct_s not registered)" if step_s is None else f"{rate * step_s:.1f}"
        loader_rows.append([f"{w}x{h}", workers, f"{rate:.2f}", f"{1e3 / rate:.0f}", ratio])

    step_text = ("SCT-S is not registered yet: rerun this script for the ratio column." if step_s is None else
                 f"One SCT-S training step on {args.device} (forward + backward + SGD, batch 1, "
                 f"{NUM_FRAMES}x{CROP}x{CROP}) takes "
                 f"**{step_s:.3g} s** here, i.e. {1 / step_s:.3g} samples/s.")
    markdown = "\n\n".join([
        f"`python benchmarks/data_loading.py` on {describe_machine()}. Test videos: H.264 (libx264 crf 23, "
        f"keyframe every {GOP} frames), {SECONDS} s at {FPS} fps. Clip: {NUM_FRAMES} frames at stride {STRIDE} "
        f"(a {NUM_FRAMES * STRIDE / FPS:.1f} s span at a random start). 1-minute load average of the machine: "
        f"{load} ({os.cpu_count()} cores; other jobs running at the same time slow every number here).",
        f"**Decode only** (median ms per clip over {repeats} clips, {max(repeats // 3, 1)} for seek per frame; "
        "best in brackets, the number least "
        "disturbed by other jobs; `threads` = PyAV `thread_type`; frames decoded include those between the "
        "keyframe and the clip start):",
        markdown_table(["video", "threads", "one seek: ms", "frames decoded", "seek per frame: ms",
                        "frames decoded", "slow-down"], decode_rows),
        f"**Decode + sample + augment** (train transform: scale jitter 256-320, random {CROP} crop, flip, "
        f"normalise; DataLoader batch 1, {clips} clips, worker start-up included):",
        markdown_table(["video", "workers", "clips/s", "ms/clip", "loader / SCT-S step rate"], loader_rows),
        step_text + " The ratio is loader clips/s x step seconds: above 1 the loader keeps up with training "
        "on this machine; a GPU makes the step far faster, so plan workers from the clips/s column "
        "(clips/s scales with worker processes up to the number of cores).",
    ])
    if args.quick:
        print(markdown)
    else:
        update_doc_section(args.doc, "data_loading", markdown, title="Data loading")
        print(f"wrote the data_loading section of {args.doc}")


if __name__ == "__main__":
    main()
