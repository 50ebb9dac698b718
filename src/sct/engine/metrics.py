"""Per-video score aggregation (softmax averaged over views) and the accuracies reported from it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from sct.engine.checkpoint import atomic_write
from sct.outputs import writing


@dataclasses.dataclass
class VideoScores:
    """Running sums for one video over the views seen so far (possibly on several processes)."""

    label: int
    prob_sum: np.ndarray  # (C,) sum of per-view softmax over the views that decoded
    views_ok: int = 0
    views_total: int = 0
    clips_correct: int = 0

    def merge(self, other: VideoScores) -> None:
        self.prob_sum += other.prob_sum
        self.views_ok += other.views_ok
        self.views_total += other.views_total
        self.clips_correct += other.clips_correct

    @property
    def failed(self) -> bool:
        """No view of the video could be decoded: it counts as a wrong prediction."""
        return self.views_ok == 0

    @property
    def probs(self) -> np.ndarray:
        """``(C,)`` softmax averaged over the decoded views (zeros for a failed video)."""
        return self.prob_sum / max(1, self.views_ok)


def add_views(scores: dict[int, VideoScores], videos: np.ndarray, labels: np.ndarray, probs: np.ndarray,
              ok: np.ndarray) -> None:
    """Fold a batch of views into ``scores``.

    videos, labels, ok: ``(B,)``; probs: ``(B, C)`` softmax of each view (ignored where ``ok`` is False).
    """
    for video, label, prob, good in zip(videos.tolist(), labels.tolist(), probs, ok.tolist()):
        entry = scores.setdefault(video, VideoScores(label, np.zeros(probs.shape[1], dtype=np.float64)))
        entry.views_total += 1
        if good:
            entry.prob_sum += prob
            entry.views_ok += 1
            entry.clips_correct += int(prob.argmax() == label)


def merge_scores(parts: list[dict[int, VideoScores]]) -> dict[int, VideoScores]:
    """Combine the per-process partial scores; views are disjoint across processes, so sums are exact."""
    merged: dict[int, VideoScores] = {}
    for part in parts:
        for video, entry in part.items():
            if video in merged:
                merged[video].merge(entry)
            else:
                merged[video] = entry
    return merged


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = prediction (failed videos, ``pred = -1``, omitted)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for label, pred in zip(labels.tolist(), preds.tolist()):
        if pred >= 0:
            matrix[label, pred] += 1
    return matrix


def summarize(scores: dict[int, VideoScores], class_names: list[str], topk: int = 5) -> dict[str, Any]:
    """Video-level top-1/top-k, clip-level top-1, per-class accuracy and the confusion matrix (in %)."""
    videos = sorted(scores)
    entries = [scores[v] for v in videos]
    labels = np.array([e.label for e in entries], dtype=np.int64)
    probs = np.stack([e.probs for e in entries]) if entries else np.zeros((0, len(class_names)))
    failed = np.array([e.failed for e in entries], dtype=bool)
    k = min(topk, len(class_names))
    ranked = np.argsort(-probs, axis=1, kind="stable")
    preds = np.where(failed, -1, ranked[:, 0] if len(entries) else labels)
    hit_k = (ranked[:, :k] == labels[:, None]).any(axis=1) & ~failed
    correct = (preds == labels) & ~failed
    clips = sum(e.views_total for e in entries)
    per_class = {
        name: (100.0 * float(correct[labels == c].mean()) if (labels == c).any() else None)
        for c, name in enumerate(class_names)
    }
    n = max(1, len(entries))
    return {
        "top1": 100.0 * correct.sum() / n,
        "top5": 100.0 * hit_k.sum() / n,
        "topk": k,
        "clip_top1": 100.0 * sum(e.clips_correct for e in entries) / max(1, clips),
        "num_videos": len(entries),
        "num_failed": int(failed.sum()),
        "num_clips": clips,
        "per_class_top1": per_class,
        "mean_class_top1": float(np.mean([v for v in per_class.values() if v is not None] or [0.0])),
        "confusion": confusion_matrix(labels, preds, len(class_names)).tolist(),
        "_videos": videos,
        "_labels": labels,
        "_preds": preds,
        "_probs": probs,
    }


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed as training goes."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def reset(self) -> None:
        if self.enabled:
            self.path.write_text("")

    def truncate_after(self, global_step: int) -> None:
        """Drop records past ``global_step``: a resumed run rewrites them instead of duplicating them."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip()
                and json.loads(line).get("step", 0) <= global_step]
        text = "".join(line + "\n" for line in kept).encode()
        # Atomic: a full disk here must not cost the records of the steps being kept.
        atomic_write(self.path, lambda f: f.write(text))

    def append(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with writing(self.path), open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
