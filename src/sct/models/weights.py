"""Weights on disk: safetensors I/O and importing pretrained checkpoints into ``sct`` models.

- ``save_weights(weights, path, metadata)`` / ``load_weights(path)``: safetensors with a metadata header,
  written atomically (the engine's checkpoints use them).
- ``read_state_dict``: safetensors (preferred), ``.pth``/``.pt``/``.bin``/``.ckpt``
  (``torch.load(weights_only=True)``, never unpickling code) and timm/big_vision ``.npz``.
- ``load_image_weights(model, path)``: an image ViT (timm, Hugging Face ``ViTModel`` or ``.npz`` key
  names) into the model's ``ViTEncoder``: position embedding resized bicubically on its 2-D grid, the
  patch kernel resampled when the patch size differs, TimeSformer's temporal attention initialised
  from the spatial one. Returns a ``LoadReport`` of what was loaded, missing and unused.
- ``load_timesformer_weights(model, path)``: Hugging Face ``TimesformerForVideoClassification`` (or the
  original facebookresearch keys) into a ``timesformer_b16``-architecture ``VideoViT``.
- ``load_pretrained(model, path)``: what ``create_model(..., pretrained=PATH)`` calls; picks one of the
  above or, for a checkpoint of the same model, loads it as is.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from sct.errors import CheckpointError
from sct.models.transfer import load_transfer
from sct.models.vit_encoder import (
    BIG_VISION_LAYERS,
    HF_VIT_LAYER_KEYS,
    HF_VIT_QKV_KEYS,
    XVIT_KEYS,
    ViTEncoder,
    big_vision_block_keys,
    resize_pos_embed,
)
from sct.models.vit_video import TIMESFORMER_KEYS
from sct.outputs import writing

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Parameters a video model adds to an image ViT; they keep their (zero / neutral) initialisation.
VIDEO_ONLY = re.compile(r"(^|\.)(temporal_embed|temporal_fc\.(weight|bias))$")


@dataclass
class LoadReport:
    """What a weight import did; ``str()`` is a readable summary."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for title, keys in (("missing (left at init)", self.missing),
                            ("new in this model (kept at their initialisation)", self.new),
                            ("unused from the checkpoint", self.unexpected)):
            if keys:
                lines.append(f"  {title}: {len(keys)}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- I/O
def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temp file, fsync it, rename it into place: a crash leaves
    the old file or the new one, never a torn one.

    An OS error (disk full, read-only, ...) leaves the previous ``path`` as it was and raises an
    :class:`~sct.errors.OutputError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_weights(weights: nn.Module | StateDict, path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a module's state dict (or a state dict) and its header ``metadata`` as safetensors;
    returns the path."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    blob = save_safetensors_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(blob))
    return Path(path)


def load_weights(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """``(state_dict, metadata)`` of a safetensors file; ``CheckpointError`` names the path on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {err}") from None
    return tensors, metadata


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Tensors of a weights file, by suffix: ``.safetensors``, ``.pth/.pt/.bin/.ckpt``, ``.npz``.

    Torch files are opened with ``weights_only=True``; a ``model``/``state_dict``/``module`` wrapper and
    a DistributedDataParallel ``module.`` prefix are removed. Raises ``CheckpointError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            state = load_file(str(path))
        elif suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npz":
            with np.load(path) as npz:
                state = {k: torch.from_numpy(np.asarray(npz[k], dtype=np.float32)) for k in npz.files}
        else:
            raise CheckpointError(f"{path}: unknown weights format {suffix!r}; expected .safetensors, "
                                  f"{', '.join(TORCH_SUFFIXES)} or .npz")
    except CheckpointError:
        raise
    except Exception as err:  # corrupt file, pickled code refused by weights_only, bad zip, ...
        raise CheckpointError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from err
    return _unwrap(state, path)


def _unwrap(state: object, path: Path) -> StateDict:
    while isinstance(state, dict):
        inner = next((state[k] for k in ("model", "state_dict", "module") if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: no state dict found")
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return tensors


# ------------------------------------------------------------------------- image ViT -> timm names
def to_timm_vit(state: StateDict, path: str = "checkpoint") -> StateDict:
    """An image ViT state dict in timm, Hugging Face ``ViTModel`` or big_vision/timm ``.npz`` names -> timm
    names (``patch_embed.proj.weight``, ``cls_token``, ``pos_embed``, ``blocks.i.*``, ``norm.*``, ...).

    Keys that belong to no backbone part (classifier, pooler) are kept under their original names.
    """
    for key in state:
        if key.endswith("embeddings.patch_embeddings.projection.weight"):
            return _hf_vit_to_timm(state, key.removesuffix("embeddings.patch_embeddings.projection.weight"))
        if key.endswith("embedding/kernel"):
            return _jax_vit_to_timm(state, key.removesuffix("embedding/kernel"))
        if key.endswith("patch_embed.proj.weight"):
            prefix = key.removesuffix("patch_embed.proj.weight")
            return {k.removeprefix(prefix) if k.startswith(prefix) else k: v for k, v in state.items()}
    raise CheckpointError(
        f"{path}: not an image ViT checkpoint: no patch embedding among its {len(state)} keys (expected timm "
        "'patch_embed.proj.weight', Hugging Face 'embeddings.patch_embeddings.projection.weight' or "
        "big_vision 'embedding/kernel')"
    )


def _hf_vit_to_timm(state: StateDict, prefix: str) -> StateDict:
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    layer = re.compile(rf"^{re.escape(prefix)}(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state.items():
        name = key.removeprefix(prefix) if key.startswith(prefix) else None
        match = layer.match(key)
        if name == "embeddings.cls_token":
            out["cls_token"] = value
        elif name == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif name is not None and name.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + name.rsplit(".", 1)[1]] = value
        elif name is not None and name.startswith("layernorm."):
            out["norm." + name.rsplit(".", 1)[1]] = value
        elif match and match[2] in HF_VIT_QKV_KEYS:
            qkv.setdefault((match[1], match[3]), {})[HF_VIT_QKV_KEYS[match[2]]] = value
        elif match and match[2] in HF_VIT_LAYER_KEYS:
            out[f"blocks.{match[1]}.{HF_VIT_LAYER_KEYS[match[2]]}.{match[3]}"] = value
        else:
            out[key] = value
    for (i, kind), parts in qkv.items():
        if len(parts) != 3:
            raise CheckpointError(f"layer {i}: query/key/value {kind} incomplete (found {sorted(parts)})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _jax_vit_to_timm(state: StateDict, prefix: str) -> StateDict:
    """big_vision / original ``vit_jax`` names (as timm's ``_load_weights`` reads them)."""
    w = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    old_style = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in w
    mha, mlp = BIG_VISION_LAYERS[old_style][1::2]
    names = big_vision_block_keys(old_style)
    used = {"embedding/kernel", "embedding/bias", "cls", "Transformer/posembed_input/pos_embedding",
            "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    out: StateDict = {
        "patch_embed.proj.weight": w["embedding/kernel"].permute(3, 2, 0, 1),
        "patch_embed.proj.bias": w["embedding/bias"],
        "cls_token": w["cls"],
        "pos_embed": w["Transformer/posembed_input/pos_embedding"],
        "norm.weight": w["Transformer/encoder_norm/scale"],
        "norm.bias": w["Transformer/encoder_norm/bias"],
    }
    depth = len({k.split("/")[1] for k in w if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        for ours, theirs in names.items():
            out[dst + ours] = w[src + theirs]
        out[dst + "mlp.fc1.weight"] = w[src + f"{mlp}/Dense_0/kernel"].T
        out[dst + "mlp.fc2.weight"] = w[src + f"{mlp}/Dense_1/kernel"].T
        out[dst + "attn.proj.weight"] = w[src + f"{mha}/out/kernel"].flatten(0, 1).T
        out[dst + "attn.qkv.weight"] = torch.cat([w[src + f"{mha}/{n}/kernel"].flatten(1).T for n in
                                                  ("query", "key", "value")])
        out[dst + "attn.qkv.bias"] = torch.cat([w[src + f"{mha}/{n}/bias"].flatten() for n in
                                                ("query", "key", "value")])
        used |= {src + t for t in names.values()} | {src + f"{mlp}/Dense_{j}/kernel" for j in (0, 1)}
        used |= {src + f"{mha}/{n}/{p}" for n in ("query", "key", "value", "out") for p in ("kernel", "bias")}
    out.update({prefix + k: v for k, v in w.items() if k not in used})
    return {k: v.contiguous() for k, v in out.items()}


# ------------------------------------------------------------------------------ resizing helpers
def resize_patch_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Patch-embedding kernel ``(C, 3, p, p) -> (C, 3, size, size)``.

    The new kernel answers a ``size x size`` patch exactly as the old one answers that patch resized
    (bilinearly) to ``p x p``: ``w_new = B^T w`` with ``B`` the resize as a matrix. Loading a /16 model
    into a /8 one is then the image model run on the frames upsampled 2x.
    """
    old = weight.shape[-1]
    if old == size:
        return weight
    basis = torch.eye(size * size, dtype=torch.float64).reshape(size * size, 1, size, size)
    resize = F.interpolate(basis, size=(old, old), mode="bilinear", align_corners=False)
    resize = resize.reshape(size * size, old * old)
    new = weight.double().flatten(2) @ resize.T
    return new.reshape(*weight.shape[:2], size, size).to(weight.dtype)


def _find_encoder(model: nn.Module, path: str | os.PathLike) -> tuple[str, ViTEncoder]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, ViTEncoder)]
    if len(found) != 1:
        raise CheckpointError(f"{path}: not a checkpoint of this {type(model).__name__}, and image ViT weights "
                              f"need a model with exactly one ViT encoder (this one has {len(found)})")
    return found[0]


def _timm_to_encoder(timm: StateDict, encoder: ViTEncoder, report: LoadReport) -> StateDict:
    """timm names -> the encoder's names and shapes (divided attention, resized embeddings)."""
    target = encoder.state_dict()
    out: StateDict = {}
    for key, value in timm.items():
        if key in XVIT_KEYS and value.shape == target[XVIT_KEYS[key]].shape:
            key = XVIT_KEYS[key]
        if key == "pos_embed":
            value = _fit_pos_embed(value, target[key].shape, "dist_token" in timm, report)
        elif key == "patch_embed.proj.weight" and value.shape[-1] != encoder.patch_size:
            report.notes.append(f"patch kernel resampled {value.shape[-1]}x{value.shape[-1]} -> "
                                f"{encoder.patch_size}x{encoder.patch_size}")
            value = resize_patch_kernel(value, encoder.patch_size)
        for name in encoder.image_key_targets(key):
            out[name] = value
    return out


def _fit_pos_embed(pos: torch.Tensor, shape: torch.Size, distilled: bool, report: LoadReport) -> torch.Tensor:
    """``(1, prefix + g*g, C) -> shape``: DeiT's distillation entry dropped, the grid resized bicubically."""
    if distilled:
        pos = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
        report.notes.append("pos_embed: the distillation token's entry dropped")
    if pos.shape[1:] != shape[1:]:
        report.notes.append(f"pos_embed resized bicubically {tuple(pos.shape)} -> {tuple(shape)}")
    try:
        return resize_pos_embed(pos, (round((shape[1] - 1) ** 0.5),) * 2)
    except ValueError as err:
        raise CheckpointError(f"{report.path}: pos_embed {tuple(pos.shape)}: {err}") from err


def _load_into(module: nn.Module, state: StateDict, report: LoadReport, prefix: str = "") -> LoadReport:
    """Load matching keys into ``module``; shape mismatches raise, the rest goes into ``report``."""
    target = module.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
           for k, v in state.items() if k in target and v.shape != target[k].shape]
    if bad:
        raise CheckpointError(f"{report.path}: shape mismatch for {len(bad)} tensor(s): " + "; ".join(bad[:8]))
    usable = {k: v for k, v in state.items() if k in target}
    module.load_state_dict(usable, strict=False)
    report.loaded += sorted(prefix + k for k in usable)
    absent = sorted(k for k in target if k not in usable)
    report.new += [prefix + k for k in absent if VIDEO_ONLY.search(k)]
    report.missing += [prefix + k for k in absent if not VIDEO_ONLY.search(k)]
    report.unexpected += sorted(k for k in state if k not in target)
    return report


def load_image_weights(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> LoadReport:
    """Import an image ViT checkpoint into the model's ``ViTEncoder``; see the module docstring.

    The classifier of the image model is never loaded (it is listed as unused). ``strict``: raise
    ``CheckpointError`` when an encoder parameter other than the video-only ones is missing.
    """
    prefix, encoder = _find_encoder(model, path)
    report = LoadReport(str(path))
    timm = to_timm_vit(read_state_dict(path), str(path))
    _load_into(encoder, _timm_to_encoder(timm, encoder, report), report, prefix + "." if prefix else "")
    _finish(report, strict)
    return report


# ------------------------------------------------------------------------------------ TimeSformer
def _is_timesformer(state: StateDict) -> bool:
    return any(k.startswith("timesformer.embeddings.") or k.endswith("temporal_attn.qkv.weight") for k in state)


def load_timesformer_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Import TimeSformer weights (Hugging Face ``TimesformerForVideoClassification`` or the original
    repository's names) into a ``VideoViT`` with ``temporal="divided"``.

    Position and time embeddings are resized when the image size or clip length differ; the
    classifier is loaded when its class count matches (listed as unused otherwise).
    """
    _, encoder = _find_encoder(model, path)
    if encoder.temporal != "divided":
        raise CheckpointError(f"{path}: TimeSformer weights need a divided-attention model such as "
                              f"timesformer_b16 (this encoder uses {encoder.temporal!r})")
    report = LoadReport(str(path))
    state: StateDict = {}
    for key, value in read_state_dict(path).items():
        for pattern, repl in TIMESFORMER_KEYS:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                key = new
                break
        state[key] = value
    target = model.state_dict()
    if "encoder.temporal_embed" in state:
        time = state["encoder.temporal_embed"].reshape(1, -1, target["encoder.temporal_embed"].shape[-1])
        frames = target["encoder.temporal_embed"].shape[1]
        if time.shape[1] != frames:
            report.notes.append(f"time embedding resampled linearly {time.shape[1]} -> {frames} frames")
            time = F.interpolate(time.transpose(1, 2), size=frames, mode="linear").transpose(1, 2)
        state["encoder.temporal_embed"] = time.unsqueeze(2)
    if "encoder.pos_embed" in state and state["encoder.pos_embed"].shape != target["encoder.pos_embed"].shape:
        grid = int(round((target["encoder.pos_embed"].shape[1] - 1) ** 0.5))
        report.notes.append(f"pos_embed resized bicubically {tuple(state['encoder.pos_embed'].shape)} -> "
                            f"{tuple(target['encoder.pos_embed'].shape)}")
        state["encoder.pos_embed"] = resize_pos_embed(state["encoder.pos_embed"], (grid, grid))
    for key in ("head.fc.weight", "head.fc.bias"):
        if key in state and key in target and state[key].shape != target[key].shape:
            report.notes.append(f"classifier not loaded: checkpoint has {state[key].shape[0]} classes, "
                                f"model {target[key].shape[0]}")
            state[f"classifier.{key.rsplit('.', 1)[1]}"] = state.pop(key)
    _load_into(model, state, report)
    _finish(report, strict, allowed_missing=("head.",))
    return report


# ------------------------------------------------------------------------------------- dispatcher
def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load ``path`` into ``model``: a checkpoint of the same family (this model, its image model, or the
    same model for another class list or frame count: :mod:`sct.models.transfer`), TimeSformer weights,
    or image ViT weights for the ViT family."""
    state = read_state_dict(path)
    own = model.state_dict()
    if len(own.keys() & state.keys()) >= len(own) / 2:
        report = LoadReport(str(path))
        load_transfer(model, state, path, report)
        log.info("%s", report)
        return report
    if _is_timesformer(state):
        return load_timesformer_weights(model, path)
    return load_image_weights(model, path)


def _finish(report: LoadReport, strict: bool, allowed_missing: tuple[str, ...] = ()) -> None:
    log.info("%s", report)
    missing = [k for k in report.missing if not k.startswith(allowed_missing)]
    if strict and missing:
        raise CheckpointError(f"{report.path}: {len(missing)} parameter(s) missing from the checkpoint: "
                              f"{', '.join(missing[:12])}")


__all__ = [
    "LoadReport", "atomic_write", "load_image_weights", "load_pretrained", "load_timesformer_weights", "load_weights",
    "read_state_dict", "resize_patch_kernel", "save_weights", "to_timm_vit",
]
