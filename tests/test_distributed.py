"""Deterministic sharding, and 2 processes under torchrun (gloo, CPU) against 1 process."""

import json
import shutil
import subprocess

import pytest
import torch

from engine_support import ROOT, VENV_BIN, run_overrides, sct_command, subprocess_env, synthetic_set
from sct.engine.distributed import TrainBatchSampler, accumulation_steps, epoch_order, shard_indices
from sct.engine.metrics import read_metrics
from sct.errors import ConfigError


def test_each_step_uses_the_same_samples_whatever_the_number_of_processes():
    single = list(TrainBatchSampler(22, batch_size=8, accum_steps=2, seed=1, epoch=3))
    ranks = [list(TrainBatchSampler(22, 8, 1, seed=1, epoch=3, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 4 and all(len(b) == 4 for b in single), "22 items -> 2 full steps of 8, 2 micro-batches"
    for step in range(2):
        assert sorted(single[2 * step] + single[2 * step + 1]) == sorted(ranks[0][step] + ranks[1][step])
    order = epoch_order(22, seed=1, epoch=3).tolist()
    assert single[0] + single[1] == order[:8]
    assert epoch_order(22, 1, 4).tolist() != order, "each epoch has its own order"


def test_sampler_resumes_mid_epoch_where_it_stopped():
    full = list(TrainBatchSampler(40, 4, 1, seed=0, epoch=2))
    assert list(TrainBatchSampler(40, 4, 1, seed=0, epoch=2, start_step=7)) == full[7:]


def test_evaluation_shards_cover_every_item_once():
    shards = [shard_indices(11, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


def test_uneven_batches_are_config_errors():
    assert accumulation_steps(32, 4, 2) == 4
    with pytest.raises(ConfigError, match="train.batch_size=30"):
        accumulation_steps(30, None, 4)
    with pytest.raises(ConfigError, match="train.micro_batch_size=5"):
        accumulation_steps(32, 5, 2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


def _torchrun(*args):
    return [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "sct", *args]


def _run(command):
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_processes_follow_the_single_process_trajectory_and_evaluate_without_duplicates(data, tmp_path):
    # Dense global attention: LSH bucketing is discontinuous, so the last-bit differences between a batch of 4
    # and two batches of 2 can flip a bucket and move the loss by far more than rounding.
    settings = ("train.epochs=1", "optim.lr=0.05", "train.val_views=1x3", "model.global_kind=dense")
    _run(sct_command("train", *run_overrides(data, tmp_path / "one", *settings)))
    _run(_torchrun("train", *run_overrides(data, tmp_path / "two", *settings)))
    one, two = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "two"))
    for kind, key in (("step", "loss"), ("epoch", "val_top1")):
        expected = [r[key] for r in one if r["type"] == kind]
        got = [r[key] for r in two if r["type"] == kind]
        assert len(got) == len(expected) > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    checkpoint = tmp_path / "two" / "model.safetensors"
    _run(sct_command("eval", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "eval1")))
    _run(_torchrun("eval", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "eval2")))
    single, multi = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("eval1", "eval2"))
    assert multi["num_videos"] == single["num_videos"] == 3
    assert multi["num_clips"] == single["num_clips"] == 3 * 6, "every clip counted exactly once"
    for key in ("top1", "top5", "clip_top1"):
        assert multi[key] == pytest.approx(single[key])


def _damaged_copy(data, folder, split, count):
    """A copy of ``data`` whose first ``count`` videos of ``split`` are damaged; returns (root, damaged paths)."""
    shutil.copytree(data, folder)
    rows = (folder / f"{split}.csv").read_text().splitlines()[1:]
    broken = [folder / row.split(",")[0] for row in rows[:count]]
    for path in broken:
        path.write_bytes(path.read_bytes()[:200])  # truncated inside the header: unreadable
    return folder, [str(path) for path in broken]


def _fails_everywhere_alike(done, message):
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert output.count(message) == 2, f"both processes must stop with {message!r}:\n{output[-3000:]}"
    # torchrun prints its own traceback when a child fails; none may come from our processes
    assert "Connection closed" not in output and f'File "{ROOT / "src"}' not in output, output[-3000:]


def test_bad_file_limit_is_global_over_processes(data, tmp_path):
    # 2 of 12 training videos bad = 16.7% > 12%, while each process alone may see only 1 (8.3%)
    root, broken = _damaged_copy(data, tmp_path / "data", "train", 2)
    settings = ("train.epochs=1", "train.eval_every_epochs=0", "data.max_bad_fraction=0.12")
    done = subprocess.run(_torchrun("train", *run_overrides(root, tmp_path / "run", *settings)), cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    _fails_everywhere_alike(done, "sct train: error: 2 of 12 videos are bad (16.7% > max_bad_fraction 12.0%)")
    assert all(path in done.stderr for path in broken)


def test_evaluation_counts_bad_files_over_all_processes(data, tmp_path):
    root, broken = _damaged_copy(data, tmp_path / "data", "test", 2)
    _run(sct_command("train", *run_overrides(data, tmp_path / "run", "train.epochs=1", "train.eval_every_epochs=0")))
    checkpoint = str(tmp_path / "run" / "model.safetensors")
    # 2 of 3 test videos bad; each process scores the views of about half of them
    done = subprocess.run(_torchrun("eval", "--checkpoint", checkpoint, f"data.root={root}",
                                    "data.max_bad_fraction=0.5"),
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    _fails_everywhere_alike(done, "sct eval: error: 2 of 3 videos are bad (66.7% > max_bad_fraction 50.0%)")

    _run(_torchrun("eval", "--checkpoint", checkpoint, "--output", str(tmp_path / "eval"), f"data.root={root}",
                   "data.max_bad_fraction=1"))
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert sorted(path for path, _ in result["bad_files"]) == sorted(broken)
    assert (result["num_videos"], result["num_failed"]) == (3, 2)


def test_left_out_clips_give_the_single_process_steps(data, tmp_path):
    # Train rows 0 and 1 are bad and never replaced; with seed 0 they come at positions 1 and 9 of the
    # epoch's order, so at steps 0 and 4 process 1 has no clip at all and takes part with a zero weight.
    assert epoch_order(12, seed=0, epoch=0).tolist().index(0) // 2 != epoch_order(12, 0, 0).tolist().index(1) // 2
    root, _ = _damaged_copy(data, tmp_path / "data", "train", 2)
    settings = ("train.epochs=1", "train.eval_every_epochs=0", "train.batch_size=2", "data.max_replacements=0",
                "data.max_bad_fraction=0.2", "model.global_kind=dense", "optim.lr=0.05", "optim.warmup_epochs=0")
    _run(sct_command("train", *run_overrides(root, tmp_path / "one", *settings)))
    _run(_torchrun("train", *run_overrides(root, tmp_path / "two", *settings)))
    one, two = ([(r["loss"], r["grad_norm"]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                 if r["type"] == "step"] for name in ("one", "two"))
    assert len(one) == len(two) == 6
    torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)  # the gradient norm is taken before clipping
    for name in ("one", "two"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["dropped_clips"] == 2
