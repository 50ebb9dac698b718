"""VideoDataset: items, views, seeded augmentation, workers, collate, config validation."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import frame_index, index_frame, write_video
from sct.data.datasets import DataConfig, build_dataset, collate
from sct.data.video_cache import DecodedVideoCache
from sct.errors import ConfigError

CLASSES = ["left", "right"]


@pytest.fixture
def dataset_dir(tmp_path):
    """A 2-class csv dataset of 6 real H.264 videos (3 s at 10 fps) in the synthetic set's layout."""
    rows = []
    for i in range(6):
        name = CLASSES[i % 2]
        write_video(tmp_path / "videos" / name / f"{i}.mp4", num_frames=30, width=40, height=30, fps=10)
        rows.append(f"videos/{name}/{i}.mp4,{name}")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return tmp_path


def _cfg(root, **kw):
    base = dict(root=str(root), num_frames=4, sampling_rate=2, crop_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    return DataConfig(**{**base, **kw})


def test_train_item_contents(dataset_dir):
    ds = build_dataset(_cfg(dataset_dir), "train")
    assert ds.class_names == CLASSES and ds.num_videos == 6 and len(ds) == 6
    item = ds[3]
    assert item["video"].shape == (3, 4, 16, 16) and item["video"].dtype == torch.float32
    assert (item["label"], item["index"], item["view"], item["ok"], item["bad"]) == (1, 3, 0, True, [])


def test_train_randomness_is_a_function_of_seed_epoch_index(dataset_dir):
    ds = build_dataset(_cfg(dataset_dir), "train")
    first = ds[2]["video"]
    assert torch.equal(first, ds[2]["video"])  # same (seed, epoch, i)
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2]["video"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[2]["video"])
    other_seed = build_dataset(_cfg(dataset_dir, seed=1), "train")
    assert not torch.equal(first, other_seed[2]["video"])


def test_loader_workers_give_identical_batches(dataset_dir):
    ds = build_dataset(_cfg(dataset_dir), "train")
    ds.set_epoch(3)
    main = [b["video"] for b in DataLoader(ds, batch_size=2, collate_fn=collate)]
    workers = [b["video"] for b in DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(main, workers))


def test_train_clip_is_consecutive_frames_at_stride(dataset_dir):
    # no spatial change: crop = frame short side, no flip; the decoded frame indices must step by 2
    ds = build_dataset(_cfg(dataset_dir, crop_size=30, train_short_side=(30, 30), flip=False), "train")
    video = ds[0]["video"]  # (3, T, 30, 30) in [0, 255] (mean 0, std 1/255)
    frames = video.permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    idx = [frame_index(np.pad(f, ((0, 0), (5, 5), (0, 0)), mode="edge")) for f in frames]
    assert np.diff(idx).tolist() == [2, 2, 2]


def test_test_views_order_and_determinism(dataset_dir):
    cfg = _cfg(dataset_dir, num_temporal_views=2, num_spatial_crops=3)
    ds = build_dataset(cfg, "test")
    assert len(ds) == 6 * 6
    item = ds[7]  # video 1, view 1 = temporal 0, spatial crop 1
    assert (item["index"], item["view"], item["label"], item["ok"]) == (1, 1, 1, True)
    assert torch.equal(item["video"], ds[7]["video"])
    left, centre, right = (ds[6 + v]["video"] for v in range(3))
    assert not torch.equal(left, right)
    late = ds[6 + 3]["video"]  # temporal view 1 (end of the video), spatial 0
    assert not torch.equal(left, late)


def test_val_ids_follow_train_without_class_file(dataset_dir):
    (dataset_dir / "classes.txt").unlink()
    (dataset_dir / "val.csv").write_text("path,label\nvideos/right/1.mp4,right\n")
    ds = build_dataset(_cfg(dataset_dir), "val")
    assert ds.class_names == CLASSES and ds[0]["label"] == 1  # not 0, as sorting val's own labels would give


def test_collate_stacks_and_flattens_bad(dataset_dir):
    ds = build_dataset(_cfg(dataset_dir), "train")
    items = [ds[0], ds[1]]
    items[1]["bad"] = [("x.mp4", "empty file")]
    batch = collate(items)
    assert batch["video"].shape == (2, 3, 4, 16, 16)
    assert batch["label"].tolist() == [0, 1] and batch["ok"].dtype == torch.bool
    assert batch["bad"] == [("x.mp4", "empty file")]


