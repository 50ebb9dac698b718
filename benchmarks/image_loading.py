"""Image pipeline speed: loader images/s per worker (folder vs tar shards) and sct_s_image's training step.

Writes the ``image_loading`` section of docs/benchmarks.md and docs/image_bench.json. Run:
``python benchmarks/image_loading.py`` (``--quick``: a smoke run that writes nothing).

All in one run, interleaved (folder, shards, folder, shards, ...) so that the machine's load hits both:
- an ImageNet-like set: 500x375 JPEGs (quality 90, the synthetic renderer's pictures plus sensor-like
  noise) written as ``class/img.jpg`` files and as WebDataset shards of the same images, flushed to disk;
- per-worker loader rate (one process, no loader workers): bytes only (open + read a file vs the shard
  stream's reader, :func:`sct.data.shards.read_members`), and full training items (decode with JPEG draft
  mode, random resized crop 224, flip, RandAugment 2/9, normalise, random erasing) from the folder in a
  shuffled order vs the shard stream; each with the page cache warm and cold (every file's cached pages
  dropped with ``posix_fadvise(DONTNEED)`` after the dataset is indexed and before the timed reads);
- one training step (forward + backward + AdamW) of ``sct_s_image`` and of ViT-B/16 (``vit_b16_frames`` at
  T = 1, the same encoder as the image ViT) at 224, batch 2, one thread: the images/s one core trains at,
  so ``loader images/s per core / step images/s per core`` says how many times over one core's loader
  feeds one core's training.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sct
from sct.analysis.bench import median_seconds, training_step
from sct.analysis.hardware import describe_machine
from sct.analysis.report import markdown_table, update_doc_section
from sct.data.datasets import DataConfig, build_dataset
from sct.data.shards import index_shards, read_members
from sct.data.synthetic import clip_rng
from sct.data.synthetic_images import IMAGE_CLASSES, render_image

ROOT = Path(__file__).resolve().parents[1]
SHARD_SIZE = 100
# Small against the timed reads, so that filling it (once per epoch and worker) does not dominate them.
SHUFFLE_BUFFER = 20


def write_set(root: Path, classes: int, per_class: int) -> None:
    """``root/train/<class>/<i>.jpg`` and ``root/shards/train-NNNNNN.tar`` holding the same JPEGs."""
    samples = []
    for label, name in enumerate(IMAGE_CLASSES[:classes]):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = clip_rng(1, name, i)
            small = Image.fromarray(render_image(name, rng, size=128)).resize((500, 375), Image.BICUBIC)
            noisy = np.asarray(small, np.float32) + rng.normal(0, 12, (375, 500, 3))
            buffer = io.BytesIO()
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
            write_flushed(root / "train" / name / f"{i}.jpg", buffer.getvalue())
            samples.append((buffer.getvalue(), label))
    (root / "classes.txt").write_text("".join(c + "\n" for c in IMAGE_CLASSES[:classes]))
    (root / "shards").mkdir(exist_ok=True)
    order = np.random.default_rng(0).permutation(len(samples))
    for shard, first in enumerate(range(0, len(samples), SHARD_SIZE)):
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
            for key in order[first:first + SHARD_SIZE]:
                for suffix, data in ((".jpg", samples[key][0]), (".cls", f"{samples[key][1]}\n".encode())):
                    info = tarfile.TarInfo(f"{int(key):06d}{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        write_flushed(root / "shards" / f"train-{shard:06d}.tar", tar_bytes.getvalue())


def write_flushed(path: Path, data: bytes) -> None:
    """Write and fsync: only pages already on disk can be dropped from the cache for a cold read."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def drop_cache(root: Path) -> None:
    """Drop the cached pages of every image file and shard under ``root`` (the directory entries stay)."""
    for path in [*(root / "train").glob("*/*.jpg"), *(root / "shards").glob("*.tar")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def data_config(root: Path, fmt: str) -> DataConfig:
    shards = len(list((root / "shards").glob("train-*.tar")))
    train = "train" if fmt == "imagefolder" else f"shards/train-{{000000..{shards - 1:06d}}}.tar"
    return DataConfig(root=str(root), format=fmt, train=train, crop_size=224, train_crop="resized",
                      randaugment=(2, 9), random_erasing=0.25, shuffle_buffer=SHUFFLE_BUFFER)


def items_per_s(root: Path, fmt: str, n: int, epoch: int, cold: bool) -> float:
    dataset = build_dataset(data_config(root, fmt), "train")
    dataset.set_epoch(epoch)
    if cold:
        drop_cache(root)
    start = time.perf_counter()
    if fmt == "imagefolder":
        order = np.random.default_rng(epoch).permutation(len(dataset))[:n]
        for i in order:
            dataset[int(i)]
    else:
        for _, _ in zip(range(n), iter(dataset)):
            pass
    return n / (time.perf_counter() - start)


def bytes_per_s(root: Path, fmt: str, n: int, epoch: int, cold: bool) -> float:
    """Images/s of reading the encoded bytes only: open + read per file, or the shard stream's reader."""
    if fmt == "imagefolder":
        files = sorted((root / "train").glob("*/*.jpg"))
        chosen = [files[int(i)] for i in np.random.default_rng(epoch).permutation(len(files))[:n]]
    else:
        # As the shard stream reads: the shards' index (built once per run, outside the timing), then the
        # members of shards in the epoch's order, each shard front to back.
        shards = index_shards(data_config(root, "shards").train, root, 1000)
        order = np.random.default_rng(epoch).permutation(len(shards))
        members = [m for s in order for m in shards[s]][:n]
    if cold:
        drop_cache(root)
    start = time.perf_counter()
    if fmt == "imagefolder":
        for path in chosen:
            path.read_bytes()
    else:
        for _ in read_members(members):
            pass
    return n / (time.perf_counter() - start)


def step_images_per_s(name: str, steps: int, batch: int = 2) -> float:
    extra = {"num_frames": 1} if name == "vit_b16_frames" else {}
    model = sct.create_model(name, num_classes=1000, img_size=224, **extra)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224) if name.endswith("_image") else torch.randn(batch, 3, 1, 224, 224)
    labels = torch.randint(1000, (batch,))
    return batch / median_seconds(training_step(model, optimizer, x, labels), steps, warmup=1)


