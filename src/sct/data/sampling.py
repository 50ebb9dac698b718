"""Which instants of a video make a clip: fixed-rate clips (:class:`ClipSampler`) or segments
(:class:`SegmentSampler`, ``data.sampling: segment``).

Times, not frame numbers, are returned, so the decoder can pick frames by timestamp (variable frame
rate works). Every sampler's times are in increasing order within a clip (loops aside), so the reader
decodes a clip with one seek.

**Clips** (PySlowFast's ``num_frames`` x ``sampling_rate`` at ``target_fps``). A clip is ``num_frames``
frames, ``sampling_rate`` frames apart, counted at ``target_fps`` (or at the video's own rate when
``target_fps`` is None). In seconds the gap between clip frames is
``sampling_rate / fps`` and the clip spans ``num_frames * sampling_rate / fps``.

- training: the start is uniform in ``[0, duration - span]`` (PySlowFast's random clip);
- testing: ``num_views`` starts evenly spaced over ``[0, duration - span]``, the first at the beginning
  and the last at the end (one view: the centre clip).

A video shorter than a clip is either looped (``short_video="loop"``: time wraps around to the
start) or its last frame repeated (``"repeat"``: PySlowFast's clamping).

**Segments** (TSN; the Something-Something and Diving48 recipes of TSM, X-ViT, TimeSformer, MViT and
VideoMAE). The whole video is cut into ``num_frames`` equal segments and each gives one frame, so a clip
always covers the whole video whatever its length:

- training: a uniformly random instant in each segment, drawn independently per segment;
- testing: view ``v`` of ``n`` takes the instant ``(v + 1/2) / n`` of the way through each segment (one
  view: the middle of each segment, TSN's test sampling; two views: the quarter and three-quarter points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sct.errors import ConfigError

SHORT_VIDEO_MODES = ("loop", "repeat")
SAMPLINGS = ("clip", "segment")


@dataclass(frozen=True)
class ClipSampler:
    """Clip timing; see the module docstring for the semantics of each field."""

    num_frames: int = 16
    sampling_rate: int = 4
    target_fps: float | None = None
    short_video: str = "loop"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.sampling_rate < 1:
            raise ConfigError(f"sampling_rate must be >= 1, got {self.sampling_rate}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise ConfigError(f"target_fps must be > 0 or None, got {self.target_fps}")
        if self.short_video not in SHORT_VIDEO_MODES:
            raise ConfigError(f"short_video must be one of {SHORT_VIDEO_MODES}, got {self.short_video!r}")

    def step(self, video_fps: float) -> float:
        """Seconds between consecutive clip frames."""
        return self.sampling_rate / (self.target_fps or video_fps)

    def span(self, video_fps: float) -> float:
        """Seconds covered by one clip (``num_frames`` gaps of :meth:`step`)."""
        return self.num_frames * self.step(video_fps)

    def _times_from(self, start: float, duration: float, video_fps: float) -> np.ndarray:
        times = start + np.arange(self.num_frames) * self.step(video_fps)
        if self.short_video == "loop":
            times = np.mod(times, duration)
        # The last frame is on screen until `duration`; stay strictly inside the video.
        return np.clip(times, 0.0, np.nextafter(duration, 0.0))

    def train_times(self, duration: float, video_fps: float, rng: np.random.Generator) -> np.ndarray:
        """``(num_frames,)`` seconds of a clip with a uniformly random start."""
        slack = max(duration - self.span(video_fps), 0.0)
        return self._times_from(rng.uniform(0.0, slack), duration, video_fps)

    def view_times(self, duration: float, video_fps: float, view: int, num_views: int) -> np.ndarray:
        """``(num_frames,)`` seconds of test view ``view`` of ``num_views`` evenly spaced clips."""
        _check_view(view, num_views)
        slack = max(duration - self.span(video_fps), 0.0)
        start = slack / 2 if num_views == 1 else slack * view / (num_views - 1)
        return self._times_from(start, duration, video_fps)


@dataclass(frozen=True)
class SegmentSampler:
    """One frame from each of ``num_frames`` equal segments of the whole video (see the module docstring)."""

    num_frames: int = 8

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")

    def _times_at(self, duration: float, offsets: np.ndarray | float) -> np.ndarray:
        """Instants ``offsets`` (fractions in [0, 1)) of the way through each segment."""
        times = (np.arange(self.num_frames) + offsets) * (duration / self.num_frames)
        return np.clip(times, 0.0, np.nextafter(duration, 0.0))

    def train_times(self, duration: float, video_fps: float, rng: np.random.Generator) -> np.ndarray:
        """``(num_frames,)`` seconds: a uniformly random instant in each segment."""
        return self._times_at(duration, rng.uniform(0.0, 1.0, self.num_frames))

    def view_times(self, duration: float, video_fps: float, view: int, num_views: int) -> np.ndarray:
        """``(num_frames,)`` seconds of test view ``view``: ``(view + 1/2) / num_views`` into each segment."""
        _check_view(view, num_views)
        return self._times_at(duration, (view + 0.5) / num_views)


def _check_view(view: int, num_views: int) -> None:
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} out of range for {num_views} views")


def build_sampler(sampling: str, num_frames: int, sampling_rate: int = 4, target_fps: float | None = None,
                  short_video: str = "loop") -> ClipSampler | SegmentSampler:
    """The sampler ``data.sampling`` names; segments ignore the clip-only options (rate, fps, short video)."""
    if sampling == "segment":
        return SegmentSampler(num_frames)
    if sampling == "clip":
        return ClipSampler(num_frames, sampling_rate, target_fps, short_video)
    raise ConfigError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
