"""SIGINT (Ctrl-C) and SIGTERM: a checkpoint at the next step, a resume command, an exit code, no traceback;
under torchrun every process stops at the same step."""

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_support import ROOT, VENV_BIN, run_overrides, sct_command, subprocess_env, synthetic_set
from sct.engine import stop
from sct.engine.checkpoint import CheckpointPaths, latest_checkpoint
from sct.engine.metrics import read_metrics
from sct.engine.stop import StopRequest

RESUME = re.compile(r"Resume with: (.+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("type") == "step"]


def _wait_for_step(proc, run_dir, step, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (_steps(run_dir) or [0])[-1] >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run did not reach step {step} (exit {proc.poll()})")


def _resume_command(stderr: str) -> list[str]:
    """The command the stopped run printed, with the programs taken from this virtual environment."""
    command = shlex.split(RESUME.search(stderr)[1])
    return [str(VENV_BIN / command[0]), *command[1:]]


def _settings(*extra):
    # Data-loading workers: Ctrl-C reaches them too, and they must leave the stopping to the main process.
    return ("train.epochs=6", "train.num_workers=1", "train.eval_every_epochs=0", "model.drop_rate=0.3", *extra)


def test_ctrl_c_saves_a_checkpoint_prints_how_to_resume_and_the_resumed_run_is_exact(data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(sct_command("train", *run_overrides(data, reference, *_settings())), cwd=ROOT,
                   env=subprocess_env(), check=True, capture_output=True, timeout=300)

    stopped = tmp_path / "stopped"
    # Its own process group, signalled as a whole: what Ctrl-C in a terminal does.
    proc = subprocess.Popen(sct_command("train", *run_overrides(data, stopped, *_settings())), cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_step(proc, stopped, 2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = _steps(stopped)[-1]
    assert last < 18, "the run stopped early"
    assert latest_checkpoint(stopped / "checkpoints") == CheckpointPaths.for_step(stopped / "checkpoints", last)
    assert f"SIGINT: stopped at epoch {(last - 1) // 3 + 1}, optimiser step {last}" in stderr

    resumed = subprocess.run(_resume_command(stderr), cwd=ROOT, env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _steps(stopped) == list(range(1, 19))
    expected, got = load_file(reference / "model.safetensors"), load_file(stopped / "model.safetensors")
    for key in expected:
        assert torch.equal(expected[key], got[key]), f"{key} differs after a stop at step {last}"


def _workers(agent_pid: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes a torchrun agent started."""
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [item.split(b"=", 1)[1] for item in environ if item.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks


def test_sigterm_to_one_process_under_torchrun_stops_every_process_at_the_same_step(data, tmp_path):
    run_dir = tmp_path / "run"
    command = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "sct", "train",
               *run_overrides(data, run_dir, *_settings("train.epochs=200", "model.global_kind=dense"))]
    proc = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_step(proc, run_dir, 2)
    workers = _workers(proc.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGTERM)  # a scheduler that signals one process of the job
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode != 0
    output = stdout + stderr
    last = _steps(run_dir)[-1]
    assert latest_checkpoint(run_dir / "checkpoints") == CheckpointPaths.for_step(run_dir / "checkpoints", last)
    assert f"SIGTERM: stopped at epoch {(last - 1) // 3 + 1}, optimiser step {last}" in output
    # Rank 0 was not signalled: it reports rank 1's signal and step (above). Whichever process exits first
    # makes torchrun terminate the other, so only the first exit code is certain to be 128 + SIGTERM.
    assert re.search(r"Root Cause \(first observed failure\):\n\[0\]:\n.*\n.*\n.*\n\s+exitcode\s+: 143", output), \
        output[-3000:]
    assert "src/sct/" not in output, "no traceback from the training processes (torchrun prints its own)"

    resume = _resume_command(output)
    assert resume[1:4] == ["--nproc_per_node", "2", "-m"]
    resumed = subprocess.run([resume[0], "--standalone", *resume[1:], f"train.max_steps={last + 2}"], cwd=ROOT,
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _steps(run_dir) == list(range(1, last + 3)), "the resumed run continues at the next step"


def test_a_repeated_signal_stops_at_once_unless_it_duplicates_the_first(monkeypatch):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite was started as a background job
    request = StopRequest()
    with request.catching(announce=False):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # forwarded by torchrun right after the terminal's
        assert request.signum == signal.SIGINT
        monkeypatch.setattr(stop, "DUPLICATE_WINDOW_S", 0.0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
    assert signal.getsignal(signal.SIGINT) == before, "the handlers are restored"
