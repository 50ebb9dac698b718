"""An ``sct`` checkpoint file: model weights as safetensors whose header describes them (the model name, its
config, the class names and the resolved run config), so a model is rebuilt from the file alone.

``sct train`` writes these files (``sct.engine.checkpoint`` keeps the training state beside them); every
reader (``sct eval``/``predict``/``export``/``stream``/``visualize``) loads them through this module, so
loading a trained model needs neither the engine nor the analysis package.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import yaml
from torch import nn

from sct.config import apply_override, coerce_model_fields, config_from_dict
from sct.errors import CheckpointError, ConfigError
from sct.models.registry import create_model
from sct.models.weights import load_weights

FORMAT = "sct-checkpoint-1"


def ema_path(weights: str | Path) -> Path:
    """Where the EMA weights of the checkpoint ``weights`` (``step_N.safetensors``) are: ``step_N.ema.safetensors``."""
    weights = Path(weights)
    return weights.with_name(f"{weights.name.removesuffix('.safetensors')}.ema.safetensors")


def model_metadata(model: nn.Module, model_name: str, class_names: list[str], run_config: str) -> dict[str, str]:
    """Header metadata that makes a weights file self-describing."""
    return {
        "format": FORMAT,
        "model": model_name,
        "model_config": json.dumps(dataclasses.asdict(model.config)),
        "classes": json.dumps(list(class_names)),
        "run_config": run_config,
    }


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a weights file; raises if it was not written by ``sct train``."""
    tensors, metadata = load_weights(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has no sct metadata (model name, config, classes); pass a checkpoint written by `sct train`"
        )
    return tensors, metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``sct`` header of a weights file; raises if the file was not written by ``sct train``."""
    return read_checkpoint(path)[1]


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(strict)``, turning any mismatch into a ``CheckpointError`` naming the file."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"checkpoint {path} does not fit model {type(model).__name__} ({detail})")
    model.load_state_dict(state_dict)


def model_from_checkpoint(path: str | Path, *, use_ema: bool = False) -> tuple[nn.Module, dict[str, str]]:
    """Rebuild the model a checkpoint was trained as and load its weights (the EMA ones if asked and present).

    Returns ``(model, metadata)``; ``metadata["classes"]`` is the JSON list of class names.
    """
    metadata = read_metadata(path)
    fields = coerce_model_fields(metadata["model"], json.loads(metadata["model_config"]))
    model = create_model(metadata["model"], **fields)
    source = ema_path(path) if use_ema and ema_path(path).is_file() else Path(path)
    state, _ = load_weights(source)
    load_into(model, state, source)
    return model, metadata


def checkpoint_run_config(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The resolved run config stored in a checkpoint, with ``data.*``/``eval.*`` overrides applied."""
    metadata = read_metadata(checkpoint)
    raw = yaml.safe_load(metadata["run_config"])
    for item in overrides:
        section = item.split("=", 1)[0].split(".", 1)[0]
        if section not in ("data", "eval"):
            raise ConfigError(f"override {item!r}: only data.* and eval.* can be changed when evaluating")
        apply_override(raw, item)
    return config_from_dict(raw)
