"""PyAV decoding: open a video, seek once, decode only the frames a clip needs.

A clip is asked for by presentation time (seconds from the start of the video stream), not by frame
number, so variable-frame-rate files are sampled correctly: the frame returned for time ``t`` is the
one a player shows at ``t``: the last frame, in display order, whose presentation timestamp minus the
stream's start time is ``<= t`` (edit lists are applied by the demuxer). The reader seeks to the
keyframe before the first wanted time (retrying further back when the demuxer lands after it), decodes
forward, and stops at the first frame shown after the last wanted time; frame durations are never
trusted, since with B-frames they are the coded duration, not the display one.

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
# How far before the first wanted time a seek aims, in turn, until it lands on a keyframe shown no later
# than that time; after the last, the file is decoded from its start.
_SEEK_BACKOFF_S = (0.0, 1.0, 10.0)


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
        self._threads = threads
        self._container = self._open_container()
        try:
            self._stream = self._open_stream()
            self.info = self._probe()
        except Exception:
            self._container.close()
            raise

    def _open_container(self) -> av.container.InputContainer:
        try:
            return av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
            raise VideoDecodeError(f"{self.path}: not a readable media file ({err})") from err

    def _open_stream(self) -> av.video.stream.VideoStream:
        fmt = self._container.format.name
        if fmt.endswith("_pipe") or fmt == "image2":
            raise VideoDecodeError(f"{self.path}: a still image ({fmt}), not a video")
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoDecodeError(f"{self.path}: no video stream (streams: {', '.join(kinds)})")
        stream = self._container.streams.video[0]
        if stream.codec_context is None:
            raise VideoDecodeError(f"{self.path}: no decoder for the video stream (codec unknown or damaged header)")
        stream.thread_type = self._threads
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
        """For each time in sorted ``wanted``, the frame on screen then: the last frame in display order
        whose presentation time is ``<= t`` (the first frame for a time before it).

        A seek lands on a keyframe chosen by the demuxer, which may come *after* the target (indexes kept
        by decode time, B-frame delay) or be preceded by leading pictures that need the previous GOP (open
        GOP); such a landing is detected and the seek retried further back, and as a last resort the file
        is decoded from its start.
        """
        for back in _SEEK_BACKOFF_S:
            target = wanted[0] - back
            if target <= _TIME_EPS:
                break
            self._container.seek(int((target + self._start) / self._stream.time_base), stream=self._stream,
                                 backward=True)
            self.seeks += 1
            picked = self._scan(wanted, after_seek=True)
            if picked is not None:
                return picked
        if self.seeks or self.decoded:
            self._reopen()
        return self._scan(wanted, after_seek=False)

    def _scan(self, wanted: np.ndarray, after_seek: bool) -> list[av.VideoFrame] | None:
        """Decode forward from the current position and pick the frames for ``wanted``.

        After a seek, frames before the first keyframe are skipped, and None is returned when that keyframe
        is shown later than ``wanted[0]`` (or never comes): the caller seeks further back. Decoding stops
        at the first frame shown after the last wanted time; a frame is known to be the one on screen
        at ``t`` only once the next frame's time is seen, since a frame's ``duration`` is the coded
        duration, not the display one, in streams with B-frames.
        """
        picked: list[av.VideoFrame] = []
        prev, prev_t, started = None, -1.0 / self.info.fps, not after_seek
        for frame in self._container.decode(self._stream):
            self.decoded += 1
            if not started:
                if frame.pts is None or not frame.key_frame:
                    continue  # leading pictures of an open GOP, or frames the seek left half-decoded
                if self._time(frame, prev_t) > wanted[0] + _TIME_EPS:
                    return None
                started = True
            t = self._time(frame, prev_t)
            while len(picked) < len(wanted) and t > wanted[len(picked)] + _TIME_EPS:
                picked.append(prev if prev is not None else frame)
            if len(picked) == len(wanted):
                return picked
            prev, prev_t = frame, t
        if prev is None:
            if after_seek:
                return None
            raise VideoDecodeError(f"{self.path}: no decodable video frames")
        missing = wanted[len(picked)]
        tolerance = max(_END_TOLERANCE_S, _END_TOLERANCE_FRAMES / self.info.fps)
        if self._exact_duration and missing - prev_t > tolerance:
            raise VideoDecodeError(
                f"{self.path}: stream ends at {prev_t:.2f}s but the header says {self.info.duration:.2f}s "
                f"(frame at {missing:.2f}s requested): truncated or damaged file")
        return picked + [prev] * (len(wanted) - len(picked))

    def _time(self, frame: av.VideoFrame, prev_t: float) -> float:
        """Seconds from the stream start at which ``frame`` is shown; a frame without a timestamp (the last
        one of an AVI with packed B-frames) follows the previous one by a frame period, as players do."""
        if frame.pts is None:
            return prev_t + 1.0 / self.info.fps
        return float(frame.pts * self._stream.time_base) - self._start

    def _reopen(self) -> None:
        """Start again at the first packet: seeking to the start is as unreliable as any other seek."""
        self._container.close()
        self._container = self._open_container()
        self._stream = self._open_stream()

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