def paired_ratios(rates: dict[str, list[float]], row: str) -> str:
    """Shards / folder of each round (measured back to back, so under the same load): median (min-max)."""
    ratios = [s / f for s, f in zip(rates[f"{row} shards"], rates[f"{row} imagefolder"])]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    classes, per_class, n, rounds, steps = (4, 10, 20, 1, 1) if args.quick else (8, 50, 200, 5, 1)
    load_before = open("/proc/loadavg").read().split()[0]
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as tmp:
        root = Path(tmp)
        write_set(root, classes, per_class)
        mean_kb = np.mean([p.stat().st_size for p in (root / "train").glob("*/*.jpg")]) / 1024
        rates: dict[str, list[float]] = {}
        for r in range(rounds):
            for kind, measure in (("bytes", bytes_per_s), ("items", items_per_s)):
                for cache in ("warm", "cold"):
                    for fmt in ("imagefolder", "shards"):
                        rates.setdefault(f"{kind} {cache} {fmt}", []).append(measure(root, fmt, n, r, cache == "cold"))
    steps_rate = {name: step_images_per_s(name, steps) for name in ("sct_s_image", "vit_b16_frames")}
    load_after = open("/proc/loadavg").read().split()[0]
    best = {key: max(values) for key, values in rates.items()}
    result = {"rates": rates, "best": best, "step_images_per_s": steps_rate, "mean_jpeg_kb": mean_kb,
              "images": classes * per_class, "load": [load_before, load_after]}
    print(json.dumps(result, indent=2))
    if args.quick:
        return
    (ROOT / "docs" / "image_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    feed = steps_rate["sct_s_image"]
    labels = {"bytes": "bytes only (open + read / shard reader)",
              "items": "train items (draft decode, RRC 224, flip, RandAugment 2/9, erasing)"}
    rows = [[f"{labels[kind]}, cache {cache}", f"{best[f'{kind} {cache} imagefolder']:.0f}",
             f"{best[f'{kind} {cache} shards']:.0f}", paired_ratios(rates, f"{kind} {cache}")]
            for kind in ("bytes", "items") for cache in ("warm", "cold")]
    worst = [min(best[f"items {c} {fmt}"] for c in ("warm", "cold")) for fmt in ("imagefolder", "shards")]
    markdown = "\n\n".join([
        f"`python benchmarks/image_loading.py` on {describe_machine()}, one thread per process. "
        f"{classes * per_class} ImageNet-like JPEGs (500x375, quality 90, {mean_kb:.0f} KB on average) as "
        f"class folders and as shards of {SHARD_SIZE} (the shard stream's buffer holds {SHUFFLE_BUFFER}); best "
        f"of {rounds} interleaved rounds of {n} images. Cold: every file's pages dropped from the page cache "
        "(`posix_fadvise(DONTNEED)`) after indexing, before the timed reads; directory entries and inodes stay "
        "cached, and the virtual disk's host may still cache the blocks, so cold here is a lower bound of a "
        f"shared file system's cost. 1-minute load average {load_before} at the start, {load_after} at the end "
        "(2 cores shared with other jobs).",
        markdown_table(["per worker, images/s (best round)", "folder", "shards",
                        "shards / folder: median of the rounds (range)"], rows),
        markdown_table(["training step at 224 (batch 2, AdamW, 1 thread)", "images/s per core"],
                       [[name, f"{rate:.2f}"] for name, rate in steps_rate.items()]),
        f"One loader core makes at least **{worst[0]:.0f}** (folder) / **{worst[1]:.0f}** (shards) training "
        f"images/s; one core trains `sct_s_image` at {feed:.2f} images/s, so one loader core feeds "
        f"**{worst[1] / feed:.0f}x** what one training core consumes (target >= 2x).",
    ])
    update_doc_section(args.doc, "image_loading", markdown, title="Image loading and the image training step")


if __name__ == "__main__":
    main()
