"""Annotation files -> a ``VideoDataset`` of normalised clips, with the bad-file policy.

``build_dataset(cfg, split)`` reads the split's annotations (any format of :mod:`sct.data.annotations`),
and returns a dataset whose item ``i`` is a dict::

    video (3, T, H, W) float32 normalised, label int, index int (video index), view int,
    ok bool, bad list[(path, reason)]

- train: one item per video; random clip start, scale jitter (or random resized crop) and flip. The
  randomness of item ``i`` is a pure function of ``(seed, epoch, i)`` (see :meth:`VideoDataset.set_epoch`),
  so any number of workers and mid-epoch resumption give the same batches. A bad video is replaced
  by another, chosen by the same seeded generator; the bad file is listed in ``bad``. When every draw
  (``max_replacements`` of them) is bad too, the item has ``ok=False`` and training's
  ``collate(..., drop_failed=True)`` leaves it out of the batch.
- val/test: ``num_temporal_views x num_spatial_crops`` deterministic items per video; a bad video gives
  ``ok=False`` and a zero clip, so evaluation counts it as a failure instead of dropping it.

:class:`BadFileTracker` (in the training process) counts distinct bad files, warns once per file and
stops with :class:`DataQualityError` above ``max_bad_fraction``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sct.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from sct.data import transforms as T
from sct.data.annotations import Annotations, read_annotations, read_classes_file
from sct.data.frames import open_video
from sct.data.video_cache import DecodedVideoCache
from sct.errors import ConfigError, DataQualityError, VideoDecodeError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataConfig"]  # moved to sct.config; imported from here before

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Test time decodes all temporal views of a video in one pass when they fit in this many bytes (uint8).
VIEW_CACHE_BYTES = 256 * 2**20


def _under(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def _reason(err: Exception, path: str) -> str:
    """The error message without the ``path: `` prefix our errors start with."""
    text = str(err)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


class BadFileTracker:
    """Distinct bad files seen in a run; raises :class:`DataQualityError` once too many are bad.

    ``total`` is the number of videos in the dataset; the run stops when ``count / total`` exceeds
    ``max_fraction``. Each file is warned about once. Files this process found since the last
    :meth:`take_unshared` are kept apart, so that processes of a distributed run can exchange them and
    apply the limit to the files all of them found (see :func:`sct.engine.bad_files.share`).
    """

    def __init__(self, total: int, max_fraction: float = 0.05):
        self.total = max(int(total), 1)
        self.max_fraction = max_fraction
        self._reasons: dict[str, str] = {}
        self._unshared: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return len(self._reasons)

    @property
    def items(self) -> list[tuple[str, str]]:
        return list(self._reasons.items())

    def add(self, path: str, reason: str, check: bool = True) -> bool:
        """Record a bad file this process found; True the first time it is seen. ``check``: apply the limit."""
        if path in self._reasons:
            return False
        self._reasons[path] = reason
        self._unshared.append((path, reason))
        log.warning("bad video skipped (%d so far): %s: %s", self.count, path, reason)
        if check:
            self.check()
        return True

    def update(self, bad: list[tuple[str, str]], check: bool = True) -> None:
        """Add every ``(path, reason)`` of a batch's ``bad`` list."""
        for path, reason in bad:
            self.add(path, reason, check=False)
        if check:
            self.check()

    def take_unshared(self) -> list[tuple[str, str]]:
        """The files added since the last call (and forget that they were new)."""
        new, self._unshared = self._unshared, []
        return new

    def merge(self, bad: list[tuple[str, str]]) -> None:
        """Add files another process found (already warned about there); the limit is not applied."""
        for path, reason in bad:
            self._reasons.setdefault(path, reason)

    def check(self) -> None:
        """Raise :class:`DataQualityError` listing every bad file (sorted) if there are too many."""
        if self.count / self.total > self.max_fraction:
            listing = "\n".join(f"  {p}: {r}" for p, r in sorted(self.items))
            raise DataQualityError(
                f"{self.count} of {self.total} videos are bad ({self.count / self.total:.1%} > "
                f"max_bad_fraction {self.max_fraction:.1%}); fix or remove them (`sct data check`):\n{listing}")


