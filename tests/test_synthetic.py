"""The synthetic motion dataset: real decodable H.264 files, determinism, exact time-reversed pairs, layout, CLI."""

import csv
import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from sct.cli import main as cli_main
from sct.data.synthetic import (
    ALL_CLASSES,
    DEFAULT_CLASSES,
    PAIRS,
    clip_rng,
    generate,
    render_clip,
    sample_clip,
    split_sizes,
    stretch_motion,
    video_name,
    write_video,
)
from sct.errors import ConfigError, SCTError

TINY = dict(videos_per_class=3, num_frames=8, size=32)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "set", workers=1, seed=0, **TINY)


def test_videos_are_h264_yuv420p_with_expected_frames_and_size(tiny_set):
    rows = read_csv(tiny_set / "train.csv") + read_csv(tiny_set / "val.csv") + read_csv(tiny_set / "test.csv")
    assert len(rows) == len(DEFAULT_CLASSES) * TINY["videos_per_class"]
    for row in rows:
        path = tiny_set / row["path"]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = decode(path)
        assert frames.shape == (TINY["num_frames"], TINY["size"], TINY["size"], 3)
        assert frames.std(axis=0).mean() > 1.0, f"{path} does not change over time"


def test_same_seed_gives_identical_files_with_any_worker_count(tiny_set, tmp_path):
    again = generate(tmp_path / "two_workers", workers=2, seed=0, **TINY)
    assert all_files(again) == all_files(tiny_set)


def test_a_class_keeps_its_clips_when_other_classes_change(tiny_set, tmp_path):
    alone = generate(tmp_path / "grow_only", workers=1, seed=0, classes=["grow"], **TINY)
    for i in range(TINY["videos_per_class"]):
        assert (alone / video_name("grow", i)).read_bytes() == (tiny_set / video_name("grow", i)).read_bytes()


def test_different_seeds_give_different_videos(tiny_set, tmp_path):
    other = generate(tmp_path / "seed1", workers=1, seed=1, **TINY)
    for name in DEFAULT_CLASSES:
        a, b = decode(tiny_set / video_name(name, 0)), decode(other / video_name(name, 0))
        assert np.abs(a.astype(int) - b).mean() > 5


def test_clips_of_a_class_differ_from_each_other(tiny_set):
    first, second = decode(tiny_set / video_name("move_up", 0)), decode(tiny_set / video_name("move_up", 1))
    assert np.abs(first.astype(int) - second).mean() > 5


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.forward)
def test_each_pair_is_an_exact_time_reversal_even_after_encoding(pair, tmp_path):
    params = sample_clip(pair.forward, clip_rng(3, pair.forward, 0), num_frames=8, size=32)
    forward, backward = render_clip(pair.forward, params), render_clip(pair.backward, params)
    assert np.array_equal(backward, forward[::-1])
    assert not np.array_equal(forward, forward[::-1])
    write_video(tmp_path / "f.mp4", forward)
    write_video(tmp_path / "b.mp4", backward)
    decoded_forward, decoded_backward = decode(tmp_path / "f.mp4"), decode(tmp_path / "b.mp4")
    assert np.array_equal(decoded_backward, decoded_forward[::-1])


def _object_weight(name: str, seed: int, shape: str | None = None) -> np.ndarray:
    """Per-pixel |frame - background| ``(T, H, W)`` of a noise-free, distractor-free clip of ``name``."""
    params = sample_clip(name, clip_rng(seed, name, 0), num_frames=12, size=64, noise=0.0, distractor=False)
    if shape is not None:
        params = dataclasses.replace(params, sprite=dataclasses.replace(params.sprite, shape=shape))
    background = np.floor(params.background.clip(0, 1) * 255 + 0.5)
    return np.abs(render_clip(name, params).astype(float) - background).sum(-1)


def _centroids(weight: np.ndarray) -> np.ndarray:
    """``(T, 2)`` weighted (x, y) centre of each frame of ``weight`` ``(T, H, W)``."""
    yy, xx = np.mgrid[: weight.shape[1], : weight.shape[2]]
    total = weight.sum((1, 2))
    return np.stack([(weight * xx).sum((1, 2)) / total, (weight * yy).sum((1, 2)) / total], axis=1)


def _orientation(weight: np.ndarray) -> np.ndarray:
    """``(T,)`` unwrapped principal-axis angle; it increases for clockwise turns on screen (y points down)."""
    yy, xx = np.mgrid[: weight.shape[1], : weight.shape[2]]
    cx, cy = _centroids(weight).T
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    mu20, mu02, mu11 = ((weight * m).sum((1, 2)) for m in (dx * dx, dy * dy, dx * dy))
    return np.unwrap(np.arctan2(2 * mu11, mu20 - mu02), period=2 * np.pi) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ALL_CLASSES)
def test_each_class_shows_the_motion_it_is_named_for(name, seed):
    weight = _object_weight(name, seed, shape="bar" if name.startswith("rotate") else None)
    (x0, y0), (x1, y1) = _centroids(weight)[[0, -1]]
    area = (weight > 30).sum((1, 2))
    strength = weight.sum((1, 2))
    expected = {
        "move_right": x1 - x0 > 15, "move_left": x0 - x1 > 15,
        "move_down": y1 - y0 > 15, "move_up": y0 - y1 > 15,
        "move_down_right": x1 - x0 > 10 and y1 - y0 > 10, "move_up_left": x0 - x1 > 10 and y0 - y1 > 10,
        "grow": area[-1] > 3 * area[0], "shrink": area[0] > 3 * area[-1],
        "fade_in": strength[-1] > 5 * strength[0], "fade_out": strength[0] > 5 * strength[-1],
        "rotate_clockwise": np.all(np.diff(_orientation(weight)) > 0),
        "rotate_anticlockwise": np.all(np.diff(_orientation(weight)) < 0),
    }
    assert expected[name]
    if name.startswith(("rotate", "grow", "shrink", "fade")):
        assert abs(x1 - x0) < 3 and abs(y1 - y0) < 3, "only the translation classes travel"


