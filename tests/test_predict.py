"""``sct predict``: top-k labels for videos of any length and resolution, as a table or JSON."""

import json

import av
import numpy as np
import pytest

from engine_support import CLASSES, synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.engine.predict import predict
from sct.engine.train import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = synthetic_set(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("trained")
    return train(tiny_config(data, out / "run", "train.max_steps=2", "train.eval_every_epochs=0")) / "model.safetensors"


def _write_video(path, frames, height, width):
    """Random-coloured frames, H.264, at a size and length unlike the training clips."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_any_length_and_resolution_gives_sorted_top_k(checkpoint, tmp_path):
    long_wide = _write_video(tmp_path / "wide.mp4", frames=40, height=48, width=96)
    short_tall = _write_video(tmp_path / "tall.mp4", frames=3, height=80, width=40)
    results = predict([long_wide, short_tall], checkpoint, topk=2, views="2x3")
    assert [r["video"] for r in results] == [str(long_wide), str(short_tall)]
    for result in results:
        probs = [p["probability"] for p in result["predictions"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert {p["label"] for p in result["predictions"]} <= set(CLASSES) and result["error"] is None


def test_json_and_table_output(checkpoint, tmp_path, capsys):
    video = _write_video(tmp_path / "v.mp4", frames=10, height=32, width=32)
    assert cli_main(["predict", str(video), "--checkpoint", str(checkpoint), "--json", "--topk", "9"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert len(entry["predictions"]) == 3, "top-k is capped at the number of classes"
    assert sum(p["probability"] for p in entry["predictions"]) == pytest.approx(1.0, abs=1e-5)
    assert cli_main(["predict", str(video), "--checkpoint", str(checkpoint)]) == 0
    table = capsys.readouterr().out
    assert str(video) in table and "%" in table and entry["predictions"][0]["label"] in table


def test_unreadable_and_missing_videos_are_reported(checkpoint, tmp_path, capsys):
    good = _write_video(tmp_path / "good.mp4", frames=10, height=32, width=32)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    assert cli_main(["predict", str(good), str(bad), "--checkpoint", str(checkpoint), "--json"]) == 1
    first, second = json.loads(capsys.readouterr().out)
    assert first["error"] is None and second["predictions"] == [] and "not a readable" in second["error"]
    assert cli_main(["predict", str(tmp_path / "missing.mp4"), "--checkpoint", str(checkpoint)]) == 1
    assert "missing.mp4" in capsys.readouterr().err
