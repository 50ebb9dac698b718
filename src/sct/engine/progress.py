"""What a training run shows while it runs: a progress bar per epoch on a terminal, log lines otherwise.

On an interactive terminal (stderr is a TTY) each epoch gets a tqdm bar whose own ETA is the epoch's;
its postfix carries the loss, the learning rate and the ETA of the whole run. Elsewhere (a log file, a
batch scheduler, a pipe) every ``log_every`` steps one plain line is printed with the same numbers, and
one line per finished epoch. The run ETA is the wall time per optimiser step so far in this process
(validation and checkpoints included) times the steps left, so it settles after a few steps and
counts a resumed run's remaining steps only.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1h02m"``, ``125`` -> ``"2m05s"``, ``42`` -> ``"42s"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TrainProgress:
    """Progress of a run of ``total_steps`` optimiser steps, ``steps_per_epoch`` per epoch.

    ``enabled`` is False on every process but the main one. Bars go to ``stream`` (default stderr), log
    lines to ``out`` (default stdout); ``interactive`` defaults to whether ``stream`` is a terminal.
    """

    def __init__(self, *, epochs: int, steps_per_epoch: int, total_steps: int, log_every: int,
                 enabled: bool = True, stream: TextIO | None = None, out: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.epochs, self.steps_per_epoch, self.total_steps = epochs, steps_per_epoch, total_steps
        self.log_every, self.enabled = log_every, enabled
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._bar: tqdm | None = None
        self._start: float | None = None
        self._first_step = 0
        self._epoch = 0

    def run_eta(self, global_step: int) -> float | None:
        """Seconds left in the run at this process's pace so far, or None before its first step."""
        done = global_step - self._first_step
        if self._start is None or done <= 0:
            return None
        return (time.perf_counter() - self._start) / done * max(self.total_steps - global_step, 0)

    def _eta_text(self, global_step: int) -> str:
        eta = self.run_eta(global_step)
        return "?" if eta is None else format_duration(eta)

    def start_epoch(self, epoch: int, step_in_epoch: int, global_step: int) -> None:
        """Begin epoch ``epoch`` (0-based), ``step_in_epoch`` of its steps already done (a resumed run)."""
        if self._start is None:
            self._start, self._first_step = time.perf_counter(), global_step
        self._epoch = epoch
        if self.enabled and self.interactive:
            self._bar = tqdm(total=self.steps_per_epoch, initial=step_in_epoch, unit="step", dynamic_ncols=True,
                             desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream, leave=True)

    def step(self, step_in_epoch: int, global_step: int, loss: float, lr: float, samples_per_s: float) -> None:
        """One optimiser step done."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"loss {loss:.3f}, lr {lr:.3g}, run ETA {self._eta_text(global_step)}")
        elif global_step % self.log_every == 0:
            print(f"epoch {self._epoch + 1}/{self.epochs} step {step_in_epoch}/{self.steps_per_epoch} "
                  f"loss {loss:.4f} lr {lr:.4g} ({samples_per_s:.1f} samples/s, run ETA {self._eta_text(global_step)})",
                  file=self.out, flush=True)

    def close_epoch(self) -> None:
        """Close the epoch's bar (at the end of the epoch, or when the run stops inside it)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Print the finished epoch's summary (``record`` as written to metrics.jsonl)."""
        if not self.enabled:
            return
        val = f", val top-1 {record['val_top1']:.1f}%" if record.get("val_top1") is not None else ""
        line = (f"epoch {record['epoch']}/{self.epochs}: train loss {record['train_loss']:.4f}, "
                f"train top-1 {record['train_top1']:.1f}%{val}, run ETA {self._eta_text(record['step'])}")
        if self.interactive:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.out, flush=True)
