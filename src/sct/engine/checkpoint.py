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
import os
import re
from pathlib import Path
from typing import Any

import torch

from sct.errors import CheckpointError
from sct.models import weights as weights_io

# The file format and its readers live with the models (analysis and deploy read checkpoints without the
# engine); re-exported here under the names the engine has always had.
from sct.models.checkpoint_file import (  # noqa: F401
    FORMAT,
    ema_path,
    load_into,
    model_from_checkpoint,
    model_metadata,
    read_checkpoint,
    read_metadata,
)
from sct.models.weights import atomic_write, load_weights  # noqa: F401  (the engine's names for them)

_NAME = re.compile(r"^step_(\d+)\.state\.pt$")
_STEP_FILE = re.compile(r"^step_(\d+)\.(safetensors|ema\.safetensors|state\.pt)$")
_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Deprecated argument order, kept for callers: ``sct.models.weights.save_weights(state_dict, path, metadata)``."""
    weights_io.save_weights(state_dict, path, metadata)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` the training state (tensors, dicts, lists and numbers only)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | Path, fields: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """The training state at ``path`` (``torch.load(weights_only=True)``); ``CheckpointError`` if it is damaged.

    ``fields`` (name -> type) is the structure the caller needs: a missing key or a value of another type
    is reported as damage too, naming the key, instead of a ``KeyError`` later.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler fails on damaged bytes in many ways
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"training state {path} cannot be loaded (truncated or not a state file): "
                              f"{first_line}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {path} holds a {type(state).__name__}, not a dict of training state")
    for key, kind in (fields or {}).items():
        if key not in state:
            raise CheckpointError(f"training state {path} has no {key!r} entry")
        if not isinstance(state[key], kind):
            raise CheckpointError(f"training state {path}: {key!r} is a {type(state[key]).__name__}")
    return state


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
        state = weights.with_name(f"{weights.name.removesuffix('.safetensors')}.state.pt")
        return cls(weights, ema_path(weights), state)

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


def set_aside(paths: CheckpointPaths) -> list[Path]:
    """Rename a damaged checkpoint's files to ``*.damaged`` so resuming skips them; nothing is deleted."""
    moved = []
    for path in paths.files():
        if path.exists():
            target = path.with_name(path.name + ".damaged")
            os.replace(path, target)
            moved.append(target)
    return moved


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(directory: str | Path, *, checkpoints: bool) -> list[Path]:
    """Delete what killed writes leave in ``directory``; returns the deleted paths.

    Always: ``.NAME.tmp-PID`` files whose process is gone (a write killed before its rename). With
    ``checkpoints``: ``step_N`` files without the other half of a checkpoint, i.e. weights whose state
    file was never written (killed between the two) or a state file whose weights are gone (killed while
    pruning). Call it only while holding the run folder's lock, so no live run is writing there.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        temp = _TEMP.match(entry.name)
        step = _STEP_FILE.match(entry.name) if checkpoints else None
        if temp and int(temp[1]) != os.getpid() and not _pid_alive(int(temp[1])):
            removed.append(entry)
        elif step:
            paths = CheckpointPaths.for_step(directory, int(step[1]))
            if not (paths.weights.is_file() and paths.state.is_file()):
                removed.append(entry)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
