"""The run folder: one run at a time (lock), leftovers of killed writes removed, unwritable outputs and a
full disk reported in one message with the last good checkpoint kept."""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from engine_support import ROOT, run_overrides, run_sct, sct_command, subprocess_env, synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.engine import checkpoint as ckpt
from sct.engine import evaluate as evaluate_module
from sct.engine.checkpoint import CheckpointPaths, latest_checkpoint
from sct.engine.metrics import read_metrics
from sct.engine.run_lock import RunFolderBusyError, RunLock
from sct.engine.train import train
from sct.errors import OutputError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _wait_for_step(proc, run_dir, step, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("type") == "step"]
        if steps and steps[-1] >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {step} (exit {proc.poll()})")


def test_second_run_is_refused_naming_the_first_and_a_dead_runs_lock_and_leftovers_are_cleared(data, tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        sct_command("train", *run_overrides(data, run_dir, "train.epochs=200", "train.checkpoint_every_steps=1",
                                            "train.eval_every_epochs=0")),
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(first, run_dir, 2)
        second = run_sct("train", *run_overrides(data, run_dir, "resume=auto"))
        assert second.returncode == 1
        assert "is in use by another run" in second.stderr and f"pid {first.pid} " in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "step"]
    assert steps == list(range(1, len(steps) + 1)), "only the first run wrote metrics"

    # What a killed write leaves behind: temp files of a dead process, weights whose state file never came.
    checkpoints = run_dir / "checkpoints"
    good = latest_checkpoint(checkpoints)
    left_by_the_kill = _left_by_a_kill(checkpoints)  # the SIGKILL above may land mid-write too
    dead = _dead_pid()
    leftovers = [checkpoints / f".step_00000999.safetensors.tmp-{dead}", run_dir / f".summary.json.tmp-{dead}",
                 CheckpointPaths.for_step(checkpoints, 998).weights, CheckpointPaths.for_step(checkpoints, 998).ema]
    for path in leftovers:
        path.write_bytes(b"partial")
    resumed = run_sct("train", *run_overrides(data, run_dir, "train.epochs=200", "train.checkpoint_every_steps=1",
                                              "train.eval_every_epochs=0", "resume=auto",
                                              f"train.max_steps={_step(good) + 1}"))
    assert resumed.returncode == 0, resumed.stderr
    assert "taking over the lock" in resumed.stderr and f"pid {first.pid} " in resumed.stderr
    assert f"removed {4 + len(left_by_the_kill)} file(s) left by interrupted writes" in resumed.stderr
    # A kill between a step's weights and its state leaves that step half written; the resumed run writes it anew.
    rewritten = CheckpointPaths.for_step(checkpoints, _step(good) + 1).files()
    assert not any(path.exists() for path in leftovers + left_by_the_kill if path not in rewritten)
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == _step(good) + 1
    assert (run_dir / "run.lock").read_text() == "", "a finished run leaves the lock free and empty"


def _left_by_a_kill(checkpoints) -> list:
    """Temp files of the run folder and its checkpoints, and the files of each step missing its weights or state."""
    temps = [p for folder in (checkpoints.parent, checkpoints) for p in folder.iterdir() if ".tmp-" in p.name]
    steps = {int(p.name[len("step_"):].split(".")[0]) for p in checkpoints.glob("step_*")}
    halves = [CheckpointPaths.for_step(checkpoints, step) for step in sorted(steps)]
    return temps + [p for paths in halves if not (paths.weights.is_file() and paths.state.is_file())
                    for p in paths.files() if p.exists()]


def _step(paths: CheckpointPaths) -> int:
    return int(paths.weights.name.removeprefix("step_").removesuffix(".safetensors"))


def test_lock_is_exclusive_within_a_machine_and_free_after_release(tmp_path):
    lock = RunLock(tmp_path / "run")
    with pytest.raises(RunFolderBusyError, match=rf"in use by another run \(pid {os.getpid()} "):
        RunLock(tmp_path / "run")
    lock.release()
    RunLock(tmp_path / "run").release()