def test_frames_dir_source(tmp_path):
    frames = tmp_path / "frames" / "videos" / "left" / "0"
    frames.mkdir(parents=True)
    for i in range(20):
        Image.fromarray(index_frame(i, 40, 30)).save(frames / f"{i:05d}.png")
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("path,label\nvideos/left/0.mp4,left\n")
    cfg = _cfg(tmp_path, frames_dir="frames", frames_fps=10, crop_size=30, test_short_side=30)
    item = build_dataset(cfg, "test")[0]  # no videos/left/0.mp4 exists: the frames are read from the folder
    assert item["ok"] and item["video"].shape == (3, 4, 30, 30)
    frames = item["video"].permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    idx = [frame_index(np.pad(f, ((0, 0), (5, 5), (0, 0)), mode="edge")) for f in frames]
    assert idx == [6, 8, 10, 12]  # the centre clip of 20 frames: span 8, start (20 - 8) / 2


@pytest.mark.parametrize("field,value", [("format", "youtube"), ("num_frames", 0), ("short_video", "bounce"),
                                         ("num_spatial_crops", 2), ("train_short_side", (320, 256)),
                                         ("max_bad_fraction", 1.5), ("std", (1.0, 0.0, 1.0)),
                                         ("train_crop", "centre"), ("cache_mb", -1)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"data.{field}"):
        DataConfig(**{field: value})


def test_default_scale_ranges():
    cfg = DataConfig()
    assert cfg.short_side_range() == (256, 320) and cfg.test_side() == 224
    assert DataConfig(crop_size=64).short_side_range() == (73, 91)


def test_all_views_of_a_video_share_one_decode(dataset_dir, monkeypatch):
    import sct.data.datasets as datasets

    opened = []
    real_open = datasets.open_video
    monkeypatch.setattr(datasets, "open_video", lambda path, *a: opened.append(path) or real_open(path, *a))
    cfg = _cfg(dataset_dir, num_temporal_views=3, num_spatial_crops=3)
    ds = build_dataset(cfg, "test")
    together = [ds[i]["video"] for i in range(18)]  # videos 0 and 1, 9 views each
    assert len(opened) == 2
    monkeypatch.setattr(datasets, "VIEW_CACHE_BYTES", 0)  # too big to cache: one decode per temporal view
    ds = build_dataset(cfg, "test")
    apart = [ds[i]["video"] for i in range(18)]
    assert len(opened) == 2 + 6
    assert all(torch.equal(a, b) for a, b in zip(together, apart))


def _count_opens(monkeypatch) -> list:
    import sct.data.datasets as datasets

    opened = []
    real_open = datasets.open_video
    monkeypatch.setattr(datasets, "open_video", lambda path, *a: opened.append(path) or real_open(path, *a))
    return opened


@pytest.mark.parametrize("split", ["train", "test"])
def test_video_cache_gives_the_readers_frames_and_opens_each_file_once(dataset_dir, monkeypatch, split):
    opened = _count_opens(monkeypatch)
    plain = build_dataset(_cfg(dataset_dir, num_temporal_views=2), split)
    cached = build_dataset(_cfg(dataset_dir, num_temporal_views=2, cache_mb=1), split)
    for epoch in range(3):  # a new random clip start every epoch
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            assert torch.equal(plain[i]["video"], cached[i]["video"])
    assert len(cached.video_cache) == 6 and cached.video_cache.used_bytes == 6 * 30 * 30 * 40 * 3
    assert opened.count(plain.paths[0]) == 3 + 1  # plain: once per epoch (all test views in one pass)


def test_video_cache_past_its_budget_reads_directly(dataset_dir, monkeypatch):
    opened = _count_opens(monkeypatch)
    ds = build_dataset(_cfg(dataset_dir), "train")
    ds.video_cache = DecodedVideoCache(2 * 30 * 30 * 40 * 3)  # room for two of the six videos
    plain = build_dataset(_cfg(dataset_dir), "train")
    for _ in range(2):
        assert all(torch.equal(ds[i]["video"], plain[i]["video"]) for i in range(6))
    assert len(ds.video_cache) == 2
    assert len(opened) == 2 + 2 * 4 + 2 * 6
