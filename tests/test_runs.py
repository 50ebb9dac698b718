"""``sct runs``: run folders found at any depth, with model, data, progress, best val top-1 and status."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from engine_support import synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.engine.runs import describe_run, find_runs
from sct.engine.train import train

HOUR_AGO = time.time() - 3600


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    data = synthetic_set(base)
    return train(tiny_config(data, base / "lab" / "finished", "train.checkpoint_every_steps=1"))


def _copy(run, dest, *, drop=(), age=HOUR_AGO):
    """A copy of the finished run with some files removed, its files dated ``age``."""
    shutil.copytree(run, dest)
    for name in drop:
        target = dest / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for path in dest.rglob("*"):
        os.utime(path, (age, age))
    return dest


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _lock(run, pid):
    (run / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "sct train"}))


def test_each_status_and_the_json_listing(finished, tmp_path, capsys):
    lab = tmp_path / "lab"
    runs = {
        "finished": _copy(finished, lab / "finished"),
        "killed": _copy(finished, lab / "group" / "killed", drop=["summary.json"]),
        "crashed": _copy(finished, lab / "crashed", drop=["summary.json", "checkpoints"]),
        "locked": _copy(finished, lab / "locked", drop=["summary.json"]),
        "stale_lock": _copy(finished, lab / "stale_lock", drop=["summary.json"]),
        "fresh": _copy(finished, lab / "fresh", drop=["summary.json"], age=time.time()),
        "diverged": _copy(finished, lab / "diverged", drop=["summary.json"]),
    }
    _lock(runs["locked"], os.getpid())
    _lock(runs["stale_lock"], _dead_pid())
    with open(runs["diverged"] / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"type": "diverged", "epoch": 1, "step": 7, "loss": float("nan")}) + "\n")
    os.utime(runs["diverged"] / "metrics.jsonl", (HOUR_AGO, HOUR_AGO))
    (lab / "finished" / "eval_test_2x3").mkdir()  # outputs inside a run are not runs
    (lab / "finished" / "eval_test_2x3" / "eval.json").write_text(json.dumps({"top1": 66.7, "views": "2x3"}))
    (lab / "notes").mkdir()

    assert find_runs(lab) == sorted(runs.values())
    expected = {"finished": "finished", "killed": "resumable", "crashed": "failed", "locked": "running",
                "stale_lock": "resumable", "fresh": "running", "diverged": "failed"}
    assert {name: describe_run(path).status for name, path in runs.items()} == expected
    assert "diverged at step 7" in describe_run(runs["diverged"]).detail
    assert describe_run(runs["killed"]).detail == "from checkpoints/step_00000006.safetensors"

    assert cli_main(["runs", str(lab), "--json"]) == 0
    listing = {os.path.basename(r["path"]): r for r in json.loads(capsys.readouterr().out)}
    assert {name: r["status"] for name, r in listing.items()} == expected
    row = listing["finished"]
    assert (row["model"], row["epoch"], row["epochs"], row["step"]) == ("sct_tiny", 2, 2, 6)
    vals = [json.loads(line)["val_top1"] for line in (finished / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "epoch"]
    assert row["best_val_top1"] == max(vals) and row["data"].endswith("synth6")
    assert row["evals"] == {"test_2x3": 66.7} and listing["killed"]["evals"] == {}
    assert next(iter(listing)) == "fresh", "newest first"


def test_table_and_filter(finished, tmp_path, capsys):
    _copy(finished, tmp_path / "a" / "done")
    _copy(finished, tmp_path / "b" / "stopped", drop=["summary.json"])
    assert cli_main(["runs", str(tmp_path), "--status", "resumable"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "model", "data", "epoch"]
    assert len(lines) == 2 and lines[1].startswith("b/stopped") and "2/2" in lines[1] and "resumable" in lines[1]


def test_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["runs", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such directory" in capsys.readouterr().err
    assert cli_main(["runs", str(tmp_path)]) == 0
    assert "no run folders under" in capsys.readouterr().out
