"""``sct runs [DIR]``: the run folders under a directory, one line each, to find the run to resume or evaluate.

A run folder is a directory holding ``config.yaml`` and ``metrics.jsonl`` or ``checkpoints/`` (what
``sct train`` writes); folders inside a run (checkpoints, eval outputs, TensorBoard events) are not
searched. Each run shows its model, data root, epochs and optimiser steps reached, best validation top-1,
the video top-1 of each ``sct eval`` written into it (``eval_<split>_<views>/eval.json``) and a status:

- ``running``: a live process holds it. ``run.lock`` names its owner (pid and host): on this host the
  pid must be alive; a lock on another host, or a folder without a lock file, counts as running when
  ``metrics.jsonl`` changed within ``--active-minutes``;
- ``finished``: ``summary.json`` was written after the last training record;
- ``resumable``: stopped (killed, interrupted, out of time) with a complete checkpoint to continue from
  (``sct train --config <run>/config.yaml resume=auto``);
- ``failed``: the loss diverged, or the run stopped before writing any checkpoint.

Nothing is locked or written: listing never disturbs a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from sct.engine.checkpoint import latest_checkpoint
from sct.engine.metrics import read_metrics
from sct.engine.run_lock import LOCK_NAME
from sct.errors import SCTError

STATUSES = ("running", "finished", "resumable", "failed")
# Sub-folders of a run that are never run folders themselves.
_RUN_PARTS = {"checkpoints", "tensorboard"}


@dataclasses.dataclass
class RunInfo:
    """One row of ``sct runs``; ``to_json`` gives the ``--json`` object."""

    path: str
    model: str
    data: str
    epoch: int
    epochs: int | None
    step: int
    best_val_top1: float | None
    best_val_epoch: int | None
    status: str
    detail: str
    updated: float  # seconds since the epoch (the newest of metrics.jsonl, summary.json, checkpoints)
    evals: dict[str, float] = dataclasses.field(default_factory=dict)  # "<split>_<views>" -> video top-1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_runs(directory: str | os.PathLike) -> list[Path]:
    """Run folders at or under ``directory``, sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise SCTError(f"{root}: no such directory")
    found = []
    for current, subdirs, _ in os.walk(root):
        folder = Path(current)
        if _is_run(folder):
            found.append(folder)
            subdirs.clear()
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _RUN_PARTS)
    return sorted(found)


def _is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and ((folder / "metrics.jsonl").is_file()
                                                   or (folder / "checkpoints").is_dir())