_HOLD_AND_FORK = """
import os, sys, time
from sct.engine.run_lock import RunLock
RunLock(sys.argv[1])
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_a_killed_runs_lock_is_free_at_once_though_a_forked_worker_lives_on(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_AND_FORK, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, env=subprocess_env())
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(RunFolderBusyError):
            RunLock(tmp_path / "run")
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the worker outlives the run, as a loader worker does for a few seconds
        RunLock(tmp_path / "run").release()
    finally:
        holder.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_output_dir_under_a_file_is_refused_before_any_work(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=rf"output_dir={blocker}/run cannot be written: {blocker} is a file"):
        train(tiny_config(data, blocker / "run"))


@pytest.mark.parametrize("code, words", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_read_only_or_forbidden_output_dir_is_refused_before_any_work(data, tmp_path, monkeypatch, code, words):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("sct.outputs.tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match=rf"output_dir=.*run cannot be written: .*{words}"):
        train(tiny_config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_by_permissions(data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="Permission denied"):
        train(tiny_config(data, locked / "run"))


def test_full_disk_mid_checkpoint_stops_with_one_message_and_keeps_the_last_good_checkpoint(data, tmp_path,
                                                                                             monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"the first bytes of a state file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_until_the_disk_fills)
    run_dir = tmp_path / "run"
    cfg = tiny_config(data, run_dir, "train.checkpoint_every_steps=1", "train.keep_checkpoints=3",
                      "train.eval_every_epochs=0")
    with pytest.raises(OutputError, match=r"step_00000003\.state\.pt: No space left on device; training stopped at "
                                          r"optimiser step 3, the last good checkpoint is .*step_00000002\.safetensors "
                                          r"and intact"):
        train(cfg)
    checkpoints = run_dir / "checkpoints"
    assert latest_checkpoint(checkpoints) == CheckpointPaths.for_step(checkpoints, 2)
    assert not [p for p in checkpoints.iterdir() if ".tmp-" in p.name], "the failed write left no temp file"
    assert all(torch.isfinite(t).all() for t in load_file(CheckpointPaths.for_step(checkpoints, 2).weights).values())

    monkeypatch.setattr(ckpt.torch, "save", real_save)
    cfg.resume = "auto"
    train(cfg)  # the lock was released; the weights of step 3 without a state file are cleared first
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 6


def test_eval_checks_its_output_folder_before_inference(data, tmp_path, monkeypatch):
    run_dir = train(tiny_config(data, tmp_path / "run", "train.max_steps=1", "train.eval_every_epochs=0"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(evaluate_module, "infer_scores", lambda *a, **k: pytest.fail("inference ran"))
    with pytest.raises(OutputError, match=rf"--out={blocker}/eval cannot be written"):
        evaluate_module.evaluate(run_dir / "model.safetensors", output_dir=blocker / "eval")


@pytest.mark.parametrize("verb", [
    ["bench", "sct_tiny", "--frames", "2", "--size", "32"],
    ["visualize", "clip.mp4", "--model", "sct_tiny"],
    ["synth"],
    ["demo"],
])
def test_every_verb_that_writes_checks_its_out_folder_first(tmp_path, verb):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_sct(*verb, "--out", str(blocker / "out"), timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"sct {verb[0]}: error: --out={blocker}/out cannot be written: {blocker} is a " \
                                  "file, not a folder"



def test_demo_refuses_a_folder_another_run_is_writing_before_touching_it(tmp_path, capsys):
    out = tmp_path / "demo"
    lock = RunLock(out)
    (out / "checkpoints").mkdir()
    try:
        assert cli_main(["demo", "--out", str(out)]) == 1
    finally:
        lock.release()
    assert f"is in use by another run (pid {os.getpid()} " in capsys.readouterr().err
    assert (out / "checkpoints").is_dir() and not (out / "data").exists()
