"""``train.tensorboard``: event files with the step and epoch scalars, the val and eval confusion images,
resumed runs purged of the interrupted attempt's events, and a clear error without the package."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog

from engine_support import synthetic_set, tiny_config
from sct.engine.evaluate import evaluate
from sct.engine.train import train
from sct.errors import ConfigError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_training_and_eval_write_scalars_and_confusion_images(data, tmp_path):
    run_dir = train(tiny_config(data, tmp_path / "run", "train.tensorboard=true"))
    events = _events(run_dir)
    tags = events.Tags()
    for tag in ("train/loss", "train/lr", "train/top1", "train/grad_norm", "train/samples_per_s"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, 7)), tag
    for tag in ("epoch/train_loss", "epoch/train_top1", "val/top1", "val/clip_top1"):
        assert [e.step for e in events.Scalars(tag)] == [3, 6], tag
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in _step_records(run_dir)], rel=1e-6)
    assert [e.step for e in events.Images("val/confusion")] == [3, 6]
    assert events.Images("val/confusion")[0].encoded_image_string.startswith(b"\x89PNG")
    assert "eval/test_2x3/confusion" not in tags["images"]

    result = evaluate(run_dir / "model.safetensors", num_workers=0)
    events = _events(run_dir)
    assert [e.value for e in events.Scalars("eval/test_2x3/top1")] == pytest.approx([result["top1"]])
    assert [e.step for e in events.Images("eval/test_2x3/confusion")] == [6]


def _step_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "step"]


def test_a_resumed_run_shows_each_step_once(data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(data, out, "train.tensorboard=true", "train.max_steps=5", "train.eval_every_epochs=0",
                      "train.checkpoint_every_steps=1", "train.keep_checkpoints=3"))
    # Pretend the attempt was killed after its step-4 checkpoint: drop the step-5 one, keep its events.
    for path in (out / "checkpoints").glob("step_00000005.*"):
        path.unlink()
    train(tiny_config(data, out, "train.tensorboard=true", "resume=auto", "train.eval_every_epochs=0"))
    steps = [e.step for e in _events(out).Scalars("train/loss")]
    assert steps == list(range(1, 7))
    # What makes readers drop the first attempt's step 5: the resumed writer opens with a START at step 5
    # (the fresh run's START at 0 clears any events of an earlier run in that folder).
    starts = [e.step for path in (out / "tensorboard").glob("events.out.tfevents.*")
              for e in EventFileLoader(str(path)).Load() if e.session_log.status == SessionLog.START]
    assert sorted(starts) == [0, 5]


def test_missing_package_is_a_config_error_before_any_work(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="train.tensorboard"):
        train(tiny_config(data, tmp_path / "run", "train.tensorboard=true"))
    assert not (tmp_path / "run").exists()
