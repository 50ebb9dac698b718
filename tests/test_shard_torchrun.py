"""Tar shards under torchrun: 2 processes x 2 loader workers read every sample once per epoch, and train."""

from __future__ import annotations

import json
import subprocess

import pytest

from engine_support import ROOT, VENV_BIN, subprocess_env
from sct.data.shards import index_shards
from sct.data.synthetic_images import IMAGE_CLASSES, generate_images
from sct.engine.metrics import read_metrics

TRAIN = "shards/train-{000000..000005}.tar"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    # 4 classes x 14 train images = 56 samples in 6 shards of up to 10.
    return generate_images(tmp_path_factory.mktemp("img"), images_per_class=20, size=16, shard_size=10,
                           classes=IMAGE_CLASSES[:4])


def shard_overrides(root, out):
    # batch 4 over 2 processes: micro-batches of 2; 56 samples / (2 ranks x 2 workers) = 14 = 7 micro-batches each.
    return ["model.name=sct_tiny_image", "model.embed_dim=16", "model.heads=[1, 1, 1, 1]", f"data.root={root}",
            f"output_dir={out}", "data.format=shards", f"data.train={TRAIN}", "data.val=shards/val-000000.tar",
            "data.crop_size=16", "data.shuffle_buffer=5", "train.epochs=2", "train.batch_size=4",
            "train.num_workers=2", "eval.num_workers=0", "optim.name=adamw", "optim.lr=0.001"]


def torchrun(*args):
    command = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_each_sample_is_read_once_per_epoch_across_ranks_and_workers_and_epochs_reshuffle(images, tmp_path):
    torchrun(str(ROOT / "tests" / "shard_loader_probe.py"), str(tmp_path), *shard_overrides(images, tmp_path / "run"))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    labels = [m.label for shard in index_shards(TRAIN, images, 4) for m in shard]
    assert len(labels) == 56
    for epoch in ("0", "1"):
        pairs = [tuple(p) for rank in ranks for p in rank[epoch]]
        ids = sorted(i for i, _ in pairs)
        assert ids == list(range(56)), f"epoch {epoch}: every sample exactly once over both processes"
        assert all(labels[i] == label for i, label in pairs), "each id is the sample whose label came with it"
    for rank in ranks:
        assert [i for i, _ in rank["0"]] != [i for i, _ in rank["1"]], "each epoch has its own order"
    assert {i for i, _ in ranks[0]["0"]} != {i for i, _ in ranks[0]["1"]}, "the shard order moves samples between ranks"


def test_sct_train_on_image_shards_runs_under_torchrun(images, tmp_path):
    out = tmp_path / "run"
    torchrun("-m", "sct", "train", *shard_overrides(images, out))
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    # A step takes one micro-batch of 2 from each process: 56 / 4 = 14 steps per epoch.
    assert len(steps) == 28 and len(epochs) == 2 and all("val_top1" in r for r in epochs)
    assert (out / "model.safetensors").is_file()
