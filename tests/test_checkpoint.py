"""Checkpoint files: atomic writes, completeness, pruning, self-describing weights, clear errors."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import sct
from sct.engine import checkpoint as ckpt
from sct.engine.checkpoint import CheckpointPaths
from sct.errors import CheckpointError

SMALL = dict(num_classes=3, num_frames=4, img_size=32, embed_dim=16, clip_dim=32, clip_mlp_dim=64)


def _save(directory, step, model, state=None):
    paths = CheckpointPaths.for_step(directory, step)
    metadata = ckpt.model_metadata(model, "sct_tiny", list("abc"), "seed: 0\n")
    ckpt.save_checkpoint(paths, weights=model.state_dict(), metadata=metadata, state=state or {"global_step": step})
    return paths


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.bin"
    ckpt.atomic_write(target, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt  # e.g. the process is interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"], "no temporary file may be left behind"


def test_atomic_write_goes_through_a_temp_file_and_rename(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append((src, dst)), real_replace(src, dst)))
    ckpt.atomic_write(tmp_path / "x", lambda f: f.write(b"1"))
    (src, dst), = seen
    assert str(src).startswith(str(tmp_path / ".x.tmp")) and dst == tmp_path / "x"


def test_weights_are_safetensors_that_rebuild_the_model(tmp_path):
    model = sct.create_model("sct_tiny", **SMALL)
    paths = _save(tmp_path, 5, model, {"global_step": 5, "rng": torch.get_rng_state(), "nested": {"a": [1, 2.0]}})
    rebuilt, metadata = ckpt.model_from_checkpoint(paths.weights)
    assert metadata["model"] == "sct_tiny" and json.loads(metadata["classes"]) == ["a", "b", "c"]
    assert rebuilt.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    state = ckpt.load_state(paths.state)  # torch.load(weights_only=True)
    assert state["global_step"] == 5 and state["nested"] == {"a": [1, 2.0]}


def test_incomplete_checkpoints_are_ignored_and_old_ones_pruned(tmp_path):
    model = sct.create_model("sct_tiny", **SMALL)
    for step in (1, 2, 3):
        _save(tmp_path, step, model)
    # A crash after the weights but before the state file: step 4 is not complete.
    ckpt.save_weights(CheckpointPaths.for_step(tmp_path, 4).weights, model.state_dict(), {})
    assert ckpt.latest_checkpoint(tmp_path) == CheckpointPaths.for_step(tmp_path, 3)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [step for step, _ in ckpt.complete_checkpoints(tmp_path)] == [2, 3]
    assert not CheckpointPaths.for_step(tmp_path, 1).weights.exists()


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    small = sct.create_model("sct_tiny", **SMALL)
    paths = _save(tmp_path, 1, small)
    wider = sct.create_model("sct_tiny", **{**SMALL, "embed_dim": 32})
    weights, _ = ckpt.load_weights(paths.weights)
    with pytest.raises(CheckpointError, match=r"step_00000001\.safetensors.*wrong shape"):
        ckpt.load_into(wider, weights, paths.weights)


def test_foreign_or_broken_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="no sct metadata"):
        ckpt.model_from_checkpoint(foreign)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        ckpt.load_weights(broken)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_weights(tmp_path / "missing.safetensors")
