"""PyAV decoding: open a video, seek once, decode only the frames a clip needs.

A clip is asked for by presentation time (seconds from the start of the video stream), not by frame
number, so variable-frame-rate files are sampled correctly: the frame returned for time ``t`` is the
one on screen at ``t`` (the last frame whose timestamp is ``<= t``). The reader seeks once, to the
keyframe before the first wanted time, and decodes forward until the last wanted time is covered.

Every call opens its own container, so readers are safe to use from DataLoader workers and threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sct.errors import VideoDecodeError

# Two timestamps closer than this are the same instant (float rounding of rational timestamps).
_TIME_EPS = 1e-4
# A stream may end this much earlier than its header says before we call the file truncated.
_END_TOLERANCE_S = 0.25
_END_TOLERANCE_FRAMES = 4


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about a video stream (seconds; size as coded, before rotation)."""

    path: str
    fps: float
    duration: float
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        """Frames at the average rate: ``round(duration * fps)``."""
        return max(1, round(self.duration * self.fps))


def check_file(path: str | os.PathLike) -> Path:
    """Raise :class:`VideoDecodeError` if ``path`` is missing, not a file, or empty."""
    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(f"{path}: file not found")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    return path


def _rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate ``(H, W, 3)`` counter-clockwise by a multiple of 90 degrees (display-matrix convention)."""
    k = round(degrees / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


class VideoReader:
    """An open video file: ``with VideoReader(path) as r: frames = r.read(times)``.

    ``info`` comes from the container header; ``read`` decodes. Errors of any kind (missing, empty,
    not a media file, no video stream, corrupt packets, a stream much shorter than its header) are
    raised as :class:`VideoDecodeError` naming the path.
    """

    def __init__(self, path: str | os.PathLike, threads: str = "AUTO"):
        self.path = str(check_file(path))
        self.seeks = 0  # counters for tests and benchmarks: seeks and frames decoded so far
        self.decoded = 0
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
            raise VideoDecodeError(f"{self.path}: not a readable media file ({err})") from err
        try:
            self._stream = self._open_stream(threads)
            self.info = self._probe()
        except Exception:
            self._container.close()
            raise

    def _open_stream(self, threads: str) -> av.video.stream.VideoStream:
        fmt = self._container.format.name
        if fmt.endswith("_pipe") or fmt == "image2":
            raise VideoDecodeError(f"{self.path}: a still image ({fmt}), not a video")
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoDecodeError(f"{self.path}: no video stream (streams: {', '.join(kinds)})")
        stream = self._container.streams.video[0]
        stream.thread_type = threads
        return stream

    def _probe(self) -> VideoInfo:
        stream, tb = self._stream, self._stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or not tb:
            raise VideoDecodeError(f"{self.path}: video stream has no frame rate or time base")
        fps = float(rate)
        self._start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        # Only the video stream's own length can call a file truncated: a container's duration (mkv,
        # webm) may include a longer audio track, so a video ending before it is not evidence of damage.
        self._exact_duration = bool(stream.duration or stream.frames)
        if stream.duration:
            duration = float(stream.duration * tb)
        elif stream.frames:
            duration = stream.frames / fps
        elif self._container.duration:
            duration = self._container.duration / 1e6
        else:
            raise VideoDecodeError(f"{self.path}: unknown duration (no stream or container duration)")
        if duration <= 0:
            raise VideoDecodeError(f"{self.path}: video stream has zero duration")
        ctx = stream.codec_context
        return VideoInfo(self.path, fps, duration, ctx.width, ctx.height)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def read(self, times: Sequence[float]) -> np.ndarray:
        """Frames on screen at ``times`` (seconds from stream start), in the order given.

        Returns uint8 ``(T, H, W, 3)`` RGB with the display rotation applied. Decodes each needed frame
        once even when ``times`` repeats (looped short videos).
        """
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or len(times) == 0:
            raise ValueError(f"times must be a non-empty 1-D sequence, got shape {times.shape}")
        wanted, inverse = np.unique(times, return_inverse=True)
        try:
            frames = self._decode_at(wanted)
            rotation = self._rotation(frames[0])
            images = {id(f): _rotate(f.to_ndarray(format="rgb24"), rotation) for f in frames}
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"{self.path}: corrupt video data ({err})") from err
        shapes = {image.shape for image in images.values()}
        if len(shapes) > 1:
            raise VideoDecodeError(f"{self.path}: frame size changes within the clip {sorted(shapes)}")
        return np.stack([images[id(frames[i])] for i in inverse])

    def _decode_at(self, wanted: np.ndarray) -> list[av.VideoFrame]:
        """For each time in sorted ``wanted``, the frame on screen then (one seek, forward decoding)."""
        stream, tb = self._stream, self._stream.time_base
        if wanted[0] > _TIME_EPS:
            self._container.seek(int((wanted[0] + self._start) / tb), stream=stream, backward=True)
            self.seeks += 1
        picked: list[av.VideoFrame] = []
        prev, prev_t = None, 0.0
        for frame in self._container.decode(stream):
            self.decoded += 1
            if frame.pts is None:
                continue
            t = float(frame.pts * tb) - self._start
            while len(picked) < len(wanted) and t > wanted[len(picked)] + _TIME_EPS:
                picked.append(prev if prev is not None else frame)
            if len(picked) == len(wanted):
                return picked
            prev, prev_t = frame, t
            # Stop without decoding another frame once this one stays on screen past the last wanted time.
            if t + self._frame_duration(frame) > wanted[-1] + _TIME_EPS:
                picked += [frame] * (len(wanted) - len(picked))
                return picked
        if prev is None:
            raise VideoDecodeError(f"{self.path}: no decodable video frames")
        missing = wanted[len(picked)]
        tolerance = max(_END_TOLERANCE_S, _END_TOLERANCE_FRAMES / self.info.fps)
        if self._exact_duration and missing - prev_t > tolerance:
            raise VideoDecodeError(
                f"{self.path}: stream ends at {prev_t:.2f}s but the header says {self.info.duration:.2f}s "
                f"(frame at {missing:.2f}s requested): truncated or damaged file")
        return picked + [prev] * (len(wanted) - len(picked))

    def _frame_duration(self, frame: av.VideoFrame) -> float:
        if frame.duration:
            return float(frame.duration * self._stream.time_base)
        return 1.0 / self.info.fps

    def _rotation(self, frame: av.VideoFrame) -> int:
        """Counter-clockwise display rotation: the display matrix, else the legacy ``rotate`` tag (clockwise)."""
        if frame.rotation:
            return int(frame.rotation)
        tag = next((v for k, v in self._stream.metadata.items() if k.lower() == "rotate"), None)
        try:
            return -int(float(tag)) if tag else 0
        except ValueError:
            return 0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Header information of the first video stream (no decoding)."""
    with VideoReader(path) as reader:
        return reader.info


def decode_frames(path: str | os.PathLike, times: Sequence[float]) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames on screen at ``times`` seconds (see :meth:`VideoReader.read`)."""
    with VideoReader(path) as reader:
        return reader.read(times)
