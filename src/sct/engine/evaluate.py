"""``sct eval``: multi-view testing of a checkpoint, as the papers do it.

Each test video gives ``T x S`` clips (``T`` temporal positions x ``S`` spatial crops; SCT uses 4x3);
the softmax scores of a video's clips are averaged and the average is ranked. Reported: video-level
top-1/top-5, clip-level top-1, per-class accuracy, and the confusion matrix. A video whose file cannot
be decoded counts as a wrong prediction. Under ``torchrun`` each process scores a disjoint share of the
clips and the per-video sums are gathered, so every clip is counted exactly once.

Outputs (default: ``<run folder>/eval_<split>_<T>x<S>/``): ``eval.json``, ``predictions.csv``,
``confusion.png``; for a run trained with ``train.tensorboard``, also the top-1 and the confusion image
in the run's ``tensorboard/`` events (``eval/<split>_<T>x<S>/...``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sct.config import parse_views
from sct.data.datasets import BadFileTracker, DataConfig, build_dataset, collate
from sct.engine import bad_files, distributed
from sct.engine.checkpoint import CheckpointPaths, atomic_write, model_from_checkpoint
from sct.engine.distributed import DistContext, shard_indices
from sct.engine.metrics import VideoScores, add_views, merge_scores, summarize
from sct.engine.plots import plot_confusion
from sct.engine.stop import ignore_in_worker
from sct.engine.tensorboard_log import TensorBoardLog
from sct.errors import CheckpointError, ConfigError, DataQualityError
from sct.models.checkpoint_file import checkpoint_run_config
from sct.options import add_json, add_out, non_negative_int, positive_int
from sct.outputs import check_writable_dir, writing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="weights written by sct train (.safetensors)")
    parser.add_argument("--views", help="temporal views x spatial crops, e.g. 4x3 (default: the run's eval.views)")
    parser.add_argument("--split", choices=("train", "val", "test"), help="default: the run's eval.split")
    add_out(parser, "folder for eval.json, predictions.csv, confusion.png (default <run>/eval_<split>_<views>)")
    add_json(parser, "the summary")
    parser.add_argument("--batch-size", type=positive_int, help="clips per forward pass")
    parser.add_argument("--num-workers", type=non_negative_int, help="data loader processes")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even if EMA weights exist")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the run's data section, e.g. data.root=/data/k400")


def run(args: argparse.Namespace) -> int:
    run_cfg = checkpoint_run_config(args.checkpoint, args.overrides)  # with the eval.* overrides
    evaluate(args.checkpoint, data_cfg=run_cfg.data, views=args.views or run_cfg.eval.views,
             split=args.split or run_cfg.eval.split, output_dir=args.out,
             batch_size=args.batch_size or run_cfg.eval.batch_size,
             num_workers=run_cfg.eval.num_workers if args.num_workers is None else args.num_workers,
             device=args.device, use_ema=False if args.no_ema else run_cfg.eval.use_ema,
             verbose="json" if args.json else True)
    return 0


def infer_scores(model: nn.Module, dataset, *, ctx: DistContext, batch_size: int, num_workers: int,
                 precision: str = "fp32", tracker: BadFileTracker | None = None,
                 desc: str = "eval") -> dict[int, VideoScores]:
    """Softmax scores of every clip of ``dataset``, summed per video over this process's share, gathered.

    ``dataset`` items: ``video (3, T, H, W)``, ``label``, ``index`` (video), ``ok``; returns one
    :class:`VideoScores` per video index, identical on every process.
    """
    shard = Subset(dataset, shard_indices(len(dataset), ctx.rank, ctx.world_size))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=ignore_in_worker)
    # Bad files are exchanged after each batch that every process has (shards differ by at most one item),
    # and once more at the end, so all processes apply the limit to the same global list at the same time.
    common = min(-(-len(shard_indices(len(dataset), r, ctx.world_size)) // batch_size)
                 for r in range(ctx.world_size))
    scores: dict[int, VideoScores] = {}
    model.eval()
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else contextlib.nullcontext())
    quiet = not (ctx.is_main and sys.stderr.isatty())
    with torch.inference_mode(), autocast:
        for number, batch in enumerate(tqdm(loader, desc=desc, unit="batch", disable=quiet, dynamic_ncols=True)):
            if tracker is not None:
                tracker.update(batch["bad"], check=False)
                if number < common:
                    bad_files.share(tracker, ctx.device)
            logits = model(batch["video"].to(ctx.device, non_blocking=True))
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            add_views(scores, batch["index"].numpy(), batch["label"].numpy(), probs, batch["ok"].numpy())
    if tracker is not None:
        bad_files.share(tracker, ctx.device)
    return merge_scores(distributed.all_gather_objects(scores))


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: its folder, or the one above ``checkpoints/``."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def default_output_dir(checkpoint: Path, split: str, views: str) -> Path:
    """``<run>/eval_<split>_<views>``."""
    return run_folder(checkpoint) / f"eval_{split}_{views}"


def _checkpoint_step(checkpoint: Path) -> int:
    """The optimiser step of ``step_<n>.safetensors``, or of the run's end for ``model.safetensors``."""
    match = re.fullmatch(r"step_(\d+)(\.ema)?\.safetensors", checkpoint.name)
    if match:
        return int(match[1])
    summary = run_folder(checkpoint) / "summary.json"
    try:
        return int(json.loads(summary.read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _board_result(checkpoint: Path, result: dict[str, Any], class_names: list[str]) -> None:
    """The top-1 and the confusion image under ``eval/<split>_<views>/`` in the run's TensorBoard events."""
    try:
        board = TensorBoardLog(run_folder(checkpoint) / "tensorboard")
    except ConfigError as err:  # the run was trained with TensorBoard, this environment lacks it
        print(f"sct eval: warning: results not added to the run's TensorBoard events: {err}", file=sys.stderr)
        return
    step, tag = _checkpoint_step(checkpoint), f"eval/{result['split']}_{result['views']}"
    try:
        board.scalar(f"{tag}/top1", result["top1"], step)
        board.confusion(f"{tag}/confusion", result["confusion"], class_names, step)
    finally:
        board.close()


def evaluate(checkpoint: str | Path, data_cfg: DataConfig | None = None, views: str | None = None, *,
             split: str | None = None, output_dir: str | Path | None = None, batch_size: int | None = None,
             num_workers: int | None = None, device: str = "auto", use_ema: bool | None = None,
             verbose: bool | str = False) -> dict[str, Any]:
    """Multi-view evaluation of ``checkpoint``; writes the outputs and returns the ``eval.json`` content.

    ``verbose``: print a summary (``"json"``: the result as JSON) from the main process.

    ``data_cfg``/``views``/``split``/... default to the values stored in the checkpoint's run config.
    """
    checkpoint = Path(checkpoint)
    run_cfg = checkpoint_run_config(checkpoint)
    views = views or run_cfg.eval.views
    split = split or run_cfg.eval.split
    temporal, spatial = parse_views(views, "--views")
    data_cfg = dataclasses.replace(data_cfg or run_cfg.data, num_temporal_views=temporal, num_spatial_crops=spatial)
    use_ema = run_cfg.eval.use_ema if use_ema is None else use_ema
    batch_size = run_cfg.eval.batch_size if batch_size is None else batch_size
    num_workers = run_cfg.eval.num_workers if num_workers is None else num_workers
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(f"--batch-size must be >= 1 and --num-workers >= 0, got {batch_size} and {num_workers}")
    distributed.resolve_device(device)
    out = Path(output_dir) if output_dir else default_output_dir(checkpoint, split, views)
    check_writable_dir(out, "--out")
    if run_cfg.train.num_threads:
        torch.set_num_threads(run_cfg.train.num_threads)
    model, metadata = model_from_checkpoint(checkpoint, use_ema=use_ema)
    class_names = json.loads(metadata["classes"])
    _check_fits(model, data_cfg, checkpoint)
    dataset = build_dataset(data_cfg, split)
    if dataset.num_videos == 0:
        raise DataQualityError(
            f"the {split} split ({Path(data_cfg.root) / getattr(data_cfg, split)}) lists no videos: nothing to "
            f"evaluate (check data.root and data.{split})")
    if list(dataset.class_names) != class_names:
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained on {len(class_names)} classes "
            f"({', '.join(class_names[:5])}...), the {split} set of {data_cfg.root} has "
            f"{len(dataset.class_names)} ({', '.join(list(dataset.class_names)[:5])}...)"
        )
    with distributed.session(device) as ctx:
        start = time.perf_counter()
        tracker = BadFileTracker(dataset.num_videos, data_cfg.max_bad_fraction)
        scores = infer_scores(model.to(ctx.device), dataset, ctx=ctx, batch_size=batch_size,
                              num_workers=num_workers, tracker=tracker, desc=f"eval {views}")
        metrics = summarize(scores, class_names)
        result = {
            "top1": metrics["top1"], "top5": metrics["top5"], "topk": metrics["topk"],
            "clip_top1": metrics["clip_top1"], "num_videos": metrics["num_videos"],
            "num_failed": metrics["num_failed"], "num_clips": metrics["num_clips"], "views": views,
            "split": split, "checkpoint": str(checkpoint),
            "ema": use_ema and CheckpointPaths.from_weights(checkpoint).ema.is_file(),
            "seconds": time.perf_counter() - start,
            "mean_class_top1": metrics["mean_class_top1"], "per_class_top1": metrics["per_class_top1"],
            "bad_files": [list(item) for item in sorted(tracker.items)],
            "confusion": metrics["confusion"], "output_dir": str(out),
        }

        def write() -> None:
            _write_outputs(out, result, metrics, dataset, class_names)
            if run_cfg.train.tensorboard:
                _board_result(checkpoint, result, class_names)

        distributed.run_on_main(write)
        if ctx.is_main and verbose:
            print(json.dumps(result, indent=2) if verbose == "json" else describe(result), flush=True)
        return result


def _check_fits(model: nn.Module, data_cfg: DataConfig, checkpoint: Path) -> None:
    pairs = [("img_size", "crop_size")] + ([] if data_cfg.is_image else [("num_frames", "num_frames")])
    for model_key, data_key in pairs:
        if getattr(model.config, model_key) != getattr(data_cfg, data_key):
            raise ConfigError(
                f"data.{data_key}={getattr(data_cfg, data_key)} but checkpoint {checkpoint} was trained with "
                f"{model_key}={getattr(model.config, model_key)}"
            )


def _write_outputs(out: Path, result: dict[str, Any], metrics: dict[str, Any], dataset,
                   class_names: list[str]) -> None:
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2).encode()
    atomic_write(out / "eval.json", lambda f: f.write(text))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    k = metrics["topk"]
    writer.writerow(["video", "path", "label", "prediction", "probability", "correct", "failed", f"top{k}"])
    for video, label, pred, probs in zip(metrics["_videos"], metrics["_labels"], metrics["_preds"],
                                         metrics["_probs"]):
        ranked = np.argsort(-probs, kind="stable")[:k]
        writer.writerow([
            video, dataset.paths[video], class_names[label], class_names[pred] if pred >= 0 else "",
            f"{probs[pred]:.4f}" if pred >= 0 else "", int(pred == label), int(pred < 0),
            " ".join(f"{class_names[c]}:{probs[c]:.3f}" for c in ranked) if pred >= 0 else "",
        ])
    data = buffer.getvalue().encode()
    atomic_write(out / "predictions.csv", lambda f: f.write(data))
    plot_confusion(np.array(result["confusion"]), class_names, out / "confusion.png")


def describe(result: dict[str, Any]) -> str:
    lines = [
        f"{result['split']} set, {result['views']} views, {result['num_videos']} videos "
        f"({result['num_failed']} failed to decode), {result['seconds']:.0f}s",
        f"  video top-1 {result['top1']:.2f}%  top-{result['topk']} {result['top5']:.2f}%  "
        f"clip top-1 {result['clip_top1']:.2f}%  mean class top-1 {result['mean_class_top1']:.2f}%",
    ]
    if result.get("output_dir"):
        lines.append(f"  outputs in {result['output_dir']}: eval.json, predictions.csv, confusion.png")
    if result["bad_files"]:
        lines.append(f"  bad files ({len(result['bad_files'])}):"
                     + "".join(f"\n    {p}: {r}" for p, r in result["bad_files"]))
    return "\n".join(lines)
