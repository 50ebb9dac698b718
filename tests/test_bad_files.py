"""Damaged videos: typed errors naming the file, replacement in training, failures at test time,
the bad-file tracker, and ``sct data check``."""

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_audio_only, write_video
from engine_support import tiny_config
from sct.cli import main as cli_main
from sct.data.datasets import BadFileTracker, DataConfig, build_dataset, collate
from sct.data.decode import decode_frames
from sct.engine.distributed import DistContext
from sct.engine.train import Trainer
from sct.errors import AnnotationError, DataQualityError, VideoDecodeError


def _faststart_video(path, num_frames=40):
    """An mp4 with its index (moov) before the data, so a truncated copy still opens and claims full length."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(num_frames):
            image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _truncate(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture
def damaged(tmp_path):
    """name -> (path, reason substring) for every kind of damaged file."""
    good = write_video(tmp_path / "good.mp4", num_frames=30, width=32, height=24)
    jpeg = tmp_path / "frame.jpg"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(jpeg)
    files = {
        "truncated": (_truncate(good, tmp_path / "truncated.mp4", 0.5), "not a readable media file"),
        "shorter_than_header": (_truncate(_faststart_video(tmp_path / "fs.mp4"), tmp_path / "short.mp4", 0.3),
                                "stream ends at|corrupt video data"),
        "random_bytes": (tmp_path / "random.mp4", "not a readable media file"),
        "zero_length": (tmp_path / "empty.mp4", "empty file"),
        "image_named_mp4": (shutil.copy(jpeg, tmp_path / "image.mp4"), "still image"),
        "text_named_mp4": (tmp_path / "notes.mp4", "not a readable media file"),
        "missing": (tmp_path / "missing.mp4", "file not found"),
        "audio_only": (write_audio_only(tmp_path / "audio.mp4"), "no video stream"),
    }
    files["random_bytes"][0].write_bytes(np.random.default_rng(0).bytes(4096))
    files["zero_length"][0].write_bytes(b"")
    files["text_named_mp4"][0].write_text("this is a text file, not a video\n" * 20)
    return files


@pytest.mark.parametrize("kind", ["truncated", "shorter_than_header", "random_bytes", "zero_length",
                                  "image_named_mp4", "text_named_mp4", "missing", "audio_only"])
def test_damaged_file_raises_video_decode_error(damaged, kind):
    path, reason = damaged[kind]
    with pytest.raises(VideoDecodeError, match=reason) as info:
        decode_frames(path, np.linspace(0, 3.9, 8))
    assert str(path) in str(info.value)


def test_wrong_extension_with_real_video_is_fine(tmp_path):
    path = shutil.copy(write_video(tmp_path / "v.mp4", num_frames=5), tmp_path / "v.avi")
    assert decode_frames(path, [0.0]).shape == (1, 48, 64, 3)  # content decides, not the extension


def _mixed_dataset(tmp_path, damaged, n_good=6):
    rows = []
    for i in range(n_good):
        write_video(tmp_path / "videos" / f"g{i}.mp4", num_frames=20, width=32, height=24)
        rows.append(f"videos/g{i}.mp4,{'ab'[i % 2]}")
    for kind in ("zero_length", "random_bytes", "missing"):
        rows.append(f"{damaged[kind][0]},a")
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return DataConfig(root=str(tmp_path), num_frames=4, sampling_rate=1, crop_size=16, max_bad_fraction=0.5)


def test_train_replaces_bad_videos_deterministically(tmp_path, damaged):
    ds = build_dataset(_mixed_dataset(tmp_path, damaged), "train")
    bad_items = [ds[i] for i in range(6, 9)]
    for item, kind in zip(bad_items, ("zero_length", "random_bytes", "missing")):
        assert item["ok"] and item["index"] != ds.paths.index(str(damaged[kind][0]))
        assert item["bad"][0][0] == str(damaged[kind][0]) and damaged[kind][1] in item["bad"][0][1]
        assert item["video"].abs().sum() > 0
    again = build_dataset(_mixed_dataset(tmp_path, damaged), "train")  # fresh process-like state
    for i, item in zip(range(6, 9), bad_items):
        other = again[i]
        assert other["index"] == item["index"] and torch.equal(other["video"], item["video"])
        assert other["bad"] == item["bad"]


def test_test_split_reports_bad_video_as_failure(tmp_path, damaged):
    ds = build_dataset(_mixed_dataset(tmp_path, damaged), "test")
    item = ds[6]
    assert not item["ok"] and item["index"] == 6 and item["label"] == 0
    assert torch.all(item["video"] == 0) and item["bad"][0][0] == str(damaged["zero_length"][0])
    assert ds[0]["ok"] and ds[0]["bad"] == []


def test_tracker_counts_once_and_stops_above_fraction(caplog):
    tracker = BadFileTracker(total=20, max_fraction=0.1)
    assert tracker.add("a.mp4", "empty file") is True
    assert tracker.add("a.mp4", "empty file") is False
    tracker.update([("b.mp4", "corrupt"), ("a.mp4", "empty file")])
    assert tracker.count == 2 and tracker.items == [("a.mp4", "empty file"), ("b.mp4", "corrupt")]
    assert sum("a.mp4" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(DataQualityError) as info:
        tracker.add("c.mp4", "no video stream")  # 3 / 20 = 15% > 10%
    assert all(name in str(info.value) for name in ("a.mp4", "b.mp4", "c.mp4", "empty file"))


def test_data_check_cli_lists_bad_files(tmp_path, damaged, capsys):
    rows = [f"{path},x" for path, _ in damaged.values()] + ["good.mp4,x"]
    ann = tmp_path / "all.csv"
    ann.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert cli_main(["data", "check", str(ann), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for path, reason in damaged.values():
        assert f"BAD {path}: " in out and re.search(reason, out.split(f"BAD {path}: ")[1].splitlines()[0])
    assert "good.mp4" not in out.replace("videos ok", "")
    assert "1 of 9 videos ok, 8 bad" in out


def test_data_check_cli_clean_dataset(tmp_path, capsys):
    write_video(tmp_path / "a" / "x.mp4", num_frames=10)
    assert cli_main(["data", "check", str(tmp_path), "--format", "folder"]) == 0
    assert "1 of 1 videos ok, 0 bad" in capsys.readouterr().out


def test_data_check_applies_the_class_list_train_reads(tmp_path, capsys):
    write_video(tmp_path / "videos" / "x.mp4", num_frames=10)
    (tmp_path / "train.csv").write_text("path,label\nvideos/x.mp4,jump\n")
    (tmp_path / "classes.txt").write_text("run\nwalk\n")
    cfg = DataConfig(root=str(tmp_path), num_frames=4, sampling_rate=1, crop_size=16)
    with pytest.raises(AnnotationError) as train_error:
        build_dataset(cfg, "train")
    assert cli_main(["data", "check", str(tmp_path / "train.csv")]) == 1
    err = capsys.readouterr().err
    assert str(train_error.value) in err and "label 'jump' is not in the class list" in err
    (tmp_path / "other.txt").write_text("jump\n")  # an explicit class list wins, as data.classes does for train
    assert cli_main(["data", "check", str(tmp_path / "train.csv"), "--classes", str(tmp_path / "other.txt")]) == 0
    assert "1 of 1 videos ok, 0 bad (1 classes)" in capsys.readouterr().out


def test_collate_for_training_leaves_out_items_without_a_decodable_clip():
    def item(ok, label, bad=()):
        return {"video": torch.full((3, 2, 4, 4), 1.0 if ok else 0.0), "label": label, "index": label, "view": 0,
                "ok": ok, "bad": list(bad)}

    batch = [item(True, 0, [("x.mp4", "empty file")]), item(False, 1, [("y.mp4", "corrupt"), ("z.mp4", "corrupt")])]
    kept = collate(batch, drop_failed=True)
    assert kept["video"].shape == (1, 3, 2, 4, 4) and kept["label"].tolist() == [0] and kept["dropped"] == 1
    assert kept["bad"] == [("x.mp4", "empty file"), ("y.mp4", "corrupt"), ("z.mp4", "corrupt")]
    empty = collate(batch[1:], drop_failed=True)
    assert empty["video"].shape == (0, 3, 2, 4, 4) and empty["label"].shape == (0,) and empty["dropped"] == 1
    assert collate(batch)["video"].shape[0] == 2, "evaluation keeps failures: they count as wrong predictions"


def _trainer(tmp_path, damaged, *overrides):
    cfg = tiny_config(Path(_mixed_dataset(tmp_path, damaged).root), tmp_path / "run", "train.eval_every_epochs=0",
                      "data.max_bad_fraction=0.5", "data.max_replacements=0", "train.epochs=1", *overrides)
    return Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu")))


def test_unreplaceable_clips_never_reach_the_model(tmp_path, damaged):
    trainer = _trainer(tmp_path, damaged, "train.batch_size=3")
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["bad_files"]) == 3 and summary["dropped_clips"] == 3, "9 videos, 3 bad, no replacement"
    assert sum(len(clip) for clip in seen) == 9 - 3
    assert all(clip.flatten(1).abs().sum(1).min() > 0 for clip in seen), "an all-zero clip reached the model"


def test_a_step_without_any_decodable_clip_stops_with_a_clear_error(tmp_path, damaged):
    with pytest.raises(DataQualityError, match="every clip of optimiser step .* replacement draws were bad too"):
        _trainer(tmp_path, damaged, "train.batch_size=1").fit()
