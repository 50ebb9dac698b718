"""Training on real synthetic videos with a small sct_tiny: run folder, exact resume after SIGKILL,
NaN handling, gradient accumulation, bad files, and the errors raised before any work starts."""

import json
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from engine_support import CLASSES, ROOT, run_overrides, sct_command, subprocess_env, synthetic_set, tiny_config
from sct.config import config_from_dict
from sct.engine.checkpoint import CheckpointPaths, latest_checkpoint
from sct.engine.metrics import read_metrics
from sct.engine.train import TrainingDivergedError, train
from sct.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def test_run_folder_holds_config_labels_metrics_checkpoints_and_curves(data, tmp_path):
    cfg = tiny_config(data, tmp_path / "run", "train.keep_checkpoints=1", "train.checkpoint_every_steps=2")
    run_dir = train(cfg)
    assert config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())) == cfg
    assert (run_dir / "labels.txt").read_text().split() == CLASSES
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 7)), "12 training videos / batch 4 = 3 steps x 2 epochs"
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in steps)
    assert [r["epoch"] for r in epochs] == [1, 2] and all("val_top1" in r for r in epochs)
    assert latest_checkpoint(run_dir / "checkpoints") == CheckpointPaths.for_step(run_dir / "checkpoints", 6)
    assert len(list((run_dir / "checkpoints").glob("*.safetensors"))) == 1, "keep_checkpoints=1 prunes the rest"
    for name in ("curves.png", "model.safetensors", "summary.json"):
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["bad_files"] == []


def _train_command(data, out, *extra):
    return sct_command("train", *run_overrides(
        data, out, "train.epochs=2", "train.num_workers=1", "train.checkpoint_every_steps=1",
        "model.drop_rate=0.3", "model.drop_path_rate=0.2", "train.eval_every_epochs=0", *extra))


def _weights(run_dir):
    return load_file(run_dir / "model.safetensors")


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_command(data, reference), cwd=ROOT, env=subprocess_env(), check=True,
                   capture_output=True, timeout=240)

    kill_after = random.randint(1, 5)  # of 6 optimiser steps
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_command(data, interrupted), cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [r["step"] for r in read_metrics(interrupted / "metrics.jsonl") if r.get("type") == "step"]
        if steps and steps[-1] >= kill_after:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"training ended before the kill at step {kill_after}"
    assert not (interrupted / "model.safetensors").exists()

    resumed = subprocess.run(_train_command(data, interrupted, "resume=auto"), cwd=ROOT, env=subprocess_env(),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _weights(reference), _weights(interrupted)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), f"{key} differs after a kill at step {kill_after}"
    losses = [[r["loss"] for r in read_metrics(d / "metrics.jsonl") if r["type"] == "step"]
              for d in (reference, interrupted)]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_absurd_learning_rate_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(data, tmp_path):
    cfg = tiny_config(data, tmp_path / "run", "optim.lr=1e30", "optim.clip_grad=null", "optim.warmup_epochs=0",
                      "train.checkpoint_every_steps=1")
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf).*last good checkpoint is .*step_0+1"):
        train(cfg)
    kept = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert kept == CheckpointPaths.for_step(tmp_path / "run" / "checkpoints", 1)
    assert all(torch.isfinite(t).all() for t in load_file(kept.weights).values())
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["type"] == "diverged"
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_gradient_accumulation_matches_the_full_batch(data, tmp_path):
    # Dense global attention: LSH draws fresh rotations per forward pass, which accumulation changes.
    common = ("model.global_kind=dense", "train.epochs=1", "train.eval_every_epochs=0", "optim.lr=0.05")
    full = train(tiny_config(data, tmp_path / "full", *common))
    accumulated = train(tiny_config(data, tmp_path / "accum", *common, "train.micro_batch_size=2"))
    losses = [[r["loss"] for r in read_metrics(d / "metrics.jsonl") if r["type"] == "step"]
              for d in (full, accumulated)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for key, value in _weights(full).items():
        torch.testing.assert_close(_weights(accumulated)[key], value, rtol=1e-4, atol=1e-5)


def test_bad_training_video_is_replaced_and_listed(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    broken = sorted((copy / "videos" / "grow").glob("*.mp4"))[0]
    broken.write_bytes(b"not a video")
    run_dir = train(tiny_config(copy, tmp_path / "run", "train.epochs=1", "train.eval_every_epochs=0",
                                "data.max_bad_fraction=0.2"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [path for path, _ in summary["bad_files"]] == [str(broken)]


def test_bf16_autocast_ema_and_max_steps(data, tmp_path):
    run_dir = train(tiny_config(data, tmp_path / "run", "train.precision=bf16", "train.ema_decay=0.5",
                                "train.max_steps=2", "train.eval_every_epochs=0"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["epochs"] == 0
    assert latest_checkpoint(run_dir / "checkpoints") == CheckpointPaths.for_step(run_dir / "checkpoints", 2)
    ema, raw = load_file(run_dir / "model.ema.safetensors"), _weights(run_dir)
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("model.num_classes=5", ConfigError, "model.num_classes=5 disagrees with the dataset's 3 classes"),
        ("model.num_frames=4", ConfigError, "model.num_frames=4 disagrees with data.num_frames=8"),
        ("train.micro_batch_size=3", ConfigError, "train.micro_batch_size=3"),
        ("train.batch_size=64", ConfigError, "larger than the 12 training videos"),
        ("resume=nowhere.safetensors", CheckpointError, "nowhere.safetensors"),
        ("data.root=/nonexistent", Exception, "/nonexistent"),
    ],
)
def test_errors_before_any_work(data, tmp_path, override, error, message):
    with pytest.raises(error, match=message):
        train(tiny_config(data, tmp_path / "run", override))
    assert not (tmp_path / "run").exists(), "nothing may be written before the inputs are checked"


def test_existing_run_needs_resume_and_a_matching_model(data, tmp_path):
    train(tiny_config(data, tmp_path / "run", "train.max_steps=1", "train.eval_every_epochs=0"))
    with pytest.raises(ConfigError, match="already holds checkpoints.*resume=auto"):
        train(tiny_config(data, tmp_path / "run"))
    with pytest.raises(CheckpointError, match="differs in embed_dim"):
        train(tiny_config(data, tmp_path / "run", "resume=auto", "model.embed_dim=32"))
