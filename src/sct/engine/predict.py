"""``sct predict VIDEO... --checkpoint model.safetensors``: top-k labels with probabilities per video.

Videos of any length and resolution go through the checkpoint's own test-time pipeline (its clip
sampling, resizing and crops), with the run's multi-view setting unless ``--views`` says otherwise.
A checkpoint trained on images (``sct_*_image``) takes image files instead (``--views 1x10``: 10 crops).
``--runtime onnxruntime --model model.onnx`` runs a file written by ``sct export`` instead: the same
decoding and views (read from the file's metadata), the same output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from sct.config import parse_views
from sct.data.annotations import Annotations
from sct.data.datasets import BadFileTracker, VideoDataset
from sct.data.image_dataset import ImageDataset
from sct.engine import distributed
from sct.engine.checkpoint import model_from_checkpoint
from sct.engine.evaluate import checkpoint_run_config, infer_scores
from sct.errors import ConfigError, SCTError, VideoDecodeError
from sct.options import add_json, positive_int

RUNTIMES = ("pytorch", "onnxruntime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (image files for an image model)")
    parser.add_argument("--checkpoint", help="weights written by sct train (.safetensors); the pytorch runtime")
    parser.add_argument("--runtime", default="pytorch", choices=RUNTIMES, help="what runs the model (default pytorch)")
    parser.add_argument("--model", help="with --runtime onnxruntime: a file written by sct export (.onnx)")
    parser.add_argument("--topk", type=positive_int, default=5, help="labels to list per video (default 5)")
    parser.add_argument("--views", help="temporal views x spatial crops, e.g. 4x3 (default: the run's eval.views)")
    add_json(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="clips per forward pass")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even if EMA weights exist")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    results = predict(args.videos, args.checkpoint, topk=args.topk, views=args.views, batch_size=args.batch_size,
                      device=args.device, use_ema=not args.no_ema, runtime=args.runtime, onnx_model=args.model)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 1 if any(r["error"] for r in results) else 0


def predict(videos: list[str | Path], checkpoint: str | Path | None = None, *, topk: int = 5,
            views: str | None = None, batch_size: int = 8, device: str = "auto", use_ema: bool = True,
            runtime: str = "pytorch", onnx_model: str | Path | None = None) -> list[dict[str, Any]]:
    """``[{"video", "predictions": [{"label", "probability"}...], "error"}]`` in the order of ``videos``.

    A video that cannot be decoded gets ``error`` (its reason) and no predictions. ``runtime="onnxruntime"``
    runs ``onnx_model`` (an ``sct export`` file) on the CPU instead of ``checkpoint``.
    """
    if topk < 1 or batch_size < 1:
        raise ConfigError(f"--topk and --batch-size must be >= 1, got {topk} and {batch_size}")
    missing = [str(v) for v in videos if not Path(v).is_file()]
    if missing:
        raise VideoDecodeError(f"no such video file: {', '.join(missing)}")
    if runtime != "onnxruntime":
        distributed.resolve_device(device)
    model, class_names, run_cfg = _load(checkpoint, runtime, onnx_model, use_ema)
    temporal, spatial = parse_views(views or run_cfg.eval.views, "--views")
    data_cfg = dataclasses.replace(run_cfg.data, num_temporal_views=temporal, num_spatial_crops=spatial)
    paths = [str(Path(v).resolve()) for v in videos]
    kind = ImageDataset if data_cfg.is_image else VideoDataset
    dataset = kind(Annotations(paths, [0] * len(paths), class_names), data_cfg, "test")
    tracker = BadFileTracker(len(paths), max_fraction=1.0)
    with distributed.session("cpu" if runtime == "onnxruntime" else device) as ctx:
        scores = infer_scores(model.to(ctx.device), dataset, ctx=ctx, batch_size=batch_size, num_workers=0,
                              tracker=tracker, desc="predict")
    errors = dict(tracker.items)
    results = []
    for index, video in enumerate(videos):
        entry = scores[index]
        ranked = np.argsort(-entry.probs, kind="stable")[: min(topk, len(class_names))]
        results.append({
            "video": str(video),
            "predictions": [] if entry.failed else [
                {"label": class_names[c], "probability": float(entry.probs[c])} for c in ranked
            ],
            "error": errors.get(paths[index]) if entry.failed else None,
        })
    return results


def _load(checkpoint, runtime: str, onnx_model, use_ema: bool):
    """``(model, class names, run config)`` for the chosen runtime."""
    if runtime not in RUNTIMES:
        raise SCTError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime":
        if onnx_model is None or checkpoint is not None:
            raise SCTError("--runtime onnxruntime takes --model FILE.onnx (written by sct export), not --checkpoint")
        from sct.deploy.onnx_model import OnnxModel

        model = OnnxModel(onnx_model)
        return model, model.class_names, model.run_config
    if checkpoint is None or onnx_model is not None:
        raise SCTError("--runtime pytorch takes --checkpoint FILE.safetensors (--model is for onnxruntime)")
    model, metadata = model_from_checkpoint(checkpoint, use_ema=use_ema)
    return model, json.loads(metadata["classes"]), checkpoint_run_config(checkpoint)


def format_table(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        lines.append(result["video"])
        if result["error"]:
            lines.append(f"  error: {result['error']}")
        for rank, pred in enumerate(result["predictions"], 1):
            lines.append(f"  {rank}. {pred['label']:<30} {100 * pred['probability']:6.2f}%")
    return "\n".join(lines)