def test_noise_and_distractor_knobs_change_the_frames():
    def changed_pixels(distractor: bool) -> int:
        params = sample_clip("grow", clip_rng(0, "grow", 0), size=64, noise=0.0, distractor=distractor)
        background = np.floor(params.background.clip(0, 1) * 255 + 0.5)
        return int((render_clip("grow", params) != background).any(-1).sum())

    assert changed_pixels(distractor=True) > changed_pixels(distractor=False) + 16 * 10
    clean = sample_clip("fade_in", clip_rng(0, "fade_in", 0), size=64, noise=0.0)
    noisy = render_clip("fade_in", dataclasses.replace(clean, noise=0.05)).astype(float)
    assert (noisy - render_clip("fade_in", clean)).std() == pytest.approx(0.05 * 255, rel=0.15)


def test_index_files_list_every_video_once_with_its_class(tiny_set):
    assert (tiny_set / "classes.txt").read_text().splitlines() == list(DEFAULT_CLASSES)
    seen = []
    for split in ("train", "val", "test"):
        text = (tiny_set / f"{split}.csv").read_text()
        assert text.splitlines()[0] == "path,label"
        rows = read_csv(tiny_set / f"{split}.csv")
        assert sorted(r["label"] for r in rows) == sorted(DEFAULT_CLASSES), "one clip per class in each split"
        for row in rows:
            assert row["path"].startswith(f"videos/{row['label']}/") and (tiny_set / row["path"]).is_file()
        seen += [r["path"] for r in rows]
    assert sorted(seen) == sorted(str(p.relative_to(tiny_set)) for p in tiny_set.rglob("*.mp4"))


def test_split_sizes_follow_fractions_and_keep_requested_splits_non_empty():
    assert split_sizes(100, (0.7, 0.15, 0.15)) == (70, 15, 15)
    assert split_sizes(3, (0.7, 0.15, 0.15)) == (1, 1, 1)
    assert split_sizes(2, (0.7, 0.15, 0.15)) == (2, 0, 0)
    assert split_sizes(10, (0.5, 0.5, 0.0)) == (5, 5, 0)
    assert split_sizes(4, (0.9, 0.05, 0.05)) == (2, 1, 1)


def test_same_set_is_reused_another_set_replaced_and_a_foreign_folder_refused(tmp_path):
    root = generate(tmp_path / "set", workers=1, seed=0, **TINY)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate(root, workers=1, seed=0, **TINY) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    first = (root / video_name("grow", 0)).read_bytes()
    generate(root, workers=1, seed=5, classes=["grow"], **TINY)
    assert (root / "classes.txt").read_text() == "grow\n" and (root / video_name("grow", 0)).read_bytes() != first
    assert not (root / "videos" / "shrink").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SCTError, match="overwrite"):
        generate(foreign, workers=1, seed=0, **TINY)
    generate(foreign, workers=1, seed=0, classes=["fade_in"], videos_per_class=1, num_frames=4, size=16,
             overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert (foreign / "classes.txt").read_text() == "fade_in\n"


@pytest.mark.parametrize("bad, option", [
    (dict(size=33), "size"), (dict(num_frames=1), "num_frames"), (dict(videos_per_class=0), "videos_per_class"),
    (dict(classes=["jump"]), "classes"), (dict(workers=0), "workers"), (dict(splits=(0.5, 0.5, 0.5)), "splits"),
])
def test_bad_options_raise_config_error_naming_the_option(bad, option, tmp_path):
    with pytest.raises(ConfigError, match=option):
        generate(tmp_path / "x", **{**TINY, **bad})


def test_cli_writes_a_set_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["synth", str(out), "--videos-per-class", "3", "--frames", "4", "--size", "16",
                     "--workers", "1", "--classes", "grow,shrink", "--seed", "7"])
    assert code == 0
    assert "6 videos" in capsys.readouterr().out
    assert (out / "classes.txt").read_text() == "grow\nshrink\n"
    assert decode(out / video_name("shrink", 2)).shape == (4, 16, 16, 3)
    assert cli_main(["synth", str(tmp_path / "bad"), "--size", "15"]) == 1
    assert "size" in capsys.readouterr().err


def test_stretch_motion_holds_the_end_frames():
    motion = np.arange(4)[:, None] * np.ones((1, 2), dtype=np.int64)
    out = stretch_motion(motion, 9, 3)
    assert out[:, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 3, 3]
    with pytest.raises(ValueError):
        stretch_motion(motion, 9, 6)


def test_motion_frames_confine_the_motion_to_a_brief_moment(tmp_path):
    root = generate(tmp_path / "s", videos_per_class=3, num_frames=24, motion_frames=4, size=32,
                    classes=["move_right", "move_left"], workers=1, progress=False)
    starts = set()
    for name in ("move_right", "move_left"):
        for i in range(3):
            frames = decode(root / video_name(name, i)).astype(int)
            assert len(frames) == 24
            changes = np.flatnonzero(np.abs(np.diff(frames, axis=0)).max(axis=(1, 2, 3)) > 0)
            # intra-only at a constant quantiser: held frames decode identically; 4 moving frames = 3 changes
            assert len(changes) == 3 and np.ptp(changes) == 2, changes
            starts.add(int(changes[0]))
    assert len(starts) > 1  # the moment is drawn per video
    with pytest.raises(ConfigError, match="motion_frames"):
        generate(tmp_path / "bad", num_frames=8, motion_frames=9, classes=["grow"], workers=1, progress=False)
