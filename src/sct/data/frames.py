"""Pre-extracted frame folders (one JPEG/PNG per frame) as a video source.

A folder ``clip/`` holding ``img_00001.jpg, img_00002.jpg, ...`` is read as a video at a nominal frame
rate (``fps``, since image files carry no timestamps); frame ``i`` is on screen during
``[i / fps, (i + 1) / fps)``. It offers the same ``info`` / ``read(times)`` as :class:`VideoReader`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sct.data.decode import VideoInfo, VideoReader
from sct.errors import VideoDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def frame_indices(times: Sequence[float] | np.ndarray, fps: float, count: int) -> np.ndarray:
    """Index of the frame on screen at each of ``times`` (seconds) in a run of ``count`` frames at a
    constant ``fps``, frame ``i`` showing during ``[i / fps, (i + 1) / fps)``; clamped to the run."""
    idx = np.floor(np.asarray(times, dtype=np.float64) * fps + 1e-4).astype(np.int64)
    return np.clip(idx, 0, count - 1)


class FrameFolderReader:
    """Frames of a folder sorted by file name, read at nominal rate ``fps``."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0):
        self.path = str(path)
        folder = Path(path)
        if not folder.is_dir():
            raise VideoDecodeError(f"{self.path}: frame folder not found")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise VideoDecodeError(f"{self.path}: no {'/'.join(IMAGE_SUFFIXES)} frames in folder")
        width, height = self._open(self.files[0]).size
        self.info = VideoInfo(self.path, float(fps), len(self.files) / fps, width, height)

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _open(self, file: Path) -> Image.Image:
        try:
            image = Image.open(file)
            image.load()
        except (OSError, UnidentifiedImageError) as err:
            raise VideoDecodeError(f"{file}: unreadable frame image ({err})") from err
        return image.convert("RGB")

    def read(self, times: Sequence[float]) -> np.ndarray:
        """uint8 ``(T, H, W, 3)``: the frame on screen at each time in ``times`` (seconds)."""
        idx = frame_indices(times, self.info.fps, len(self.files))
        unique, inverse = np.unique(idx, return_inverse=True)
        images = [np.asarray(self._open(self.files[i])) for i in unique]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise VideoDecodeError(f"{self.path}: frames differ in size {sorted(shapes)}")
        return np.stack([images[i] for i in inverse])


def open_video(path: str | os.PathLike, frames_fps: float = 30.0, threads: str = "AUTO"):
    """A reader for ``path``: a frame folder if it is a directory, else a video file (PyAV)."""
    if Path(path).is_dir():
        return FrameFolderReader(path, fps=frames_fps)
    return VideoReader(path, threads=threads)
