"""TensorBoard event files beside ``metrics.jsonl`` (``train.tensorboard: true``; the ``tensorboard`` extra).

``metrics.jsonl`` stays the record; this mirrors its records into ``<run>/tensorboard/`` as they are
written, so ``tensorboard --logdir runs/`` shows every run while it trains:

- every optimiser step: ``train/loss``, ``train/lr``, ``train/top1`` (the step's batch), ``train/grad_norm``,
  ``train/samples_per_s``;
- every epoch: ``epoch/train_loss``, ``epoch/train_top1``, and after validation ``val/top1``,
  ``val/clip_top1`` and the validation confusion matrix as the image ``val/confusion``;
- ``sct eval`` of a checkpoint of such a run: ``eval/<split>_<views>/top1`` and ``.../confusion``.

The x axis is the optimiser step throughout. A resumed run purges the events after its checkpoint's step,
as it truncates ``metrics.jsonl``, so the curves show the run once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sct.errors import ConfigError

STEP_KEYS = ("loss", "lr", "top1", "grad_norm", "samples_per_s")
EPOCH_KEYS = {"train_loss": "epoch/train_loss", "train_top1": "epoch/train_top1", "val_top1": "val/top1",
              "val_clip_top1": "val/clip_top1"}


def require_tensorboard() -> None:
    """Raise :class:`ConfigError` naming ``train.tensorboard`` when the package is missing."""
    _summary_writer()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(
            "train.tensorboard: true needs the tensorboard package (pip install 'sct[tensorboard]' or "
            f"pip install tensorboard), which cannot be imported here ({err})") from None
    return SummaryWriter


class TensorBoardLog:
    """Event files in ``log_dir``; every method does nothing when ``enabled`` is False (other ranks, option off).

    ``purge_step``: drop events logged at or after this step by an earlier, interrupted run.
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.log_dir, self.enabled = Path(log_dir), enabled
        self._writer = None
        if enabled:
            self._writer = _summary_writer()(str(self.log_dir), purge_step=purge_step)

    def record(self, record: dict[str, Any]) -> None:
        """Mirror one ``metrics.jsonl`` record (``type`` step or epoch; others are ignored)."""
        if self._writer is None:
            return
        step = record.get("step", 0)
        if record.get("type") == "step":
            for key in STEP_KEYS:
                if record.get(key) is not None:
                    self._writer.add_scalar(f"train/{key}", record[key], step)
        elif record.get("type") == "epoch":
            for key, tag in EPOCH_KEYS.items():
                if record.get(key) is not None:
                    self._writer.add_scalar(tag, record[key], step)
        self._writer.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def confusion(self, tag: str, matrix: np.ndarray | list, class_names: list[str], step: int) -> None:
        """The confusion matrix ``(C, C)`` as the image ``tag`` (the figure of ``confusion.png``)."""
        if self._writer is None:
            return
        from sct.engine.plots import confusion_figure

        self._writer.add_figure(tag, confusion_figure(np.asarray(matrix), class_names), step, close=True)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
