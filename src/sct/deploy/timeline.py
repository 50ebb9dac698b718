"""What ``sct stream`` writes: ``timeline.jsonl`` (a line per window, flushed as it is decided), a live
terminal line, an annotated copy of the video (label drawn on each frame) and a timeline plot (PNG).

Every writer is closed by :meth:`Timeline.close`, which ``sct stream`` calls however the source stops,
so the video file is finalised and the plot drawn from every window written.
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw


class AnnotatedVideo:
    """H.264 copy of the source frames with the current label in a band at the top."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.container = av.open(str(path), "w")
        self.stream = None

    def write(self, image: np.ndarray, text: str) -> None:
        """``image`` uint8 ``(H, W, 3)``."""
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            # yuv420p needs even sizes.
            self.stream.width, self.stream.height = image.shape[1] // 2 * 2, image.shape[0] // 2 * 2
            self.stream.pix_fmt = "yuv420p"
        frame = Image.fromarray(image[: self.stream.height, : self.stream.width])
        draw = ImageDraw.Draw(frame)
        band = max(10, frame.height // 12)
        draw.rectangle((0, 0, frame.width, band), fill=(0, 0, 0))
        draw.text((2, 0), text, fill=(255, 255, 255))
        for packet in self.stream.encode(av.VideoFrame.from_image(frame)):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def plot_timeline(windows: list[dict], path: Path, title: str) -> None:
    """Probability over time (window end) of every label that was ever top-1, the top-1 as a strip below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, strip) = plt.subplots(2, 1, figsize=(9, 4), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    ends = [w["end_time"] for w in windows]
    leaders = list(dict.fromkeys(w["top"][0]["label"] for w in windows))
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(leaders)}
    for label in leaders:
        probs = [next((p["probability"] for p in w["top"] if p["label"] == label), 0.0) for w in windows]
        ax.plot(ends, probs, label=label, color=colours[label])
    for w, end in zip(windows, ends):
        strip.axvspan(w["start_time"], end, color=colours[w["top"][0]["label"]], alpha=0.15, lw=0)
        strip.plot([end], [0.5], "|", color=colours[w["top"][0]["label"]])
    ax.set(ylabel="probability", ylim=(0, 1), title=title)
    ax.legend(loc="upper right", fontsize="small")
    strip.set(yticks=[], xlabel="time (s, window end)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Timeline:
    """Collects windows; writes ``timeline.jsonl`` as they come, the live line, and on close the plot."""

    def __init__(self, out: Path, *, plot: bool = True, live: bool | None = None, annotate: Path | None = None,
                 fps: float = 25.0):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.plot = out, plot
        self.live = sys.stderr.isatty() if live is None else live
        self.jsonl = (out / "timeline.jsonl").open("w")
        self.windows: list[dict] = []
        self.video = AnnotatedVideo(annotate, fps) if annotate else None

    @property
    def label(self) -> str:
        if not self.windows:
            return "..."
        top = self.windows[-1]["top"][0]
        return f"{top['label']} {100 * top['probability']:.0f}%"

    def add(self, window: dict, rate: float) -> None:
        """``window``: ``first_frame``, ``last_frame``, ``start_time``, ``end_time``, ``top``; ``rate``: frames/s."""
        self.windows.append(window)
        self.jsonl.write(json.dumps(window) + "\n")
        self.jsonl.flush()
        if self.live:
            tops = " | ".join(f"{p['label']} {100 * p['probability']:.0f}%" for p in window["top"][:3])
            line = f"[{window['end_time']:8.2f} s] frame {window['last_frame']:6d}  {tops}  ({rate:.1f} frames/s)"
            print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)

    def frame(self, image: np.ndarray, t: float) -> None:
        """A source frame at ``t`` seconds, for the annotated video."""
        if self.video is not None:
            self.video.write(image, f"{t:7.2f}s  {self.label}")

    def close(self, title: str) -> None:
        """Finish every output; safe to call once whatever happened before."""
        if self.live:
            print(file=sys.stderr)
        self.jsonl.close()
        if self.video is not None:
            self.video.close()
        if self.plot and self.windows:
            plot_timeline(self.windows, self.out / "timeline.png", title)
