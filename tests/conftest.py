"""Shared fixtures: real H.264 files written with PyAV, with frames that say which frame they are."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sct.data.reference_videos import frame_index, index_frame  # noqa: F401  (the tests' helpers)


def write_video(path: Path, num_frames: int = 30, width: int = 64, height: int = 48, fps: int = 10,
                times: list[float] | None = None, rotation: int = 0, gop: int = 12, frames=None) -> Path:
    """Write an H.264 ``.mp4`` whose frame ``i`` is ``index_frame(i)`` (or ``frames[i]``).

    ``times`` (seconds) gives each frame its own timestamp (variable frame rate); ``rotation`` sets the
    display matrix (counter-clockwise degrees).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "preset": "ultrafast", "crf": "10"}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            image = frames[i] if frames is not None else index_frame(i, width, height)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An ``.mp4`` holding only an AAC audio stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        for start in range(0, samples, 1024):
            n = min(1024, samples - start)
            wave = np.sin(np.arange(start, start + n) / 10.0).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def video_factory(tmp_path):
    """``video_factory(name, **write_video kwargs) -> Path`` under a per-test folder."""
    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_video(tmp_path / name, **kwargs)

    return make
