"""What a run shows while it trains: a bar per epoch with the run's ETA on a terminal, plain lines elsewhere."""

import io
import os
import re
import subprocess
import threading

import pytest

from engine_support import ROOT, run_overrides, sct_command, subprocess_env, synthetic_set
from sct.engine.progress import TrainProgress, format_duration


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (42.4, "42s"), (125, "2m05s"), (3725, "1h02m"),
                                          (-3, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _drive(progress: TrainProgress, epochs: int = 2, steps: int = 3) -> None:
    for epoch in range(epochs):
        progress.start_epoch(epoch, 0, epoch * steps)
        for k in range(1, steps + 1):
            progress.step(k, epoch * steps + k, loss=1.0 / k, lr=0.1, samples_per_s=8.0)
        progress.close_epoch()
        progress.end_epoch({"epoch": epoch + 1, "step": (epoch + 1) * steps, "train_loss": 0.5, "train_top1": 50.0})


def test_plain_lines_carry_the_run_eta_every_log_every_steps():
    out, err = io.StringIO(), io.StringIO()
    _drive(TrainProgress(epochs=2, steps_per_epoch=3, total_steps=6, log_every=2, stream=err, out=out,
                         interactive=False))
    lines = out.getvalue().splitlines()
    assert [line.split(" loss")[0] for line in lines if " step " in line] == [
        "epoch 1/2 step 2/3", "epoch 2/2 step 1/3", "epoch 2/2 step 3/3"]  # global steps 2, 4, 6
    assert all(re.search(r"run ETA \d+s\)$", line) for line in lines if " step " in line)
    assert lines[-1] == "epoch 2/2: train loss 0.5000, train top-1 50.0%, run ETA 0s"
    assert err.getvalue() == ""


def test_terminal_gets_a_bar_per_epoch_and_no_step_lines():
    out, err = io.StringIO(), io.StringIO()
    _drive(TrainProgress(epochs=2, steps_per_epoch=3, total_steps=6, log_every=1, stream=err, out=out,
                         interactive=True))
    assert out.getvalue() == ""
    bars = err.getvalue()
    assert "epoch 1/2: 100%" in bars and "epoch 2/2: 100%" in bars and "3/3" in bars
    assert "run ETA" in bars and "epoch 2/2: train loss 0.5000" in bars


def test_run_eta_counts_only_this_process_steps_and_what_is_left():
    progress = TrainProgress(epochs=10, steps_per_epoch=10, total_steps=100, log_every=1, enabled=False)
    assert progress.run_eta(40) is None
    progress.start_epoch(4, 0, 40)  # a run resumed at step 40
    progress._start -= 10.0  # ten seconds spent on the first 5 steps of this process
    assert progress.run_eta(45) == pytest.approx(10.0 / 5 * 55, rel=0.01)
    assert progress.run_eta(100) == 0.0


def _read_all(fd: int, into: list) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal's other end closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_sct_train_on_a_real_terminal_draws_bars(tmp_path):
    data = synthetic_set(tmp_path)
    master, slave = os.openpty()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, chunks))
    reader.start()
    cmd = sct_command("train", *run_overrides(data, tmp_path / "run", "train.eval_every_epochs=0"))
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=slave, text=True,
                          timeout=240)
    os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, done.stdout[-2000:] + terminal[-2000:]
    assert "epoch 1/2" in terminal and "epoch 2/2" in terminal and "run ETA" in terminal and "\r" in terminal
    assert " step " not in done.stdout  # no plain step lines when a terminal shows the bar
