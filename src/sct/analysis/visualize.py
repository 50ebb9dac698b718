"""``sct visualize``: attention-rollout heat maps over the frames of a clip (SCT paper, Fig. 4).

The model runs once on one test view of the video with every attention module keeping its weights
(``sct.models.attention.recorder``); the relevance of the prediction is then carried backwards by the
model's ``relevance`` method, each attention module applying its own step of ``sct.models.attention.rollout``:

- SCT: clip encoder -> frame weights -> per block, in reverse: temporal layers (shifted MSA and the
  other temporal kinds), linear pooling, the global layer (LSH / dense, frame [CLS] included), ViLT
  chunks. Convolutional ablation layers have no attention; relevance passes them unchanged.
- ViT family: the temporal head (attention aggregation, average, or SCT's clip encoder and shifted
  MSA for the Table 1/4 baselines) -> per block: X-ViT's space-time mixing, TSM-ViT's token shift,
  TimeSformer's divided time/space attention, or plain frame MSA.

Output: a PNG grid (frames, the heat maps over them, the clip encoder's frame weights as bars) and
optionally a GIF.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sct.errors import ConfigError, VideoDecodeError
from sct.models.attention.recorder import recording
from sct.models.attention.rollout import heatmaps
from sct.models.attention.shifted import READINGS
from sct.options import add_out, positive_int
from sct.outputs import check_writable_dir, writing

SHIFTED_READINGS = READINGS
# The recorder's context manager under its earlier name.
stored_attention = recording


@torch.no_grad()
def attention_maps(model: nn.Module, clip: torch.Tensor, shifted_reading: str = "keys"):
    """Rollout heat maps of ``model`` on one clip ``(3, T, H, W)`` (normalised).

    The model records its attention (``recording``) and rolls relevance back with its own ``relevance``
    method, each attention module by its own rule. Returns ``(maps (T, H, W) in [0, 1] normalised over the
    clip, frame weights (T,), logits (classes,))``.
    """
    if shifted_reading not in SHIFTED_READINGS:
        raise ConfigError(f"--shifted-relevance must be one of {SHIFTED_READINGS}, got {shifted_reading!r}")
    if not hasattr(model, "relevance"):
        raise ConfigError(f"visualize needs a model with attention rollout (relevance), not {type(model).__name__}")
    model.eval()
    frames, size = clip.shape[1], tuple(clip.shape[2:])
    with recording(model):
        logits = model(clip[None])[0]
        relevance, weights = model.relevance(frames, size, shifted_reading)
    return heatmaps(relevance, size), weights, logits


# ----------------------------------------------------------------------------- rendering


def _overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``frame (H, W, 3)`` in [0, 1] blended with a jet heat map of ``heat (H, W)`` in [0, 1]."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    return np.clip(0.5 * frame + 0.5 * colours, 0, 1)


def render_grid(frames: np.ndarray, maps: np.ndarray, weights: np.ndarray, path: Path, title: str) -> None:
    """PNG: row 1 the frames, row 2 the heat maps over them, row 3 the clip encoder's frame weights.

    ``frames`` ``(T, H, W, 3)`` in [0, 1]; ``maps`` ``(T, H, W)`` in [0, 1]; ``weights`` ``(T,)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = len(frames)
    fig = plt.figure(figsize=(max(1.3 * t, 6), 4.4), constrained_layout=True)
    grid = fig.add_gridspec(3, t, height_ratios=[1, 1, 0.8])
    for i in range(t):
        for row, image in ((0, frames[i]), (1, _overlay(frames[i], maps[i]))):
            ax = fig.add_subplot(grid[row, i])
            ax.imshow(image)
            ax.set_axis_off()
        fig.axes[-2].set_title(f"t={i}", fontsize=8)
    bars = fig.add_subplot(grid[2, :])
    bars.bar(np.arange(t), weights, color="tab:blue")
    bars.set_xticks(np.arange(t))
    bars.set_xlim(-0.5, t - 0.5)
    bars.set_ylabel("frame weight")
    bars.set_xlabel("frame")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_gif(frames: np.ndarray, maps: np.ndarray, weights: np.ndarray, path: Path, fps: int = 4) -> None:
    """GIF: frame and heat-map overlay side by side, one GIF frame per clip frame (matplotlib's PillowWriter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, (left, right) = plt.subplots(1, 2, figsize=(5, 2.8))
    for ax in (left, right):
        ax.set_axis_off()
    shown = [left.imshow(frames[0]), right.imshow(_overlay(frames[0], maps[0]))]

    def draw(i: int):
        shown[0].set_data(frames[i])
        shown[1].set_data(_overlay(frames[i], maps[i]))
        fig.suptitle(f"frame {i}  weight {weights[i]:.3f}", fontsize=9)
        return shown

    FuncAnimation(fig, draw, frames=len(frames), blit=False).save(str(path), writer=PillowWriter(fps=fps))
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def _load(args: argparse.Namespace):
    """``(model, data config, class names, label)`` from ``--checkpoint`` or a randomly initialised ``--model``."""
    from sct.config import DataConfig

    if args.checkpoint:
        from sct.models.checkpoint_file import checkpoint_run_config, model_from_checkpoint

        run_cfg = checkpoint_run_config(args.checkpoint)
        model, metadata = model_from_checkpoint(args.checkpoint)
        return model, run_cfg.data, json.loads(metadata["classes"]), Path(args.checkpoint).name
    from sct.analysis.peers import build_model

    torch.manual_seed(args.seed)
    model = build_model(args.model, num_classes=args.classes, num_frames=args.frames, img_size=args.size)
    data = DataConfig(num_frames=model.config.num_frames, crop_size=model.config.img_size)
    return model, data, [f"class {i}" for i in range(args.classes)], f"{args.model} (random weights)"


def read_clip(video: str | Path, data_cfg, class_names: list[str]) -> torch.Tensor:
    """One centre test view of ``video`` through the checkpoint's pipeline: ``(3, T, S, S)`` normalised."""
    import dataclasses

    from sct.data.annotations import Annotations
    from sct.data.datasets import VideoDataset

    path = Path(video)
    if not path.is_file():
        raise VideoDecodeError(f"no such video file: {path}")
    cfg = dataclasses.replace(data_cfg, num_temporal_views=1, num_spatial_crops=1)
    item = VideoDataset(Annotations([str(path.resolve())], [0], class_names), cfg, "test")[0]
    if not item["ok"]:
        reasons = "; ".join(reason for _, reason in item["bad"]) or "unreadable"
        raise VideoDecodeError(f"{path}: {reasons}")
    return item["video"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="a video file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights written by sct train (.safetensors)")
    source.add_argument("--model", help="a registered model with random weights (to inspect the wiring)")
    parser.add_argument("--frames", type=positive_int, default=None, help="with --model: clip length")
    parser.add_argument("--size", type=positive_int, default=None, help="with --model: crop size")
    parser.add_argument("--classes", type=positive_int, default=10, help="with --model: number of classes")
    parser.add_argument("--seed", type=int, default=0, help="with --model: seed of the random weights")
    add_out(parser, "output directory (default: next to the checkpoint or ./)")
    parser.add_argument("--gif", action="store_true", help="also write an animated GIF")
    parser.add_argument("--shifted-relevance", default="keys", choices=SHIFTED_READINGS,
                        help="shifted MSA: relevance follows the keys' frame t-s (default, as in Fig. 4) "
                             "or stays on frame t whose values are mixed")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else (Path(args.checkpoint).parent if args.checkpoint else Path("."))
    check_writable_dir(out, "--out")
    model, data_cfg, class_names, label = _load(args)
    clip = read_clip(args.video, data_cfg, class_names)
    maps, weights, logits = attention_maps(model, clip, args.shifted_relevance)
    mean = torch.tensor(data_cfg.mean).view(3, 1, 1, 1)
    std = torch.tensor(data_cfg.std).view(3, 1, 1, 1)
    frames = (clip * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    top = int(logits.argmax())
    prob = float(logits.softmax(-1)[top])
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.video).stem
    png = out / f"{stem}_attention.png"
    title = f"{Path(args.video).name} | {label} | predicted {class_names[top]} ({100 * prob:.1f}%)"
    with writing(png):
        render_grid(frames, maps.numpy(), weights.numpy(), png, title)
    print(f"wrote {png}")
    if args.gif:
        gif = out / f"{stem}_attention.gif"
        with writing(gif):
            render_gif(frames, maps.numpy(), weights.numpy(), gif)
        print(f"wrote {gif}")
    return 0
