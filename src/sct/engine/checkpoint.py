"""Checkpoints: weights as safetensors, training state beside them, every file written atomically.

A checkpoint named ``step_00000120`` in ``run/checkpoints/`` is three files:

- ``step_00000120.safetensors``: model weights; the header metadata holds the model name, its config,
  the class names and the resolved run config, so ``sct eval``/``sct predict`` need nothing else;
- ``step_00000120.ema.safetensors``: EMA weights (only when EMA is on);
- ``step_00000120.state.pt``: optimiser, schedule, grad-scaler and sampler position (tensors, dicts and
  numbers only, so it loads with ``torch.load(weights_only=True)``). No RNG state is needed: the engine
  reseeds from ``(seed, rank, step)`` and models keep their random state in buffers. Written last: a
  checkpoint counts as complete only once its state file exists.

Each file goes to a temporary name, is fsynced, then renamed over the final name, so a crash (even
SIGKILL) leaves either the old complete checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sct.config import coerce_model_fields
from sct.errors import CheckpointError
from sct.models import weights as weights_io
from sct.models.registry import create_model
from sct.models.weights import atomic_write, load_weights

FORMAT = "sct-checkpoint-1"
_NAME = re.compile(r"^step_(\d+)\.state\.pt$")


def model_metadata(model: nn.Module, model_name: str, class_names: list[str], run_config: str) -> dict[str, str]:
    """Header metadata that makes a weights file self-describing."""
    return {
        "format": FORMAT,
        "model": model_name,
        "model_config": json.dumps(dataclasses.asdict(model.config)),
        "classes": json.dumps(list(class_names)),
        "run_config": run_config,
    }


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Deprecated argument order, kept for callers: ``sct.models.weights.save_weights(state_dict, path, metadata)``."""
    weights_io.save_weights(state_dict, path, metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``sct`` header of a weights file; raises if the file was not written by ``sct train``."""
    _, metadata = load_weights(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has no sct metadata (model name, config, classes); pass a checkpoint written by `sct train`"
        )
    return metadata


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


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` the training state (tensors, dicts, lists and numbers only)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"training state {path} cannot be loaded: {err}") from None


@dataclasses.dataclass(frozen=True)
class CheckpointPaths:
    """The files of one checkpoint; ``weights`` is what ``sct eval``/``--resume`` take."""

    weights: Path
    ema: Path
    state: Path

    @classmethod
    def for_step(cls, directory: Path, step: int) -> CheckpointPaths:
        return cls.from_weights(Path(directory) / f"step_{step:08d}.safetensors")

    @classmethod
    def from_weights(cls, weights: str | Path) -> CheckpointPaths:
        weights = Path(weights)
        stem = weights.name.removesuffix(".safetensors")
        return cls(weights, weights.with_name(f"{stem}.ema.safetensors"), weights.with_name(f"{stem}.state.pt"))

    def files(self) -> list[Path]:
        return [self.weights, self.ema, self.state]


def save_checkpoint(paths: CheckpointPaths, *, weights: dict[str, torch.Tensor], metadata: dict[str, str],
                    state: dict[str, Any], ema: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights, then EMA weights, then the state file that marks the checkpoint complete."""
    weights_io.save_weights(weights, paths.weights, metadata)
    if ema is not None:
        weights_io.save_weights(ema, paths.ema, metadata)
    save_state(paths.state, state)


def complete_checkpoints(directory: str | Path) -> list[tuple[int, CheckpointPaths]]:
    """``(step, paths)`` of every complete checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match:
            paths = CheckpointPaths.for_step(directory, int(match[1]))
            if paths.weights.is_file():
                found.append((int(match[1]), paths))
    return sorted(found, key=lambda item: item[0])


def latest_checkpoint(directory: str | Path) -> CheckpointPaths | None:
    found = complete_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (state file first, so none is half-gone)."""
    for _, paths in complete_checkpoints(directory)[:-keep]:
        for path in (paths.state, paths.ema, paths.weights):
            path.unlink(missing_ok=True)


def model_from_checkpoint(path: str | Path, *, use_ema: bool = False) -> tuple[nn.Module, dict[str, str]]:
    """Rebuild the model a checkpoint was trained as and load its weights (the EMA ones if asked and present).

    Returns ``(model, metadata)``; ``metadata["classes"]`` is the JSON list of class names.
    """
    metadata = read_metadata(path)
    fields = coerce_model_fields(metadata["model"], json.loads(metadata["model_config"]))
    model = create_model(metadata["model"], **fields)
    source = CheckpointPaths.from_weights(path).ema
    source = source if use_ema and source.is_file() else Path(path)
    state, _ = load_weights(source)
    load_into(model, state, source)
    return model, metadata
