"""Shared pieces of the engine tests: a tiny real synthetic video set and a small ``sct_tiny``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from sct.config import load_config
from sct.data.synthetic import generate

CLASSES = ["move_right", "move_left", "grow"]
FRAMES, SIZE = 8, 32
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# sct_tiny made smaller still so a training step takes tens of milliseconds on one core.
SMALL_MODEL = [
    "model.name=sct_tiny", "model.embed_dim=16", "model.clip_dim=32", "model.clip_mlp_dim=64",
    "model.heads=[1, 1, 1, 1]",
]


def synthetic_set(base: Path, videos_per_class: int = 6) -> Path:
    """Real H.264 clips: 3 classes x ``videos_per_class`` (70/15/15 split), 8 frames of 32 x 32."""
    return generate(base / f"synth{videos_per_class}", videos_per_class=videos_per_class, seed=0, num_frames=FRAMES,
                    size=SIZE, classes=CLASSES, workers=1, progress=False)


def run_overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a fast run: the small model, whole-video clips, 4 clips per step, one process."""
    return [
        *SMALL_MODEL, f"data.root={data_root}", f"output_dir={out}", f"data.num_frames={FRAMES}",
        f"data.crop_size={SIZE}", "data.sampling_rate=1", "data.flip=false", "train.batch_size=4",
        "train.num_workers=0", "train.epochs=2", "optim.lr=0.01", "optim.warmup_epochs=0.5",
        "eval.batch_size=6", "eval.num_workers=0", "eval.views=2x3", *extra,
    ]


def tiny_config(data_root: Path, out: Path, *extra: str):
    return load_config(None, run_overrides(data_root, out, *extra))


def subprocess_env() -> dict[str, str]:
    """One intra-op thread per process: the tests run next to each other on a small machine."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sct_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "sct"), *args]


def run_sct(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(sct_command(*args), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def write_shard(path: Path, samples: list[tuple[str, bytes]]) -> Path:
    """A tar shard holding ``(member name, bytes)`` in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
