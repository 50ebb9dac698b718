"""The image stage end to end: train an image model on shards, evaluate and predict with it, hand it to video."""

from __future__ import annotations

import json

import pytest

from engine_support import run_sct, synthetic_set, tiny_config
from sct.config import load_config
from sct.data.synthetic_images import IMAGE_CLASSES, generate_images
from sct.engine.metrics import read_metrics
from sct.engine.train import train
from sct.errors import ConfigError

SMALL_IMAGE_MODEL = ["model.name=sct_tiny_image", "model.embed_dim=16", "model.heads=[1, 1, 1, 1]"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return generate_images(tmp_path_factory.mktemp("img"), images_per_class=10, size=24, shard_size=20,
                           classes=IMAGE_CLASSES[:4])


def image_overrides(root, out, *extra):
    return [*SMALL_IMAGE_MODEL, f"data.root={root}", f"output_dir={out}", "data.crop_size=16", "train.epochs=1",
            "train.batch_size=4", "train.num_workers=0", "eval.num_workers=0", "optim.name=adamw", "optim.lr=0.001",
            "data.test=test", "data.train=train", "data.val=val", "data.format=imagefolder", *extra]


def test_image_model_trains_on_shards_with_the_deit_recipe_then_evaluates_and_predicts(images, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, image_overrides(
        images, out, "data.format=shards", "data.train=shards/train-{000000..000001}.tar",
        "data.val=shards/val-000000.tar", "data.train_crop=resized", "data.randaugment=[2, 9]",
        "data.random_erasing=0.25", "train.mixup=0.8", "train.cutmix=1.0", "train.num_workers=2",
        "train.ema_decay=0.9"))
    train(cfg)
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["type"] == "step"]
    # 28 samples over 2 workers: 14 each, 3 full batches of 4 per worker.
    assert len(steps) == 6 and "val_top1" in records[-1]
    result = run_sct("eval", "--checkpoint", str(out / "model.safetensors"), "--views", "1x10", "--split", "test",
                     "--num-workers", "0", "data.format=imagefolder", "data.test=test")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((out / "eval_test_1x10" / "eval.json").read_text())
    assert evaluation["num_videos"] == 4 and evaluation["num_clips"] == 40  # one test image per class, 10 crops
    picture = sorted((images / "test" / IMAGE_CLASSES[0]).iterdir())[0]
    result = run_sct("predict", str(picture), "--checkpoint", str(out / "model.safetensors"), "--json", "--topk", "2")
    assert result.returncode == 0, result.stderr
    [prediction] = json.loads(result.stdout)
    assert len(prediction["predictions"]) == 2 and prediction["predictions"][0]["label"] in IMAGE_CLASSES[:4]


def test_data_check_lists_a_bad_image(images, tmp_path):
    (images / "val" / IMAGE_CLASSES[1] / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    try:
        result = run_sct("data", "check", str(images / "val"))
    finally:
        (images / "val" / IMAGE_CLASSES[1] / "broken.jpg").unlink()
    assert result.returncode == 1 and "BAD" in result.stdout and "broken.jpg" in result.stdout
    result = run_sct("data", "check", str(images / "shards" / "val-000000.tar"), "--classes",
                     str(images / "classes.txt"))
    assert result.returncode == 0 and "8 of 8 images ok" in result.stdout


def test_models_and_data_must_agree_on_images_or_clips(images, tmp_path):
    cfg = load_config(None, image_overrides(images, tmp_path / "a", "model.name=sct_tiny"))
    with pytest.raises(ConfigError, match="takes clips but data.format=imagefolder gives images"):
        train(cfg)


def test_image_checkpoint_starts_video_training_and_mixup_changes_the_loss(images, tmp_path, capsys):
    image_run = tmp_path / "image"
    train(load_config(None, image_overrides(images, image_run, "model.chunk_size=4", "train.max_steps=2")))
    videos = synthetic_set(tmp_path)
    video_model = ["model.embed_dim=16", "model.heads=[1, 1, 1, 1]", "model.chunk_size=4", "train.max_steps=2",
                   "train.eval_every_epochs=0"]
    runs = {}
    for name, extra in (("pretrained", [f"model.pretrained={image_run / 'model.safetensors'}"]),
                        ("mixup", ["train.mixup=0.8", "train.cutmix=1.0"]), ("plain", [])):
        cfg = tiny_config(videos, tmp_path / name, *video_model, *extra)
        run_dir = train(cfg)
        runs[name] = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "step"]
    assert runs["mixup"][0] != runs["plain"][0] and runs["pretrained"][0] != runs["plain"][0]
    report = capsys.readouterr().out
    assert "model.safetensors: loaded" in report and "new in this model" in report and "unused" in report
