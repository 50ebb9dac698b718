"""Damaged files through decoding, `sct train` and `sct eval`: every bad file reported, nothing crashes.

Files are cut at random offsets, have random bytes flipped or overwritten, or splice one container's
head onto another's body, starting from real videos of several codecs and containers. The default suite
runs a few dozen; ``-m slow`` runs a few hundred (see docs/reliability.md for the recorded result).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import index_frame
from engine_support import run_overrides, run_sct
from sct.data.decode import VideoReader
from sct.data.sampling import ClipSampler
from sct.errors import VideoDecodeError

# (file suffix, codec, pixel format): what the pipeline accepts, written by PyAV so no other tool is needed
SOURCES = (
    (".mp4", "libx264", "yuv420p"),
    (".mkv", "libx264", "yuv420p"),
    (".avi", "mpeg4", "yuv420p"),
    (".avi", "mjpeg", "yuvj420p"),
    (".webm", "libvpx-vp9", "yuv420p"),
    (".mpg", "mpeg2video", "yuv420p"),
)
FRAMES, SIZE = 8, 32


def _source(path: Path, codec: str, pix_fmt: str, num_frames: int = 30) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 48, 32, pix_fmt
        if codec == "libx264":
            stream.options = {"g": "8", "bf": "2"}
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_frame(i, 48, 32), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _damage(data: bytes, other: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random kind of damage to ``data`` (``other``: another container's bytes, for splices)."""
    kind = rng.choice(["truncate", "flip", "overwrite", "splice"])
    if kind == "truncate":
        return kind, data[: int(rng.integers(0, len(data)))]
    damaged = bytearray(data)
    if kind == "flip":
        for at in rng.integers(0, len(data), size=int(rng.integers(1, 24))):
            damaged[at] ^= int(rng.integers(1, 256))
    elif kind == "overwrite":
        at, length = int(rng.integers(0, len(data))), int(rng.integers(16, 512))
        damaged[at: at + length] = rng.bytes(len(damaged[at: at + length]))
    else:
        cut = int(rng.integers(16, min(len(data), len(other)) - 16))
        damaged = bytearray(data[:cut] + other[cut:])
    return kind, bytes(damaged)


def make_damaged_files(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` damaged copies of the :data:`SOURCES` videos in ``folder`` (each keeps its source's suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [_source(folder / f"source{k}{suffix}", codec, fmt).read_bytes()
               for k, (suffix, codec, fmt) in enumerate(SOURCES)]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        k = i % len(SOURCES)
        kind, data = _damage(sources[k], sources[(k + 1 + i // len(SOURCES)) % len(SOURCES)], rng)
        files.append(folder / f"{i:04d}_{kind}{SOURCES[k][0]}")
        files[-1].write_bytes(data)
    return files


def _decode_outcome(path: Path, sampler: ClipSampler) -> str | None:
    """None when the centre view decodes, else the error; anything but VideoDecodeError fails the test."""
    try:
        with VideoReader(path) as reader:
            reader.read(sampler.view_times(reader.info.duration, reader.info.fps, 0, 1))
    except VideoDecodeError as err:
        assert str(path) in str(err)
        return str(err)
    return None


def _unopenable(path: Path) -> bool:
    try:
        VideoReader(path).close()
    except VideoDecodeError:
        return True
    return False


def _fuzz(tmp_path: Path, count: int) -> dict:
    files = make_damaged_files(tmp_path / "videos", count)
    outcomes = {str(p): _decode_outcome(p, ClipSampler(FRAMES, 1)) for p in files}
    rows = "".join(f"{p},{'ab'[i % 2]}\n" for i, p in enumerate(files))
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("path,label\n" + rows)
    settings = run_overrides(tmp_path, tmp_path / "run", "train.epochs=1", "train.eval_every_epochs=0",
                             f"train.batch_size={2 if count % 4 else 4}", "data.max_bad_fraction=1",
                             "data.max_replacements=50")
    train = run_sct("train", *settings, timeout=1200)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    trained_bad = {path for path, _ in summary["bad_files"]}
    assert trained_bad <= set(outcomes), "reported files are the damaged files"
    # Training reads random times, but a file that does not even open is bad wherever it is read.
    assert {str(p) for p in files if _unopenable(p)} <= trained_bad

    evaluation = run_sct("eval", "--checkpoint", str(tmp_path / "run" / "model.safetensors"), "--views", "1x1",
                         "--output", str(tmp_path / "eval"), "data.max_bad_fraction=1", timeout=1200)
    assert evaluation.returncode == 0, evaluation.stdout[-2000:] + evaluation.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    failed = {path for path, error in outcomes.items() if error is not None}
    assert result["num_videos"] == count
    assert {path for path, _ in result["bad_files"]} == failed, "eval reports exactly the files that fail to decode"
    assert result["num_failed"] == len(failed)
    return {"files": count, "decode_failed": len(failed), "train_bad": len(trained_bad),
            "eval_failed": result["num_failed"]}


def test_damaged_files_are_reported_and_nothing_crashes(tmp_path):
    stats = _fuzz(tmp_path, 48)
    assert 0 < stats["decode_failed"] < 48, "the damage mixes files that still decode with files that do not"


@pytest.mark.slow
def test_damaged_files_at_scale(tmp_path):
    print(_fuzz(tmp_path, 400))
