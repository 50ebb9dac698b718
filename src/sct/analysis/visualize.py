"""``sct visualize``: attention-rollout heat maps over the frames of a clip (SCT paper, Fig. 4).

The model runs once on one test view of the video with every attention module keeping its weights;
the relevance of the prediction is then carried backwards (``sct.analysis.rollout``):

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
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sct.analysis import rollout as ro
from sct.errors import ConfigError, SCTError, VideoDecodeError
from sct.options import add_out, positive_int
from sct.outputs import check_writable_dir, writing

SHIFTED_READINGS = ("keys", "values")


@contextlib.contextmanager
def stored_attention(model: nn.Module) -> Iterator[None]:
    """Switch ``store_attention`` on for every attention module of ``model`` for the duration of the block."""
    modules = [m for m in model.modules() if hasattr(m, "store_attention")]
    before = [m.store_attention for m in modules]
    for m in modules:
        m.store_attention = True
    try:
        yield
    finally:
        for m, flag in zip(modules, before):
            m.store_attention = flag


def _weights(module: nn.Module, attr: str = "last_attention", batched: bool = True) -> torch.Tensor:
    """The weights ``module`` stored in its last call; ``batched``: drop the batch dim of the single clip.

    Modules that fold frames (or chunks) into the batch (ViLT, the frame-level LSH/dense layers) are
    read with ``batched=False``: their leading dim is already frames (x chunks) of the one clip.
    """
    weights = getattr(module, attr)
    if weights is None:
        raise SCTError(f"{type(module).__name__} kept no attention weights (was the model run with them stored?)")
    return weights[0] if batched else weights


# ----------------------------------------------------------------------------- SCT


def _sct_grids(model: nn.Module, size: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per block: the token grid before and after its pooling, for a frame of ``size``."""
    c = model.config
    g = (-(-size[0] // c.patch_size), -(-size[1] // c.patch_size))
    grids = []
    for block in model.blocks:
        after = (-(-g[0] // 2), -(-g[1] // 2)) if block.pool is not None else g
        grids.append((g, after))
        g = after
    return grids


def _vilt_step(vilt: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """Relevance ``(T, G_h, G_w)`` back through the ViLT layers (chunk attention on the padded grid)."""
    from sct.models.attention.chunk import chunk_grid

    frames, g_h, g_w = r.shape
    m, n = vilt.chunk
    rows, cols = chunk_grid((g_h, g_w), vilt.chunk)
    padded = F.pad(r, (0, cols * n - g_w, 0, rows * m - g_h))
    for layer in reversed(vilt.layers):
        attn = _weights(layer.attn, batched=False)
        attn = attn.reshape(frames, rows, cols, *attn.shape[1:])
        padded = ro.chunk_step(padded, attn, (m, n))
    return padded[:, :g_h, :g_w]


def _image_step(part: nn.Module, r_cls: torch.Tensor | None, r: torch.Tensor):
    """Back through a block's local or global part: ``GridLayers`` (ViLT / conv) or ``FrameAttention``."""
    from sct.models.attention.chunk import ViLT
    from sct.models.image_layers import FrameAttention

    if isinstance(part, FrameAttention):
        frames, g_h, g_w = r.shape
        tokens = r.reshape(frames, g_h * g_w)
        if r_cls is not None:
            tokens = torch.cat([r_cls[:, None], tokens], dim=1)
        for layer in reversed(part.layers):
            tokens = ro.dense_step(tokens, _weights(layer.attn, batched=False),
                                   ro.RESIDUAL if layer.residual else 0.0)
        if r_cls is not None:
            r_cls, tokens = tokens[:, 0], tokens[:, 1:]
        return r_cls, tokens.reshape(frames, g_h, g_w)
    if isinstance(part.layers, ViLT):
        return r_cls, _vilt_step(part.layers, r)
    return r_cls, r  # convolutions: no attention to roll out


def _temporal_step(layer: nn.Module, r: torch.Tensor, shifted_reading: str) -> torch.Tensor:
    """Relevance ``(T, N)`` back through one temporal layer of any ``temporal_kind``."""
    from sct.models.attention.dense import MultiHeadAttention
    from sct.models.attention.shifted import ShiftedMSA, SpaceTimeConcat, TimeMSA

    residual = ro.RESIDUAL if layer.residual else 0.0

    def step(attn_module: nn.Module, r: torch.Tensor) -> torch.Tensor:
        if isinstance(attn_module, ShiftedMSA):
            # Keys of frame t come from frame t - s; "keys" lets relevance follow them (the spec's reading),
            # "values" keeps it on frame t, whose values the weights actually mix (Eq. 6).
            offsets = {-attn_module.shift: 1.0} if shifted_reading == "keys" else {0: 1.0}
            return ro.temporal_step(r, _weights(attn_module), offsets, cyclic=True, residual=residual)
        if isinstance(attn_module, TimeMSA):
            return ro.time_step(r, _weights(attn_module), _weights(attn_module, "last_cls_attention"), residual)
        if isinstance(attn_module, SpaceTimeConcat):
            # Concatenated halves projected back: each half carries half of the relevance.
            return 0.5 * step(attn_module.space, r) + 0.5 * step(attn_module.time, r)
        if isinstance(attn_module, MultiHeadAttention):
            return ro.temporal_step(r, _weights(attn_module), {0: 1.0}, cyclic=False, residual=residual)
        raise SCTError(f"no rollout rule for temporal attention {type(attn_module).__name__}")

    return step(layer.attn, r)


def _sct_relevance(model: nn.Module, frames: int, size: tuple[int, int], shifted_reading: str):
    """``(relevance (T, G_h, G_w) at patch level, frame weights (T,))`` from an SCT forward pass."""
    clip_layers = list(model.clip_encoder.layers)
    weights = (ro.frame_weights([_weights(layer.attn) for layer in clip_layers]) if clip_layers
               else torch.full((frames,), 1.0 / frames, dtype=torch.float64))
    grids = _sct_grids(model, size)
    r_cls = weights.clone()
    r = torch.zeros(frames, *grids[-1][1], dtype=torch.float64)
    for block, (before, after) in zip(reversed(model.blocks), reversed(grids)):
        tokens = torch.cat([r_cls[:, None], r.reshape(frames, -1)], dim=1)
        for layer in reversed(block.temporal):
            tokens = _temporal_step(layer, tokens, shifted_reading)
        r_cls, r = tokens[:, 0], tokens[:, 1:].reshape(frames, *after)
        if block.cls_token is not None:
            r_cls = None  # the [CLS] starts here as a learnt token: its relevance leaves the input
        if block.pool is not None:
            r = ro.pool_step(r)[:, : before[0], : before[1]]
        for part in (block.global_, block.local):
            if part is not None:
                r_cls, r = _image_step(part, r_cls, r)
    return r, weights


# ----------------------------------------------------------------------------- ViT family


def _shift_offsets(n_div: int) -> dict[int, float]:
    """Frame offsets of a channel shift with 1/n_div of the channels from t+1 and from t-1."""
    if n_div == 0:
        return {0: 1.0}
    return {1: 1.0 / n_div, -1: 1.0 / n_div, 0: 1.0 - 2.0 / n_div}


def _encoder_step(encoder: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """Relevance ``(T, 1 + S)`` back through a ``ViTEncoder``'s blocks (any ``temporal`` kind)."""
    from sct.models.attention.divided import DividedSpaceTimeAttention
    from sct.models.attention.mixing import SpaceTimeMixingAttention

    for block in reversed(encoder.blocks):
        attn = block.attn
        if isinstance(attn, SpaceTimeMixingAttention):
            if attn.summary_token:
                raise ConfigError("visualize: rollout through X-ViT summary tokens is not supported")
            r = ro.temporal_step(r, _weights(attn), _shift_offsets(attn.n_div), cyclic=False)
        elif isinstance(attn, DividedSpaceTimeAttention):
            # One clip [CLS] stored as T copies: relevance on it is shared evenly by the copies.
            r[:, 0] = r[:, 0].mean()
            r = ro.temporal_step(r, _weights(attn), {0: 1.0}, cyclic=False)
            r[:, 0] = r[:, 0].mean()
            r[:, 1:] = ro.dense_step(r[:, 1:].T, _weights(attn, "last_temporal_attention")).T
        else:
            r = ro.temporal_step(r, _weights(attn), {0: 1.0}, cyclic=False)
        if encoder.temporal == "tsm":
            r = ro.shift_step(r, _shift_offsets(encoder.shift.n_div))
    return r


def _vit_relevance(model: nn.Module, frames: int, shifted_reading: str):
    """``(relevance (T, g, g), frame weights (T,))`` from a ``VideoViT`` or ``ViTSCT`` forward pass."""
    from sct.models.heads import TemporalAttentionAggregation
    from sct.models.vit_video import ViTSCT

    encoder = model.encoder
    if isinstance(model, ViTSCT):
        clip_layers = list(model.clip_encoder.layers)
        weights = ro.frame_weights([_weights(layer.attn) for layer in clip_layers]) if clip_layers else None
    elif isinstance(model.head, TemporalAttentionAggregation):
        weights = ro.frame_weights([_weights(model.head.layer.attn)])
    else:
        weights = None
    if weights is None:
        weights = torch.full((frames,), 1.0 / frames, dtype=torch.float64)
    n_tokens = encoder.pos_embed.shape[1]
    r = torch.zeros(frames, n_tokens, dtype=torch.float64)
    r[:, 0] = weights
    for layer in reversed(getattr(model, "temporal", [])):
        r = _temporal_step(layer, r, shifted_reading)
    r = _encoder_step(encoder, r)
    grid = int(round((n_tokens - 1) ** 0.5))
    return r[:, 1:].reshape(frames, grid, grid), weights


# ----------------------------------------------------------------------------- model-level entry point


@torch.no_grad()
def attention_maps(model: nn.Module, clip: torch.Tensor, shifted_reading: str = "keys"):
    """Rollout heat maps of ``model`` on one clip ``(3, T, H, W)`` (normalised).

    Returns ``(maps (T, H, W) in [0, 1] normalised over the clip, frame weights (T,), logits (classes,))``.
    """
    from sct.models.sct import SCT
    from sct.models.vit_video import VideoViT, ViTSCT

    if shifted_reading not in SHIFTED_READINGS:
        raise ConfigError(f"--shifted-relevance must be one of {SHIFTED_READINGS}, got {shifted_reading!r}")
    model.eval()
    frames, size = clip.shape[1], tuple(clip.shape[2:])
    with stored_attention(model):
        logits = model(clip[None])[0]
        if isinstance(model, SCT):
            relevance, weights = _sct_relevance(model, frames, size, shifted_reading)
        elif isinstance(model, (VideoViT, ViTSCT)):
            relevance, weights = _vit_relevance(model, frames, shifted_reading)
        else:
            raise ConfigError(f"visualize supports SCT and the ViT video models, not {type(model).__name__}")
    return ro.heatmaps(relevance, size), weights, logits


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
    from sct.data.datasets import DataConfig

    if args.checkpoint:
        from sct.engine.checkpoint import model_from_checkpoint
        from sct.engine.evaluate import checkpoint_run_config

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
