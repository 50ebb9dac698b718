"""Image data: the synthetic image set, folder / csv / shard datasets, decoding of odd images, shard streaming."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from engine_support import write_shard
from sct.data import images as images_module
from sct.data.datasets import DataConfig, build_dataset, collate
from sct.data.images import decode_boxes, draft_factor, read_image_folder, ten_crop_boxes
from sct.data.shards import ShardStream, expand_braces, index_shards
from sct.data.synthetic_images import IMAGE_CLASSES, generate_images, render_image
from sct.errors import AnnotationError, ConfigError, ImageDecodeError


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return generate_images(tmp_path_factory.mktemp("images"), images_per_class=10, size=24, shard_size=40,
                           classes=IMAGE_CLASSES[:6])


def config(root, fmt="imagefolder", **fields) -> DataConfig:
    splits = {"imagefolder": ("train", "val", "test"), "image_csv": ("train.csv", "val.csv", "test.csv"),
              "shards": ("shards/train-{000000..000001}.tar", "shards/val-000000.tar", "shards/test-000000.tar")}
    train, val, test = splits[fmt]
    return DataConfig(root=str(root), format=fmt, train=train, val=val, test=test, crop_size=16,
                      train_crop="resized", **fields)


def test_synthetic_images_are_png_and_jpeg_files_and_shards(image_set):
    files = sorted((image_set / "train" / IMAGE_CLASSES[0]).iterdir())
    assert {f.suffix for f in files} == {".png", ".jpg"} and len(files) == 7
    assert Image.open(files[0]).format == "PNG" and Image.open(files[1]).format == "JPEG"
    assert expand_braces("shards/train-{000000..000001}.tar") == ["shards/train-000000.tar", "shards/train-000001.tar"]
    with tarfile.open(image_set / "shards" / "train-000000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 80 and names[0].split(".")[0] == names[1].split(".")[0]
    assert {n.split(".")[1] for n in names} <= {"png", "jpg", "cls"}


def test_shape_and_texture_both_decide_the_class():
    rng = np.random.default_rng
    solid, striped = render_image("disc_solid", rng(0)), render_image("disc_striped", rng(0))
    square = render_image("square_solid", rng(0))
    assert solid.shape == (32, 32, 3)
    assert np.abs(solid.astype(int) - striped).max() > 60 and np.abs(solid.astype(int) - square).max() > 60


@pytest.mark.parametrize("fmt", ["imagefolder", "image_csv", "shards"])
def test_formats_give_the_same_classes_and_items(image_set, fmt):
    cfg = config(image_set, fmt, num_spatial_crops=10)
    val = build_dataset(cfg, "val")
    assert list(val.class_names) == list(IMAGE_CLASSES[:6])
    assert len(val) == 6 * 2 * 10 and val[0]["video"].shape == (3, 16, 16)
    assert torch.equal(val[5]["video"], val[0]["video"].flip(-1))  # views 5-9 mirror views 0-4
    train = build_dataset(cfg, "train", micro_batch=2)
    item = next(iter(train)) if fmt == "shards" else train[0]
    assert item["video"].shape == (3, 16, 16) and item["ok"]


def test_train_items_are_a_function_of_seed_epoch_and_index(image_set):
    cfg = config(image_set, randaugment=(2, 9), random_erasing=0.5)
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    assert torch.equal(a[3]["video"], b[3]["video"])
    b.set_epoch(1)
    assert not torch.equal(a[3]["video"], b[3]["video"])


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return str(path)


def test_odd_images_are_converted(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    cases = {
        "grey": save(rgb.convert("L"), tmp_path / "grey.png"),
        "palette": save(rgb.convert("P"), tmp_path / "palette.png"),
        "cmyk": save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg"),
        "alpha": save(rgb.convert("RGBA"), tmp_path / "alpha.webp"),
    }
    for name, path in cases.items():
        [crop] = decode_boxes(path, name, lambda h, w: [(0, 0, h, w)], 8)
        assert crop.shape == (3, 8, 8), name
    sixteen = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    assert sixteen.mode.startswith("I")
    [crop] = decode_boxes(save(sixteen, tmp_path / "16bit.png"), "16bit", lambda h, w: [(0, 0, h, w)], 10)
    assert torch.all(crop == 255)  # scaled from 16 bits, not clipped


def test_corrupt_truncated_and_huge_images_raise_naming_the_file(tmp_path, monkeypatch):
    good = save(Image.new("RGB", (64, 64), (10, 200, 30)), tmp_path / "good.jpg", quality=95)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    truncated = tmp_path / "truncated.png"
    data = open(save(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                     tmp_path / "full.png"), "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (corrupt, truncated, tmp_path / "missing.png"):
        with pytest.raises(ImageDecodeError, match=path.name):
            decode_boxes(str(path), str(path), lambda h, w: [(0, 0, h, w)], 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_boxes(good, good, lambda h, w: [(0, 0, h, w)], 8)


def test_jpeg_draft_mode_decodes_a_reduced_image_when_the_box_allows(tmp_path, monkeypatch):
    yy, xx = np.mgrid[:256, :256]
    pixels = np.stack([xx, yy, 255 - (xx + yy) // 2], axis=-1).astype(np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "big.jpg", quality=95)
    assert draft_factor([(0, 0, 256, 256)], 32) == 8 and draft_factor([(0, 0, 256, 256)], 200) == 1
    sizes = []
    original = images_module.to_rgb
    monkeypatch.setattr(images_module, "to_rgb", lambda image, name: sizes.append(image.size) or original(image, name))
    [fast] = decode_boxes(path, "big", lambda h, w: [(0, 0, h, w)], 32)
    [full] = decode_boxes(path, "big", lambda h, w: [(0, 0, h, w)], 32, draft=False)
    assert sizes == [(32, 32), (256, 256)]
    assert (fast - full).abs().mean() < 3


def test_bad_images_are_replaced_in_training_and_failed_in_test(image_set, tmp_path):
    root = tmp_path / "set"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            save(Image.new("RGB", (20, 20), (i * 50, 0, 0)), root / "train" / cls / f"{i}.png")
    (root / "train" / "a" / "0.png").write_bytes(b"garbage")
    cfg = DataConfig(root=str(root), format="imagefolder", train="train", val="train", test="train", crop_size=8)
    item = build_dataset(cfg, "train")[0]
    assert item["ok"] and item["bad"][0][0].endswith("0.png") and "not a readable image" in item["bad"][0][1]
    test_item = build_dataset(cfg, "test")[0]
    assert not test_item["ok"] and test_item["bad"]


def test_missing_class_folder_and_foreign_folder_are_errors(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    save(Image.new("RGB", (8, 8)), tmp_path / "train" / "cat" / "x.png")
    with pytest.raises(AnnotationError, match="no folder for class"):
        read_image_folder(tmp_path / "train", ["cat", "dog"], "train")
    with pytest.raises(AnnotationError, match="not in the class list"):
        read_image_folder(tmp_path / "train", ["dog"], "val")


def test_bad_shards_are_errors_naming_the_file(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    write_shard(tmp_path / "empty.tar", [])
    write_shard(tmp_path / "range.tar", [("000.png", png.getvalue()), ("000.cls", b"7\n")])
    write_shard(tmp_path / "lone.tar", [("000.png", png.getvalue())])
    for name, message in (("empty.tar", "empty shard"), ("range.tar", "label 7 outside 0..2"),
                          ("lone.tar", "no .cls label"), ("absent.tar", "not found")):
        with pytest.raises(AnnotationError, match=message) as err:
            index_shards(name, tmp_path, num_classes=3)
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="class list"):
        build_dataset(DataConfig(root=str(tmp_path), format="shards", train="range.tar"), "train")


def test_shard_stream_reads_each_sample_once_across_ranks_and_workers(image_set):
    cfg = config(image_set, "shards", shuffle_buffer=10)
    shards = index_shards("shards/train-{000000..000001}.tar", image_set, 6)
    total = sum(len(s) for s in shards)
    streams = [ShardStream(shards, IMAGE_CLASSES[:6], cfg, rank=r, world_size=2, micro_batch=2) for r in range(2)]
    slots = [s._run(w + 2 * r, 4) for r, s in enumerate(streams) for w in range(2)]
    keys = [(m.shard, m.key) for run in slots for _, m in run]
    assert sorted(i for run in slots for i, _ in run) == sorted(set(i for run in slots for i, _ in run))
    assert len(keys) == len(set(keys)) == total - total % 4 and len({len(run) for run in slots}) == 1
    runs = []
    for epoch in range(1, 6):
        streams[0].set_epoch(epoch)
        runs.append(streams[0]._run(0, 4))
    assert any(run != slots[0] for run in runs)  # the shard order changes with the epoch
    streams[0].set_epoch(0)
    loader = DataLoader(streams[0], batch_size=2, drop_last=True, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2 * streams[0].batches_per_worker(2)
    order = [int(b["label"][0]) for b in batches]
    assert order == [int(b["label"][0]) for b in DataLoader(streams[0], batch_size=2, drop_last=True, num_workers=2,
                                                            collate_fn=collate)]
    streams[0].skip_batches = 3
    resumed = list(DataLoader(streams[0], batch_size=2, drop_last=True, num_workers=2, collate_fn=collate))
    assert [torch.equal(a["video"], b["video"]) for a, b in zip(resumed, batches[3:])] == [True] * len(resumed)


def test_ten_crops_cover_the_corners_and_centre():
    boxes = ten_crop_boxes(100, 200, crop=50, short_side=100)
    assert boxes[0] == (25, 75, 50, 50) and boxes[1:] == [(0, 0, 50, 50), (0, 150, 50, 50), (50, 0, 50, 50),
                                                           (50, 150, 50, 50)]
    with pytest.raises(ConfigError, match="10 for images"):
        DataConfig(format="image_csv", num_spatial_crops=4)
    with pytest.raises(ConfigError, match="num_spatial_crops"):
        DataConfig(num_spatial_crops=10)
