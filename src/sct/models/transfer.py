"""Initialising a model from a checkpoint of its own family that was trained for another task.

What ``create_model(name, pretrained=PATH)`` does when ``PATH`` holds (mostly) the model's own parameter
names, as the papers' fine-tunes do it:

- image -> video: an ``sct_*_image`` checkpoint into ``sct_*``: the frame pathway (``patch_embed.*``,
  ``blocks.*``) loads by name; the clip encoder is new (left at its initialisation); the image head
  (``norm.*``, ``head.*``) is unused.
- video -> video (Table 9's ImageNet+Kinetics rows, every UCF101/HMDB51 fine-tune): a checkpoint with
  another class list has its classifier dropped and re-initialised; another frame count has its
  temporal position embeddings resampled linearly along time; another image size has a ViT's spatial
  position embedding resized bicubically.

Everything else must match: a backbone tensor of another shape (a checkpoint of another width) or a
backbone tensor absent from the checkpoint raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from sct.errors import CheckpointError
from sct.models.sct_image import HEAD_KEYS as IMAGE_HEAD
from sct.models.vit_encoder import resize_pos_embed

StateDict = dict[str, torch.Tensor]
# The parts that turn frames into features; everything after them (clip encoder, heads) may be new.
BACKBONE_PREFIXES = ("patch_embed.", "blocks.", "encoder.")
# Temporal position embeddings: (1, 1 + T, D) with a clip [CLS] entry first, or (1, T, 1, C).
TIME_WITH_CLS = re.compile(r"(^|\.)clip_encoder\.pos_embed$")
TIME_ONLY = re.compile(r"(^|\.)temporal_embed$")
SPATIAL_POS = re.compile(r"^encoder\.pos_embed$")


def classifier_keys(model: nn.Module) -> list[str]:
    """Parameter names of the final classifier: the last ``nn.Linear`` with ``num_classes`` outputs."""
    num_classes = model.config.num_classes
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            last = name
    return [] if last is None else [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters()]


def resample_time(value: torch.Tensor, frames: int, has_cls: bool) -> torch.Tensor:
    """Linear resampling of a temporal embedding to ``frames`` along dim 1 (the [CLS] entry kept)."""
    head, table = (value[:, :1], value[:, 1:]) if has_cls else (value[:, :0], value)
    shape = table.shape
    flat = table.reshape(shape[0], shape[1], -1).transpose(1, 2)
    flat = F.interpolate(flat, size=frames, mode="linear", align_corners=False)
    return torch.cat([head, flat.transpose(1, 2).reshape(shape[0], frames, *shape[2:])], dim=1)


def fit_state(model: nn.Module, state: StateDict, report) -> StateDict:
    """``state`` made to fit ``model``: classifier dropped when its class count differs, temporal and
    spatial position embeddings resized. Other shape mismatches raise, naming ``report.path``."""
    target = model.state_dict()
    heads = set(classifier_keys(model))
    out: StateDict = {}
    wrong = []
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want.shape:
            out[key] = value
        elif key in heads:
            report.notes.append(f"{key} dropped and re-initialised: checkpoint {tuple(value.shape)}, "
                                f"model {tuple(want.shape)} (another class list)")
        elif (TIME_WITH_CLS.search(key) or TIME_ONLY.search(key)) and value.shape[2:] == want.shape[2:]:
            has_cls = TIME_WITH_CLS.search(key) is not None
            frames = want.shape[1] - int(has_cls)
            report.notes.append(f"{key} resampled linearly {value.shape[1] - int(has_cls)} -> {frames} frames")
            out[key] = resample_time(value, frames, has_cls)
        elif SPATIAL_POS.search(key) and value.shape[-1] == want.shape[-1]:
            report.notes.append(f"{key} resized bicubically {tuple(value.shape)} -> {tuple(want.shape)}")
            out[key] = resize_pos_embed(value, (round((want.shape[1] - 1) ** 0.5),) * 2)
        else:
            wrong.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}")
    if wrong:
        raise CheckpointError(f"{report.path}: shape mismatch for {len(wrong)} tensor(s) (a checkpoint of "
                              f"another model size?): " + "; ".join(wrong[:8]))
    return out


def load_transfer(model: nn.Module, state: StateDict, path: str | os.PathLike, report) -> None:
    """Load a same-family checkpoint into ``model`` (see the module docstring); fills ``report``.

    ``report.new``: the model's parameters the checkpoint does not provide (clip encoder, classifier),
    ``report.unexpected``: the checkpoint's image head. Raises ``CheckpointError`` when a backbone
    parameter is missing or the checkpoint holds other unused tensors.
    """
    fitted = fit_state(model, state, report)
    target = model.state_dict()
    usable = {k: v for k, v in fitted.items() if k in target}
    model.load_state_dict(usable, strict=False)
    report.loaded += sorted(usable)
    absent = sorted(k for k in target if k not in usable)
    backbone_missing = [k for k in absent if k.startswith(BACKBONE_PREFIXES)]
    unused = sorted(k for k in state if k not in target)
    foreign = [k for k in unused if k not in IMAGE_HEAD]
    if backbone_missing or foreign:
        detail = "; ".join(f"{title}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}" for title, keys in
                           (("missing", backbone_missing), ("unexpected", foreign)) if keys)
        raise CheckpointError(f"{path} does not fit {type(model).__name__} ({detail})")
    report.new += absent
    report.unexpected += unused