class VideoDataset(Dataset):
    """Clips of the videos in ``annotations`` for ``split`` (see the module docstring for items)."""

    def __init__(self, annotations: Annotations, cfg: DataConfig, split: str):
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        self.cfg, self.split, self.train = cfg, split, split == "train"
        self.paths, self.labels = annotations.paths, annotations.labels
        self.class_names = annotations.class_names
        self.sampler = cfg.sampler()
        self.epoch = 0
        self._known_bad: dict[str, str] = {}
        self._view_cache: tuple[int | None, dict[int, torch.Tensor]] = (None, {})
        self.video_cache = DecodedVideoCache(cfg.cache_mb * 2**20) if cfg.cache_mb else None

    @property
    def num_videos(self) -> int:
        return len(self.paths)

    @property
    def views(self) -> int:
        return 1 if self.train else self.cfg.views

    def __len__(self) -> int:
        return self.num_videos * self.views

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of an epoch (item ``i`` depends only on seed, epoch, i)."""
        self.epoch = int(epoch)

    def _generators(self, i: int, attempt: int) -> tuple[np.random.Generator, torch.Generator]:
        seq = np.random.SeedSequence([self.cfg.seed, self.epoch, i, attempt])
        gen = torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
        return np.random.default_rng(seq), gen

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        return self._train_item(i) if self.train else self._test_item(i)

    def _train_item(self, i: int) -> dict:
        """Item ``i`` from :meth:`_train_sample`; a bad file is replaced by another drawn from ``(seed, epoch, i)``."""
        bad: list[tuple[str, str]] = []
        index = i
        for attempt in range(self.cfg.max_replacements + 1):
            rng, gen = self._generators(i, attempt)
            try:
                sample = self._train_sample(index, rng, gen)
            except VideoDecodeError as err:
                bad.append((self.paths[index], self._remember(index, err)))
                index = int(rng.integers(self.num_videos))
                continue
            return self._item(sample, index, 0, True, bad)
        return self._item(self._zeros(), index, 0, False, bad)

    def _train_sample(self, index: int, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        """The augmented training clip ``(3, T, H, W)`` of video ``index``."""
        frames = self._decode(index, lambda info: self.sampler.train_times(info.duration, info.fps, rng))
        video = self._crop(frames, self._train_box(frames.shape[1], frames.shape[2], gen))
        if self.cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
            video = T.hflip(video)
        return video

    def _test_item(self, i: int) -> dict:
        index, view = divmod(i, self.views)
        temporal, spatial = divmod(view, self.cfg.num_spatial_crops)
        cfg = self.cfg
        try:
            frames = self._test_clip(index, temporal)
        except VideoDecodeError as err:
            return self._item(self._zeros(), index, view, False, [(self.paths[index], self._remember(index, err))])
        height, width = frames.shape[1:3]
        box = T.test_boxes(height, width, cfg.crop_size, cfg.test_side(), cfg.num_spatial_crops)[spatial]
        return self._item(self._crop(frames, box), index, view, True, [])

    def _test_clip(self, index: int, temporal: int) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` clip of temporal view ``temporal`` of video ``index``.

        A video's items are consecutive, so the first of them decodes every temporal view in one pass
        (one seek, overlapping views decoded once) and the rest reuse it; videos too large for
        ``VIEW_CACHE_BYTES`` decode one view at a time.
        """
        cached_index, views = self._view_cache
        if cached_index != index or temporal not in views:
            wanted: list[int] = []

            def times_of(info) -> np.ndarray:
                n = self.cfg.num_temporal_views
                together = info.width * info.height * 3 * self.cfg.num_frames * n <= VIEW_CACHE_BYTES
                wanted.extend(range(n) if together else [temporal])
                return np.concatenate([self.sampler.view_times(info.duration, info.fps, v, n) for v in wanted])

            frames = self._decode(index, times_of)
            self._view_cache = (index, dict(zip(wanted, frames.split(self.cfg.num_frames))))
        return self._view_cache[1][temporal]

    def _train_box(self, height: int, width: int, gen: torch.Generator) -> T.Box:
        cfg = self.cfg
        if cfg.train_crop == "resized":
            return T.random_resized_box(height, width, cfg.rrc_scale, cfg.rrc_ratio, gen)
        return T.scale_jitter_box(height, width, cfg.crop_size, cfg.short_side_range(), gen)

    def _source(self, index: int) -> str:
        """The video file, or its frame folder when ``frames_dir`` is set."""
        path = self.paths[index]
        if self.cfg.frames_dir is None:
            return path
        root = Path(self.cfg.root)
        rel = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(Path(path).name)
        return str(_under(root, self.cfg.frames_dir) / rel.with_suffix(""))

    def _decode(self, index: int, times_of) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` frames of video ``index`` at ``times_of(info)`` seconds."""
        path = self.paths[index]
        if path in self._known_bad:
            raise VideoDecodeError(f"{path}: {self._known_bad[path]}")

        def open_reader():
            return open_video(self._source(index), self.cfg.frames_fps, self.cfg.decode_threads)

        if self.video_cache is not None:
            return torch.from_numpy(self.video_cache.read(path, open_reader, times_of))
        with open_reader() as reader:
            return torch.from_numpy(reader.read(times_of(reader.info)))

    def _crop(self, frames: torch.Tensor, box: T.Box) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> normalised ``(3, T, crop, crop)`` of ``box``."""
        clip = T.crop_resize(frames, box, self.cfg.crop_size)
        return T.normalize(clip, self.cfg.mean, self.cfg.std)

    def _remember(self, index: int, err: VideoDecodeError) -> str:
        path = self.paths[index]
        reason = self._known_bad.get(path) or _reason(err, self._source(index))
        self._known_bad[path] = reason
        return reason

    def _zeros(self) -> torch.Tensor:
        size = self.cfg.crop_size
        return torch.zeros(3, self.cfg.num_frames, size, size)

    def _item(self, video: torch.Tensor, index: int, view: int, ok: bool, bad: list) -> dict:
        return {"video": video, "label": self.labels[index], "index": index, "view": view, "ok": ok, "bad": bad}


def collate(batch: list[dict], drop_failed: bool = False) -> dict:
    """Stack a list of items: ``video (B, 3, T, H, W)``, ``label/index/view (B,)``, ``ok (B,)`` bool,
    ``bad`` one flat list of ``(path, reason)`` of every item, ``dropped`` an int.

    ``drop_failed`` (training): items with ``ok=False`` (a bad video whose replacements were bad too) are
    left out, so their zero clip and borrowed label never reach the model; ``dropped`` counts them and
    ``B`` may be 0.
    """
    kept = [b for b in batch if b["ok"]] if drop_failed else batch
    video = (torch.stack([b["video"] for b in kept]) if kept
             else batch[0]["video"].new_empty((0, *batch[0]["video"].shape)))
    return {
        "video": video,
        "label": torch.tensor([b["label"] for b in kept], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in kept], dtype=torch.long),
        "view": torch.tensor([b["view"] for b in kept], dtype=torch.long),
        "ok": torch.tensor([b["ok"] for b in kept], dtype=torch.bool),
        "bad": [entry for b in batch for entry in b["bad"]],
        "dropped": len(batch) - len(kept),
    }


def load_class_names(cfg: DataConfig) -> list[str] | None:
    """The class list fixing label ids: ``classes`` if set, else ``classes.txt`` in root, else None."""
    root = Path(cfg.root)
    if cfg.classes:
        return read_classes_file(_under(root, cfg.classes))
    default = root / "classes.txt"
    return read_classes_file(default) if default.is_file() else None


def read_split(cfg: DataConfig, split: str) -> Annotations:
    """Annotations of ``split`` with label ids shared by all splits.

    Without a class list, the sorted names of the *train* annotations fix the ids, so val/test files that
    lack some classes still get the same ids as training.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(cfg.root)
    classes = load_class_names(cfg)
    ann = _under(root, getattr(cfg, split))
    if classes is None and split != "train":
        classes = read_annotations(cfg.format, _under(root, cfg.train), root, split_name="train",
                                   split=cfg.split, video_ext=cfg.video_ext).class_names
    return read_annotations(cfg.format, ann, root, classes=classes, split_name=split, split=cfg.split,
                            video_ext=cfg.video_ext)


def build_dataset(cfg: DataConfig, split: str, **stream) -> VideoDataset:
    """The dataset of ``split`` (train/val/test) described by ``cfg``.

    Image formats give an ``ImageDataset`` (or, for training on shards, a ``ShardStream``, which takes
    ``stream``: ``rank``, ``world_size``, ``micro_batch``).
    """
    if cfg.is_image:
        from sct.data.image_dataset import build_image_dataset

        return build_image_dataset(cfg, split, **stream)
    return VideoDataset(read_split(cfg, split), cfg, split)

