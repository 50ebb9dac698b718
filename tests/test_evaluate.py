"""Multi-view evaluation: softmax averaging per video, failures counted as wrong, outputs, early errors."""

import csv
import json
import shutil

import numpy as np
import pytest

from engine_support import synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.engine.evaluate import evaluate
from sct.engine.metrics import add_views, merge_scores, summarize
from sct.engine.train import train
from sct.errors import CheckpointError, ConfigError

VIEWS = [  # video, label, softmax of one view, decoded?
    (0, 0, [0.6, 0.3, 0.1], True),
    (0, 0, [0.2, 0.7, 0.1], True),  # averaged: [0.4, 0.5, 0.1] -> wrong although one clip is right
    (1, 1, [0.1, 0.8, 0.1], True),
    (1, 1, [0.3, 0.6, 0.1], True),
    (2, 2, [0.0, 0.0, 0.0], False),  # undecodable: counts as a wrong prediction
    (2, 2, [0.0, 0.0, 0.0], False),
]


def _fold(rows):
    scores = {}
    videos, labels, probs, ok = (np.array(col) for col in zip(*rows))
    add_views(scores, videos, labels, probs.astype(np.float64), ok)
    return scores


def test_softmax_is_averaged_per_video_and_failures_count_as_wrong():
    result = summarize(_fold(VIEWS), ["a", "b", "c"], topk=2)
    assert result["top1"] == pytest.approx(100 / 3)
    assert result["top5"] == pytest.approx(200 / 3) and result["topk"] == 2
    assert result["clip_top1"] == pytest.approx(100 * 3 / 6)
    assert (result["num_videos"], result["num_failed"], result["num_clips"]) == (3, 1, 6)
    assert result["per_class_top1"] == {"a": 0.0, "b": 100.0, "c": 0.0}
    assert result["confusion"] == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_views_split_over_processes_merge_to_the_same_result():
    parts = [_fold(VIEWS[:3]), _fold(VIEWS[3:])]
    merged = summarize(merge_scores(parts), ["a", "b", "c"])
    whole = summarize(_fold(VIEWS), ["a", "b", "c"])
    assert {k: merged[k] for k in ("top1", "clip_top1", "num_clips")} == {
        k: whole[k] for k in ("top1", "clip_top1", "num_clips")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    run_dir = train(tiny_config(data, out / "run", "train.max_steps=3", "train.eval_every_epochs=0"))
    return run_dir / "model.safetensors"


def test_eval_writes_json_predictions_and_confusion(checkpoint):
    result = evaluate(checkpoint, views="2x3")
    out = checkpoint.parent / "eval_test_2x3"
    assert json.loads((out / "eval.json").read_text()) == {**result, "output_dir": str(out)}
    for key in ("top1", "top5", "num_videos", "num_failed", "views", "clip_top1", "per_class_top1"):
        assert key in result, key
    assert (result["views"], result["num_videos"], result["num_clips"], result["num_failed"]) == ("2x3", 3, 18, 0)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 3 and {r["label"] for r in rows} == {"move_right", "move_left", "grow"}
    assert result["top1"] == pytest.approx(100 * sum(int(r["correct"]) for r in rows) / 3)
    assert (out / "confusion.png").stat().st_size > 0


def test_undecodable_test_video_is_a_failure_not_a_skip(data, checkpoint, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    broken = sorted((copy / "videos" / "grow").glob("*.mp4"))[-1]  # the last clip of a class is in test
    broken.write_bytes(b"\x00" * 100)
    code = cli_main(["eval", "--checkpoint", str(checkpoint), "--views", "1x3", "--output", str(tmp_path / "out"),
                     f"data.root={copy}", "data.max_bad_fraction=0.5"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert (result["num_videos"], result["num_failed"]) == (3, 1)
    assert [path for path, _ in result["bad_files"]] == [str(broken)]
    row = [r for r in csv.DictReader((tmp_path / "out" / "predictions.csv").open()) if r["failed"] == "1"]
    assert len(row) == 1 and row[0]["correct"] == "0" and row[0]["path"] == str(broken)
    assert "1 failed to decode" in capsys.readouterr().out


def test_class_list_that_disagrees_with_the_checkpoint_is_refused(data, checkpoint, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    names = (copy / "classes.txt").read_text().split()
    (copy / "classes.txt").write_text("\n".join(reversed(names)) + "\n")
    with pytest.raises(CheckpointError, match="trained on 3 classes"):
        evaluate(checkpoint, tiny_config(copy, tmp_path / "x").data, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_views_and_clip_shape_are_config_errors(data, checkpoint, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--views"):
        evaluate(checkpoint, views="3")
    with pytest.raises(ConfigError, match="data.num_frames=4 .* num_frames=8"):
        evaluate(checkpoint, tiny_config(data, tmp_path / "x", "data.num_frames=4").data)
    assert cli_main(["eval", "--checkpoint", str(checkpoint), "optim.lr=1"]) == 1
    assert "only data.* and eval.*" in capsys.readouterr().err


def test_eval_on_a_split_without_videos_fails_before_writing(data, checkpoint, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "test.csv").write_text("path,label\n")
    code = cli_main(["eval", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"), f"data.root={copy}"])
    assert code == 1
    assert f"test split ({copy / 'test.csv'}) lists no videos" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
