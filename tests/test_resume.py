"""Resuming from damaged checkpoints: resume=auto falls back to the previous complete one; a state file that
is not a pickle, has the wrong structure or carries code is a clear error (weights_only loading)."""

import logging
import pickle

import pytest
import torch
from safetensors.torch import load_file

from engine_support import synthetic_set, tiny_config
from sct.engine.checkpoint import CheckpointPaths, complete_checkpoints, load_state
from sct.engine.train import train
from sct.errors import CheckpointError

SETTINGS = ("train.checkpoint_every_steps=1", "train.keep_checkpoints=3", "train.eval_every_epochs=0",
            "model.drop_rate=0.3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def _run(data, run_dir, *extra):
    return train(tiny_config(data, run_dir, *SETTINGS, *extra))


def test_truncated_latest_state_falls_back_to_the_previous_checkpoint_and_resumes_exactly(data, tmp_path, caplog):
    reference = _run(data, tmp_path / "reference", "train.max_steps=4")
    run_dir = _run(data, tmp_path / "run", "train.max_steps=3")
    latest = CheckpointPaths.for_step(run_dir / "checkpoints", 3)
    latest.state.write_bytes(latest.state.read_bytes()[:100])  # the disk filled up, or a copy was cut short

    with caplog.at_level(logging.WARNING):
        _run(data, run_dir, "train.max_steps=4", "resume=auto")
    assert "skipping a damaged checkpoint" in caplog.text and "step_00000003.state.pt" in caplog.text
    assert (latest.state.parent / "step_00000003.state.pt.damaged").is_file(), "set aside, not deleted"
    assert [step for step, _ in complete_checkpoints(run_dir / "checkpoints")] == [2, 3, 4]
    expected, got = load_file(reference / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed from step 2, it repeats steps 3-4"


def test_truncated_latest_weights_fall_back_too(data, tmp_path):
    run_dir = _run(data, tmp_path / "run", "train.max_steps=2")
    weights = CheckpointPaths.for_step(run_dir / "checkpoints", 2).weights
    weights.write_bytes(weights.read_bytes()[:-7])
    _run(data, run_dir, "train.max_steps=3", "resume=auto")
    assert [step for step, _ in complete_checkpoints(run_dir / "checkpoints")] == [1, 2, 3]


def test_when_no_checkpoint_reads_back_the_error_lists_each(data, tmp_path):
    run_dir = _run(data, tmp_path / "run", "train.max_steps=2")
    for _, paths in complete_checkpoints(run_dir / "checkpoints"):
        paths.state.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be read:\n.*step_00000002.*\n.*step_00000001"):
        _run(data, run_dir, "train.max_steps=3", "resume=auto")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("content, message", [
    (b"this is not a pickle", "cannot be loaded"),
    ({"epoch": 0, "global_step": 1}, "has no 'step_in_epoch' entry"),
    ({"epoch": "zero", "step_in_epoch": 0, "global_step": 1, "batch_size": 4, "optimizer": {}, "schedule": {},
      "scaler": None, "epoch_totals": [], "bad_files": []}, "'epoch' is a str"),
    ([1, 2, 3], "holds a list, not a dict"),
])
def test_a_state_file_named_explicitly_that_is_not_a_valid_state_is_a_clear_error(data, tmp_path, content, message):
    run_dir = _run(data, tmp_path / "run", "train.max_steps=1")
    paths = CheckpointPaths.for_step(run_dir / "checkpoints", 1)
    if isinstance(content, bytes):
        paths.state.write_bytes(content)
    else:
        torch.save(content, paths.state)
    with pytest.raises(CheckpointError, match=rf"training state {paths.state}.*{message}"):
        _run(data, tmp_path / "new", f"resume={paths.weights}")


def test_a_state_file_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    state = tmp_path / "step_00000001.state.pt"
    state.write_bytes(pickle.dumps({"epoch": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_state(state)
    assert not marker.exists()


def test_an_optimiser_state_of_another_shape_is_a_clear_error(data, tmp_path):
    run_dir = _run(data, tmp_path / "run", "train.max_steps=1")
    paths = CheckpointPaths.for_step(run_dir / "checkpoints", 1)
    state = load_state(paths.state)
    state["optimizer"] = {"not": "an optimiser state"}
    torch.save(state, paths.state)
    with pytest.raises(CheckpointError, match=r"does not fit this run's optimiser"):
        _run(data, tmp_path / "new", f"resume={paths.weights}")
