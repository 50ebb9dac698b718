"""Classifying the last T frames of a stream every K frames, with each frame's work done once where possible.

Three strategies share one interface: ``push(frame)`` takes the newest frame ``(3, S, S)`` (normalised)
and does the per-frame work; ``classify()`` returns logits ``(classes,)`` for the last ``window`` frames.

- :class:`Recompute`: keeps the frames and runs the whole model on each window (any model).
- :class:`CyclicReuse` (SCT with the paper's cyclic shift): a frame's tiny-patch embedding and first
  block's image layers (ViLT, LSH, pooling) run once, at ``push``; each window runs the rest (the first
  shifted layer on) over its T frames. The first frame of a window takes its keys from the window's last
  one, so nothing after the first shifted layer is a function of the frame alone.
  ``classify()`` equals ``model(window)``.
- :class:`CausalReuse` (SCT with ``shift_mode="causal"``): the whole frame encoder runs once per frame.
  Each shifted layer keeps its last ``shift_frames`` inputs, and the newest frame attends with the keys of
  the frame ``shift_frames`` before it, as in the offline model on the stream so far; each window then
  costs only the clip encoder over T stored features. ``classify()`` equals the clip encoder on the last
  T frames' features of ``model.forward_features`` over every frame since the stream began; equivalently
  over the last ``window + receptive_field(config)`` frames (docs/streaming.md).
"""

from __future__ import annotations

from collections import deque

import torch
from einops import rearrange
from torch import nn

from sct.errors import ConfigError
from sct.models.sct import SCT, split_tokens

REUSE_MODES = ("auto", "none", "cyclic", "causal")


def receptive_field(config) -> int:
    """Earlier frames a causal SCT frame feature depends on: ``shift_frames`` x the number of shifted layers."""
    if config.effective_temporal_kind != "shifted":
        return 0
    return config.shift_frames * config.temporal_depth * config.num_blocks


class Recompute:
    """The whole model on every window: ``model(last T frames)``."""

    def __init__(self, model: nn.Module, window: int):
        self.model, self.window = model, window
        self.frames: deque[torch.Tensor] = deque(maxlen=window)

    def push(self, frame: torch.Tensor) -> None:
        """``frame`` ``(3, S, S)``."""
        self.frames.append(frame)

    def ready(self) -> bool:
        return len(self.frames) == self.window

    @torch.inference_mode()
    def classify(self) -> torch.Tensor:
        """Logits ``(classes,)`` of the last ``window`` frames."""
        return self.model(torch.stack(list(self.frames), dim=1)[None])[0]


class CyclicReuse(Recompute):
    """SCT, cyclic shift: per-frame work up to the first shifted layer once per frame, the rest per window."""

    def __init__(self, model: SCT, window: int):
        super().__init__(model, window)
        self.size: tuple[int, int] | None = None

    @torch.inference_mode()
    def push(self, frame: torch.Tensor) -> None:
        tokens, self.size = self.model.blocks[0].frame_part(self.model.embed(frame[None]), None)
        self.frames.append(tokens[0])

    @torch.inference_mode()
    def classify(self) -> torch.Tensor:
        model, first = self.model, self.model.blocks[0]
        tokens = torch.stack(list(self.frames))[None]  # (1, T, N, C)
        for layer in first.temporal:
            tokens = layer(tokens)
        grid, cls = split_tokens(rearrange(tokens, "b t n c -> (b t) n c"), *self.size)
        for block in model.blocks[1:]:
            grid, cls = block(grid, cls, self.window)
        return model.forward_head(cls[None])[0]


class CausalReuse(Recompute):
    """SCT, causal shift: one frame through the frame encoder per ``push``, the clip encoder per window."""

    def __init__(self, model: SCT, window: int):
        super().__init__(model, window)
        c = model.config
        if c.effective_temporal_kind not in ("shifted", "space") or (
                c.effective_temporal_kind == "shifted" and c.shift_mode != "causal"):
            raise ConfigError(f"causal reuse needs an SCT trained with shift_mode=causal (this one: temporal_kind="
                              f"{c.temporal_kind}, shift_mode={c.shift_mode}); use --reuse cyclic or none")
        shift = c.shift_frames if c.effective_temporal_kind == "shifted" else 0
        # Per shifted layer, the inputs of the last `shift` frames: the keys the next frames will need.
        self.history = [deque(maxlen=shift) for block in model.blocks for _ in block.temporal]

    @torch.inference_mode()
    def push(self, frame: torch.Tensor) -> None:
        grid, cls, layer_index = self.model.embed(frame[None]), None, 0
        for block in self.model.blocks:
            tokens, size = block.frame_part(grid, cls)
            tokens = tokens[:, None]  # (1, 1, N, C)
            for layer in block.temporal:
                past = self.history[layer_index]
                # The newest frame sits at index len(past): it takes the keys of index len(past) - shift, the
                # frame `shift` before it, or its own while the stream is younger than `shift` frames.
                out = layer(torch.cat([*past, tokens], dim=1))[:, -1:]
                if past.maxlen:
                    past.append(tokens)
                tokens, layer_index = out, layer_index + 1
            grid, cls = split_tokens(tokens[:, 0], *size)
        self.frames.append(cls[0])

    @torch.inference_mode()
    def classify(self) -> torch.Tensor:
        return self.model.forward_head(torch.stack(list(self.frames))[None])[0]


def window_classifier(model: nn.Module, window: int, reuse: str = "auto") -> Recompute:
    """The strategy for ``reuse`` (one of :data:`REUSE_MODES`); ``auto`` picks the cheapest exact one."""
    if reuse not in REUSE_MODES:
        raise ConfigError(f"--reuse must be one of {', '.join(REUSE_MODES)}, got {reuse!r}")
    if reuse == "none":
        return Recompute(model, window)
    if not isinstance(model, SCT):
        if reuse == "auto":
            return Recompute(model, window)
        raise ConfigError(f"--reuse {reuse} needs an SCT model; {type(model).__name__} streams with --reuse none")
    if reuse == "auto":
        causal = model.config.shift_mode == "causal" or model.config.effective_temporal_kind == "space"
        reuse = "causal" if causal else "cyclic"
    return CausalReuse(model, window) if reuse == "causal" else CyclicReuse(model, window)
