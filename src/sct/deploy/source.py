"""Frames of a video file or a live source (anything PyAV opens: RTSP/HTTP URL, camera device), as they arrive.

A reader thread demuxes and decodes into a bounded queue; :func:`read_frames` yields ``(time, image)``
from it and ends with a :class:`StreamEnd` saying why: the source ``ended``, ``stalled`` (no frame for
``stall_timeout`` seconds) or ``broke`` (a demux/decode error mid-stream, with its message, or a file whose
frames stop well before the duration its header declares: :func:`truncation`). A file is
read without loss; a live source drops its oldest queued frames when the consumer falls behind.
:class:`Resampler` turns the arriving frames into frames at the model's rate.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sct.errors import VideoDecodeError

QUEUE_FRAMES = 64
# A file whose frames stop more than this many frame periods before the end its header declares was cut short.
MISSING_TAIL_FRAMES = 2


@dataclass
class StreamEnd:
    """Why the frames stopped: ``reason`` is ``ended``, ``stalled`` or ``broke``; ``detail`` says more."""

    reason: str
    detail: str
    frames: int = 0
    dropped: int = 0


def _open(source: str, input_format: str | None, options: dict[str, str]):
    try:
        return av.open(source, format=input_format, options=options, timeout=(30.0, 30.0))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"cannot open stream source {source!r}: {err}") from None


class SourceInfo:
    """What the opened source says about itself: ``fps`` (average, or None) and ``live`` (not a file)."""

    def __init__(self, source: str, stream):
        self.live = not Path(source).is_file()
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = stream.codec_context.width, stream.codec_context.height


class _Reader(threading.Thread):
    def __init__(self, container, stream, live: bool):
        super().__init__(daemon=True)
        self.container, self.stream, self.live = container, stream, live
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.stop = threading.Event()
        self.dropped = 0

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.live:  # live: keep up with the source, lose the oldest queued frame
                    try:
                        self.frames.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def run(self) -> None:
        # The thread owns the container: a stalled source may block it inside a read, where closing the
        # container from another thread would pull the buffers from under it.
        end = StreamEnd("ended", "the source has no more frames")
        shown = 0.0  # seconds up to which decoded frames cover the file
        try:
            for frame in self.container.decode(self.stream):
                if self.stop.is_set():
                    return
                if frame.time is None:
                    continue
                shown = float(frame.time) + (float(frame.duration * frame.time_base) if frame.duration else 0.0)
                self._put((float(frame.time), frame.to_ndarray(format="rgb24")))
            cut = None if self.live else truncation(self.container, self.stream, shown)
            if cut:
                end = StreamEnd("broke", cut)
        except Exception as err:  # noqa: BLE001 - any failure mid-read ends the stream as broken, never silently
            end = StreamEnd("broke", f"{type(err).__name__}: {err}")
        finally:
            self.container.close()
        self._put(end)


def truncation(container, stream, shown: float) -> str | None:
    """Why a file that decoded to its end without an error was cut short, or None: its frames cover it up to
    ``shown`` seconds (the last one's time plus its duration), more than :data:`MISSING_TAIL_FRAMES` frame
    periods before the end its header declares (the video stream's duration, or the container's when the
    video is its only stream). FFmpeg reads a truncated MP4 or Matroska file to the cut and reports a normal
    end."""
    base = stream.time_base
    if stream.duration and base:
        declared = float((stream.duration + (stream.start_time or 0)) * base)
    elif container.duration and len(container.streams) == 1:
        declared = container.duration / av.time_base + float((stream.start_time or 0) * (base or 0))
    else:
        return None
    rate = stream.average_rate or stream.guessed_rate
    period = 1.0 / float(rate) if rate else 0.1
    if declared - shown <= MISSING_TAIL_FRAMES * period:
        return None
    return (f"the file stops at {shown:.2f} s of the {declared:.2f} s its header declares "
            "(truncated or damaged)")


def read_frames(source: str, *, stall_timeout: float = 10.0, input_format: str | None = None,
                options: dict[str, str] | None = None, info: list | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(seconds, uint8 (H, W, 3))`` per decoded frame; returns (StopIteration value) a :class:`StreamEnd`.

    ``info``, when given, receives the :class:`SourceInfo` once the source is open.
    """
    container = _open(source, input_format, options or {})
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"stream source {source!r} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    meta = SourceInfo(source, stream)
    if info is not None:
        info.append(meta)
    reader = _Reader(container, stream, meta.live)
    reader.start()
    count = 0
    try:
        while True:
            wait_start = time.monotonic()
            try:
                item = reader.frames.get(timeout=stall_timeout)
            except queue.Empty:
                waited = time.monotonic() - wait_start
                return StreamEnd("stalled", f"no frame for {waited:.1f} s", count, reader.dropped)
            if isinstance(item, StreamEnd):
                item.frames, item.dropped = count, reader.dropped
                return item
            count += 1
            yield item
    finally:
        reader.stop.set()


class Resampler:
    """Arriving ``(time, frame)`` pairs -> frames at ``rate`` per second: tick k at ``t0 + k / rate`` takes
    the frame on screen then (the latest one at or before the tick), as the clip sampler of the offline
    pipeline picks frames by time."""

    def __init__(self, rate: float):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.period = 1.0 / rate
        self.t0: float | None = None
        self.ticks = 0
        self.held: tuple[float, object] | None = None

    def _tick_time(self) -> float:
        return self.t0 + self.ticks * self.period

    def push(self, t: float, frame) -> list[tuple[int, float, object]]:
        """``[(model frame index, tick time, frame)]`` for the ticks the previous frame covered."""
        out = []
        if self.held is None:
            self.t0 = t
        else:
            # A tick within rounding of a frame's own timestamp is that frame's (timestamps are rationals).
            while self._tick_time() < t - 1e-4 * self.period:
                out.append((self.ticks, self._tick_time(), self.held[1]))
                self.ticks += 1
        self.held = (t, frame)
        return out

    def flush(self, frame_duration: float) -> list[tuple[int, float, object]]:
        """The ticks the last frame covers, taking it on screen for ``frame_duration`` seconds."""
        if self.held is None:
            return []
        return self.push(self.held[0] + frame_duration, self.held[1])