def _lock_owner(folder: Path) -> dict[str, Any] | None:
    """The owner written in ``run.lock`` (None: no lock file, or released: empty)."""
    try:
        owner = json.loads((folder / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _lock_says(folder: Path) -> tuple[bool | None, str]:
    """Whether ``run.lock`` shows a live owner: True/False when it can tell (an owner on this host), else None."""
    owner = _lock_owner(folder)
    if owner is None:
        return None, "no lock file"
    if owner.get("host") != socket.gethostname():
        return None, f"locked by pid {owner.get('pid')} on {owner.get('host')}"
    if _pid_alive(owner.get("pid")):
        return True, f"pid {owner.get('pid')}"
    return False, f"lock of pid {owner.get('pid')}, which is gone"


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _read_evals(folder: Path) -> dict[str, float]:
    """Video top-1 of every ``eval_<split>_<views>/eval.json`` in the run folder, by ``<split>_<views>``."""
    evals = {}
    for path in sorted(folder.glob("eval_*/eval.json")):
        try:
            evals[path.parent.name.removeprefix("eval_")] = float(json.loads(path.read_text())["top1"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return evals


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def describe_run(folder: Path, active_seconds: float = 600.0) -> RunInfo:
    """The row of run ``folder`` (see the module docstring for the status rules)."""
    config = _read_config(folder)
    records = _safe_metrics(folder / "metrics.jsonl")
    epochs_done = [r for r in records if r.get("type") == "epoch"]
    vals = [(r["val_top1"], r["epoch"]) for r in epochs_done if r.get("val_top1") is not None]
    best = max(vals, key=lambda v: v[0]) if vals else (None, None)
    step = max((r.get("step", 0) for r in records if r.get("type") in ("step", "epoch")), default=0)
    checkpoint = latest_checkpoint(folder / "checkpoints")
    updated = max(_mtime(folder / "metrics.jsonl"), _mtime(folder / "summary.json"),
                  _mtime(checkpoint.state) if checkpoint else 0.0)
    summary = _read_summary(folder)
    status, detail = _status(folder, records, step, summary, checkpoint, updated, active_seconds)
    train_cfg, data_cfg = config.get("train") or {}, config.get("data") or {}
    return RunInfo(
        path=str(folder), model=str((config.get("model") or {}).get("name", "?")),
        data=str(data_cfg.get("root", "?")), epoch=epochs_done[-1]["epoch"] if epochs_done else 0,
        epochs=train_cfg.get("epochs"), step=step, best_val_top1=best[0], best_val_epoch=best[1],
        status=status, detail=detail, updated=updated, evals=_read_evals(folder),
    )


def _safe_metrics(path: Path) -> list[dict[str, Any]]:
    try:
        return read_metrics(path)
    except ValueError:  # a line cut short by a kill: keep what parses
        lines = path.read_text().splitlines()
        return [r for r in map(_parse_line, lines) if r is not None]


def _parse_line(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _status(folder: Path, records: list[dict[str, Any]], step: int, summary: dict[str, Any] | None, checkpoint,
            updated: float, active_seconds: float) -> tuple[str, str]:
    alive, why = _lock_says(folder)
    if alive:
        return "running", why
    if summary is not None and summary.get("global_step", -1) >= step:
        return "finished", f"{summary.get('global_step')} steps"
    if records and records[-1].get("type") == "diverged":
        return "failed", f"loss diverged at step {records[-1].get('step')}"
    if alive is None and time.time() - updated <= active_seconds:
        return "running", f"metrics written {_age(time.time() - updated)}, {why}"
    if checkpoint is not None:
        return "resumable", f"from {checkpoint.weights.relative_to(folder)}"
    return "failed", "stopped before its first checkpoint"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def format_table(runs: list[RunInfo], base: Path) -> str:
    """The text table of ``sct runs`` (paths relative to ``base``)."""
    headers = ["run", "model", "data", "epoch", "step", "best val top-1", "eval top-1", "status", "updated",
               "detail"]
    now = time.time()
    rows = []
    for run in runs:
        rel = os.path.relpath(run.path, base)
        epoch = f"{run.epoch}/{run.epochs}" if run.epochs else str(run.epoch)
        best = f"{run.best_val_top1:.1f} (ep {run.best_val_epoch})" if run.best_val_top1 is not None else "-"
        evals = ", ".join(f"{name} {top1:.1f}" for name, top1 in run.evals.items()) or "-"
        rows.append([rel, run.model, run.data, epoch, str(run.step), best, evals, run.status,
                     _age(now - run.updated), run.detail])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", default="runs", metavar="DIR",
                        help="where to look for run folders, at any depth (default: runs)")
    parser.add_argument("--json", action="store_true", help="one JSON list of runs instead of the table")
    parser.add_argument("--status", choices=STATUSES, help="only runs with this status")
    parser.add_argument("--active-minutes", type=float, default=10.0, metavar="M",
                        help="a run without a lock on this host counts as running if its metrics changed "
                             "within M minutes (default 10)")


def run(args: argparse.Namespace) -> int:
    if args.active_minutes <= 0:
        raise SCTError(f"--active-minutes must be > 0, got {args.active_minutes}")
    runs = [describe_run(folder, args.active_minutes * 60) for folder in find_runs(args.directory)]
    runs.sort(key=lambda r: r.updated, reverse=True)
    if args.status:
        runs = [r for r in runs if r.status == args.status]
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
    elif runs:
        print(format_table(runs, Path(args.directory)))
    else:
        print(f"no run folders under {args.directory}")
    return 0
