"""Training curves (loss, learning rate, accuracy) and the confusion matrix, as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> Path:
    """``curves.png``: step loss with its running mean, learning rate, train and validation accuracy."""
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    fig, (ax_loss, ax_lr, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        x = np.array([r["step"] for r in steps])
        loss = np.array([r["loss"] for r in steps], dtype=float)
        ax_loss.plot(x, loss, alpha=0.35, label="step")
        window = max(1, len(loss) // 20)
        if window > 1:
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax_loss.plot(x[window - 1 :], smooth, label=f"mean of {window}")
        ax_lr.plot(x, [r["lr"] for r in steps])
    for key, label in (("train_top1", "train (batches)"), ("val_top1", "val (video)")):
        points = [(r["step"], r[key]) for r in epochs if r.get(key) is not None]
        if points:
            ax_acc.plot(*zip(*points), marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="optimiser step")
    ax_lr.set(title="learning rate", xlabel="optimiser step")
    ax_acc.set(title="top-1 accuracy (%)", xlabel="optimiser step", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_figure(matrix: np.ndarray, class_names: list[str]) -> plt.Figure:
    """The confusion matrix ``(C, C)`` (rows true class, columns predicted), each row normalised to 1."""
    matrix = np.asarray(matrix, dtype=float)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    # Past 40 classes the labels are left out, and a fixed size keeps the image readable and small.
    size = max(4.0, 0.45 * len(class_names) + 2) if len(class_names) <= 40 else 10.0
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if len(class_names) <= 40:
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=8)
        ax.set_yticks(ticks, class_names, fontsize=8)
        for i, j in zip(*np.nonzero(matrix)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    fig.tight_layout()
    return fig


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """``confusion.png``: :func:`confusion_figure` as a PNG file."""
    fig = confusion_figure(matrix, class_names)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
