"""``ImageDataset``: image files as a map-style dataset with the video datasets' items and bad-file policy.

Items: ``video`` the image ``(3, S, S)`` float32 normalised, ``label``, ``index`` (image), ``view``, ``ok``,
``bad`` (see :mod:`sct.data.datasets`). Decoding and augmentation: :mod:`sct.data.images`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sct.data import transforms as T
from sct.data.datasets import VideoDataset
from sct.data.images import TEN_CROP, Source, augment_image, decode_boxes, normalize_image, test_views, train_boxes
from sct.errors import VideoDecodeError


class ImageDataset(VideoDataset):
    """Images of ``annotations`` for ``split``: one item per image in training, ``num_spatial_crops`` in test."""

    def __init__(self, annotations, cfg, split: str):
        super().__init__(annotations, cfg, split)
        self._crops: tuple[int | None, list[torch.Tensor]] = (None, [])

    @property
    def views(self) -> int:
        return 1 if self.train else self.cfg.num_spatial_crops

    def source(self, index: int) -> Source:
        """What Pillow opens for image ``index``: its path here, the member's bytes for shards."""
        return self.paths[index]

    def _decode_boxes(self, index: int, boxes_of) -> list[torch.Tensor]:
        path = self.paths[index]
        if path in self._known_bad:
            raise VideoDecodeError(f"{path}: {self._known_bad[path]}")
        return decode_boxes(self.source(index), path, boxes_of, self.cfg.crop_size, self.cfg.jpeg_draft)

    def _train_sample(self, index: int, rng, gen: torch.Generator) -> torch.Tensor:
        """The augmented training image ``(3, S, S)`` of image ``index``."""
        [crop] = self._decode_boxes(index, train_boxes(self.cfg, gen))
        return augment_image(crop, self.cfg, gen)

    def _test_item(self, i: int) -> dict:
        index, view = divmod(i, self.views)
        try:
            crops = self._test_crops(index)
        except VideoDecodeError as err:
            return self._item(self._zeros(), index, view, False, [(self.paths[index], self._remember(index, err))])
        crop = crops[view % len(crops)]
        if self.cfg.num_spatial_crops == TEN_CROP and view >= len(crops):
            crop = T.hflip(crop)
        return self._item(normalize_image(crop, self.cfg), index, view, True, [])

    def _test_crops(self, index: int) -> list[torch.Tensor]:
        """The test boxes of image ``index``, decoded once for all its consecutive views."""
        if self._crops[0] != index:
            self._crops = (index, self._decode_boxes(index, lambda h, w: test_views(self.cfg, h, w)))
        return self._crops[1]

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(3, self.cfg.crop_size, self.cfg.crop_size)


def build_image_dataset(cfg, split: str, *, rank: int = 0, world_size: int = 1, micro_batch: int = 1):
    """The ``split`` of an image dataset: :class:`ImageDataset`, or for ``shards`` a
    :class:`~sct.data.shards.ShardStream` (train) / :class:`~sct.data.shards.ShardImageDataset` (val/test)."""
    from sct.data.datasets import load_class_names
    from sct.data.images import read_image_split
    from sct.errors import ConfigError

    root = Path(cfg.root)
    spec = getattr(cfg, split)
    ann = Path(spec) if Path(spec).is_absolute() else root / spec
    classes = load_class_names(cfg)
    if cfg.format == "shards":
        from sct.data.shards import ShardImageDataset, ShardStream, index_shards

        if classes is None:
            raise ConfigError(f"data.format=shards needs a class list: data.classes or {root / 'classes.txt'}")
        shards = index_shards(spec, root, len(classes))
        if split == "train":
            return ShardStream(shards, classes, cfg, rank=rank, world_size=world_size, micro_batch=micro_batch)
        return ShardImageDataset([m for shard in shards for m in shard], classes, cfg, split)
    if classes is None and split != "train":
        train = Path(cfg.train) if Path(cfg.train).is_absolute() else root / cfg.train
        classes = read_image_split(cfg.format, train, root, None, "train").class_names
    return ImageDataset(read_image_split(cfg.format, ann, root, classes, split), cfg, split)
