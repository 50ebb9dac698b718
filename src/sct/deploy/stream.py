"""``sct stream SOURCE --checkpoint RUN/model.safetensors``: online recognition over a video file or live source.

Frames are read as they arrive (:mod:`sct.deploy.source`), resampled to the model's frame rate (the
run's ``target_fps`` or the source's rate, divided by its ``sampling_rate``), resized and centre-cropped
as at test time; every ``--stride`` model frames the last ``--window`` are classified, with each frame's
work done once where the model allows (:mod:`sct.deploy.reuse`). Outputs go to ``--out``
(:mod:`sct.deploy.timeline`): ``timeline.jsonl``, ``timeline.png``, ``stream.json`` (how the source
stopped, counts, frames/s) and, with ``--annotate``, a labelled copy of the video.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sct.data import transforms as T
from sct.deploy.reuse import REUSE_MODES, window_classifier
from sct.deploy.source import Resampler, SourceInfo, StreamEnd, read_frames
from sct.deploy.timeline import Timeline
from sct.errors import ConfigError, SCTError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="video file, URL (rtsp://, http://) or device PyAV opens")
    parser.add_argument("--checkpoint", required=True, help="weights written by sct train (.safetensors)")
    parser.add_argument("--window", type=int, help="frames per classified window (default: the run's clip length)")
    parser.add_argument("--stride", type=int, default=4, help="classify every K model frames (default 4)")
    parser.add_argument("--out", help="output folder (default: <run>/stream_<source name>)")
    parser.add_argument("--topk", type=int, default=3, help="labels per window in the timeline (default 3)")
    parser.add_argument("--reuse", default="auto", choices=REUSE_MODES,
                        help="per-frame work reuse: auto (the cheapest exact one), none, cyclic, causal")
    parser.add_argument("--annotate", metavar="VIDEO.mp4", help="also write the video with the label drawn on it")
    parser.add_argument("--no-plot", action="store_true", help="do not draw timeline.png")
    parser.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without a frame = stalled")
    parser.add_argument("--fps", type=float, help="source frame rate when the source does not say (live devices)")
    parser.add_argument("--format", dest="input_format", help="PyAV input format, e.g. v4l2 for a camera")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="PyAV/FFmpeg input option, e.g. rtsp_transport=tcp (repeatable)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even if EMA weights exist")


def run(args: argparse.Namespace) -> int:
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        options[key] = value
    out = Path(args.out) if args.out else None
    summary = stream(args.source, args.checkpoint, window=args.window, stride=args.stride, out=out, topk=args.topk,
                     reuse=args.reuse, annotate=args.annotate, plot=not args.no_plot, stall_timeout=args.stall_timeout,
                     fps=args.fps, input_format=args.input_format, options=options, use_ema=not args.no_ema)
    print(f"{summary['end']}: {summary['detail']}; {summary['source_frames']} source frames, {summary['windows']} "
          f"windows, {summary['frames_per_second']:.1f} model frames/s ({summary['reuse']}); "
          f"outputs in {summary['out']}")
    return 0 if summary["end"] == "ended" else 1


def _check(window: int | None, stride: int, topk: int, stall_timeout: float, fps: float | None) -> None:
    for name, value in (("--window", window), ("--stride", stride), ("--topk", topk)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not stall_timeout > 0:
        raise ConfigError(f"--stall-timeout must be > 0, got {stall_timeout}")
    if fps is not None and not fps > 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")


class FramePipeline:
    """One source frame uint8 ``(H, W, 3)`` -> the model's input frame ``(3, S, S)``: the test-time short-side
    resize and centre crop, then normalisation (what ``sct predict`` does to each frame of a clip)."""

    def __init__(self, data_cfg):
        self.cfg = data_cfg

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        cfg = self.cfg
        frames = torch.from_numpy(np.ascontiguousarray(image))[None]
        box = T.test_boxes(image.shape[0], image.shape[1], cfg.crop_size, cfg.test_side(), 1)[0]
        return T.normalize(T.crop_resize(frames, box, cfg.crop_size), cfg.mean, cfg.std)[:, 0]


def _top(logits: torch.Tensor, class_names: list[str], topk: int) -> list[dict[str, Any]]:
    probs = torch.softmax(logits.float(), dim=-1)
    values, index = probs.topk(min(topk, len(class_names)))
    return [{"label": class_names[i], "probability": round(float(p), 6)} for p, i in zip(values, index.tolist())]


def stream(source: str, checkpoint: str | Path, *, window: int | None = None, stride: int = 4,
           out: Path | None = None, topk: int = 3, reuse: str = "auto", annotate: str | Path | None = None,
           plot: bool = True, stall_timeout: float = 10.0, fps: float | None = None, input_format: str | None = None,
           options: dict[str, str] | None = None, use_ema: bool = True, live: bool | None = None) -> dict[str, Any]:
    """Classify ``source`` online; returns (and writes to ``<out>/stream.json``) the summary of the run."""
    from sct.engine.checkpoint import model_from_checkpoint
    from sct.engine.evaluate import checkpoint_run_config

    _check(window, stride, topk, stall_timeout, fps)
    run_cfg = checkpoint_run_config(checkpoint)
    data = run_cfg.data
    window = window or data.num_frames
    model, metadata = model_from_checkpoint(checkpoint, use_ema=use_ema)
    model.eval()
    class_names = json.loads(metadata["classes"])
    classifier = window_classifier(model, window, reuse)
    out = out or Path(checkpoint).parent / f"stream_{Path(str(source)).stem or 'source'}"
    pipeline = FramePipeline(data)
    info: list[SourceInfo] = []
    frames = read_frames(str(source), stall_timeout=stall_timeout, input_format=input_format, options=options,
                         info=info)
    end = StreamEnd("ended", "the source has no frames")
    try:
        first = next(frames)  # opens the source (errors name it) and fills `info`
    except StopIteration as stop:
        first, end = None, stop.value
    source_fps = fps or (info[0].fps if info else None)
    if not (data.target_fps or source_fps):
        raise SCTError(f"{source}: the source does not say its frame rate and the run has no data.target_fps; "
                       "pass --fps")
    rate = (data.target_fps or source_fps) / data.sampling_rate
    resampler = Resampler(rate)
    timeline = Timeline(out, plot=plot, live=live, annotate=Path(annotate) if annotate else None,
                        fps=source_fps or 25.0)
    ticks: deque[float] = deque(maxlen=window)
    counts = {"source_frames": 0, "model_frames": 0, "windows": 0}
    start = time.perf_counter()

    def take(items) -> None:
        for index, tick, image in items:
            classifier.push(pipeline(image))
            ticks.append(tick)
            counts["model_frames"] += 1
            if classifier.ready() and (index - window + 1) % stride == 0:
                counts["windows"] += 1
                elapsed = max(time.perf_counter() - start, 1e-9)
                timeline.add({"window": counts["windows"] - 1, "first_frame": index - window + 1, "last_frame": index,
                              "start_time": round(ticks[0], 4), "end_time": round(tick, 4),
                              "top": _top(classifier.classify(), class_names, topk)},
                             counts["model_frames"] / elapsed)

    try:
        if first is not None:
            pending = first
            while True:
                t, image = pending
                counts["source_frames"] += 1
                take(resampler.push(t, image))
                timeline.frame(image, t)
                try:
                    pending = next(frames)
                except StopIteration as stop:
                    end = stop.value
                    break
            take(resampler.flush(1.0 / source_fps if source_fps else resampler.period))
    except KeyboardInterrupt:
        end = StreamEnd("interrupted", "stopped by the user (Ctrl-C)")
    except Exception as err:
        end = StreamEnd("error", f"{type(err).__name__}: {err}")
        raise
    finally:
        frames.close()
        elapsed = time.perf_counter() - start
        timeline.close(f"{Path(str(source)).name}: {Path(checkpoint).parent.name} ({metadata['model']})")
        summary = {"source": str(source), "checkpoint": str(checkpoint), "end": end.reason, "detail": end.detail,
                   "dropped_frames": end.dropped, **counts, "window": window, "stride": stride,
                   "model_fps": rate, "reuse": type(classifier).__name__, "seconds": round(elapsed, 3),
                   "frames_per_second": counts["model_frames"] / max(elapsed, 1e-9), "out": str(out)}
        (out / "stream.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
