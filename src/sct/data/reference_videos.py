"""Reference videos for decoding exactness: made by the ffmpeg command-line tool, with frames that say which
frame they are, and what ffmpeg itself says is on screen when (the tests and benchmarks/decode_exactness.py).

These files come from another encoder than the one the rest of the tests use (PyAV), with the features
that make "which frame is shown at time t" hard: B-frames (decode order differs from display order),
open and long GOPs (a seek lands far before, or on a frame that needs the previous GOP), variable frame
rate, edit lists and non-zero start times, hidden frames (VP9 alt-ref), and other codecs and containers.

Ground truth comes from ffprobe (each decoded frame's presentation time, the stream's start time) and
ffmpeg (the decoded pixels, which say which source frame they are): none of it goes through our reader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
WIDTH, HEIGHT = 64, 48
# Frame i is grey (i % 32) * 8 on its left half and (i // 32) * 8 on its right half: grey survives
# yuv420p and H.264 within a few levels, so the index can be read back from a decoded frame.
LEVEL = 8


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` encoding ``i`` (0 <= i < 1024) as two grey halves."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = (i % 32) * LEVEL
    frame[:, width // 2:] = (i // 32) * LEVEL
    return frame


def frame_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` for a decoded ``(H, W, 3)`` frame."""
    h, w = frame.shape[:2]
    low = frame[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean()
    high = frame[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean()
    return int(round(low / LEVEL)) + 32 * int(round(high / LEVEL))

# A variable rate: gaps of 50, 100 and 150 ms in turn.
_VFR = "settb=1/1000,setpts='(floor(N/3)*0.3+mod(N,3)*(mod(N,3)+1)*0.025)/TB'"
_VFR_OUT = ["-fps_mode", "vfr", "-enc_time_base", "1/1000"]
_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p"]


@dataclass(frozen=True)
class Recipe:
    """How to make one test video: ffmpeg output options, or a stream copy of another recipe's file."""

    name: str
    suffix: str
    options: tuple[str, ...]
    num_frames: int = 40
    fps: int = 10
    filters: str | None = None
    copy_of: str | None = None  # stream-copy this recipe's file with ``options`` as input options


RECIPES = (
    Recipe("h264_bframes_mp4", ".mp4", (*_X264, "-x264-params", "bframes=3:b-adapt=0:keyint=12:min-keyint=12")),
    Recipe("h264_vfr_bframes_mp4", ".mp4", (*_X264, "-x264-params", "bframes=3:b-adapt=0:keyint=12",
                                             *_VFR_OUT, "-video_track_timescale", "1000"), filters=_VFR),
    Recipe("h264_open_gop_mkv", ".mkv", (*_X264, "-x264-params",
                                          "bframes=3:b-adapt=0:open-gop=1:keyint=10:min-keyint=10:scenecut=0")),
    Recipe("h264_long_gop_mp4", ".mp4", (*_X264, "-x264-params", "bframes=2:keyint=300:scenecut=0"), num_frames=90),
    Recipe("h264_bframes_ts", ".ts", (*_X264, "-x264-params", "bframes=3:b-adapt=0:keyint=12")),
    # -ss before -i with stream copy: the copy starts at the keyframe before 1.25 s, and an edit list
    # hides the frames before 1.25 s, so the stream's start time is not its first packet's.
    Recipe("h264_edit_list_mp4", ".mp4", ("-ss", "1.25"), copy_of="h264_bframes_mp4"),
    Recipe("hevc_bframes_mkv", ".mkv", ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params",
                                         "log-level=error:bframes=4:keyint=15:min-keyint=15:crf=8")),
    Recipe("mpeg4_bframes_avi", ".avi", ("-c:v", "mpeg4", "-bf", "2", "-q:v", "2", "-g", "12")),
    Recipe("mpeg2_bframes_mpg", ".mpg", ("-c:v", "mpeg2video", "-bf", "2", "-q:v", "2", "-g", "12")),
    Recipe("vp9_altref_webm", ".webm", ("-c:v", "libvpx-vp9", "-crf", "10", "-b:v", "0", "-g", "20",
                                         "-lag-in-frames", "12", "-auto-alt-ref", "1", "-deadline", "good",
                                         "-cpu-used", "8")),
    Recipe("vp8_vfr_webm", ".webm", ("-c:v", "libvpx", "-crf", "8", "-b:v", "1M", "-g", "15", *_VFR_OUT),
           filters=_VFR),
    Recipe("mjpeg_avi", ".avi", ("-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p")),
)


def _run(command: list[str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout


def make_video(recipe: Recipe, folder: Path) -> Path:
    """Encode ``recipe``'s video of index frames (see :func:`index_frame`) into ``folder``."""
    path = folder / f"{recipe.name}{recipe.suffix}"
    if recipe.copy_of is not None:
        source = next(r for r in RECIPES if r.name == recipe.copy_of)
        _run([FFMPEG, "-v", "error", "-y", *recipe.options, "-i", str(folder / f"{source.name}{source.suffix}"),
              "-c", "copy", str(path)])
        return path
    raw = b"".join(index_frame(i, WIDTH, HEIGHT).tobytes() for i in range(recipe.num_frames))
    filters = ["-vf", recipe.filters] if recipe.filters else []
    _run([FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}",
          "-r", str(recipe.fps), "-i", "-", *filters, *recipe.options, "-an", str(path)], stdin=raw)
    return path


@dataclass(frozen=True)
class Timeline:
    """What ffmpeg shows: ``times[k]`` (seconds from the stream's start) and source ``indices[k]`` of each
    displayed frame ``k``, in display order."""

    times: np.ndarray
    indices: list[int]

    def shown_at(self, t: float) -> int:
        """Source index of the frame on screen at ``t``: the last one whose time is ``<= t`` (the first
        frame before it starts)."""
        k = int(np.searchsorted(self.times, t + 1e-6, side="right")) - 1
        return self.indices[max(k, 0)]


def ffmpeg_timeline(path: Path) -> Timeline:
    """Presentation times (ffprobe) and pixels (ffmpeg) of every frame a player shows, in display order."""
    probe = json.loads(_run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=start_time,avg_frame_rate:frame=best_effort_timestamp_time", "-of", "json",
                             str(path)]))
    stream = probe["streams"][0]
    start, period = float(stream.get("start_time", 0.0)), 1 / float(Fraction(stream["avg_frame_rate"]))
    times: list[float] = []
    for frame in probe["frames"]:
        # A frame without a timestamp (the last of an AVI with packed B-frames) follows the previous one
        # by a frame period, as ffplay shows it.
        stamp = frame.get("best_effort_timestamp_time")
        times.append(float(stamp) - start if stamp is not None else times[-1] + period)
    raw = _run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    frames = np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)
    if len(frames) != len(times) or np.any(np.diff(times) <= 0):
        raise RuntimeError(f"{path}: ffprobe and ffmpeg disagree on the frames ({len(times)} vs {len(frames)})")
    return Timeline(np.array(times), [frame_index(f) for f in frames])


def query_times(timeline: Timeline, duration: float) -> np.ndarray:
    """Each frame's own time, 1 ms before it, and half-way to the next one (every boundary from both
    sides), within ``[0, duration)``."""
    t = timeline.times
    times = np.concatenate([t, t - 1e-3, (t[:-1] + t[1:]) / 2, [0.0]])
    return np.unique(times[(times >= 0) & (times < duration)])
