"""The image stage end to end: train an image model on shards, evaluate and predict with it, hand it to video."""

from __future__ import annotations

import json
import re

import pytest

import sct
from engine_support import run_sct, synthetic_set, tiny_config, write_shard
from sct.config import load_config
from sct.data.synthetic_images import IMAGE_CLASSES, generate_images
from sct.engine.metrics import read_metrics
from sct.engine.train import train
from sct.errors import AnnotationError, CheckpointError, ConfigError
from sct.models.weights import save_weights

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


def test_bad_image_inputs_are_errors_naming_the_file_and_leave_the_run_folder_as_it_was(images, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, image_overrides(images, out, "model.chunk_size=4", "train.max_steps=2")))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    classes = tmp_path / "classes_plus_one.txt"
    classes.write_text((images / "classes.txt").read_text() + "zebra_striped\n")
    cls = (images / "classes.txt").read_text().splitlines()
    png = (images / "train" / cls[0]).glob("*.png").__next__().read_bytes()
    empty = write_shard(tmp_path / "empty.tar", [])
    out_of_range = write_shard(tmp_path / "range.tar", [("000.png", png), ("000.cls", b"9\n")])
    wide = tmp_path / "wide" / "model.safetensors"
    save_weights(sct.create_model("sct_tiny_image", num_classes=4, embed_dim=48), wide)
    cases = [
        (AnnotationError, images / "train", "no folder for class(es) zebra_striped", [f"data.classes={classes}"]),
        (AnnotationError, empty, "empty shard", ["data.format=shards", f"data.train={empty}"]),
        (AnnotationError, out_of_range, "label 9 outside 0..3", ["data.format=shards", f"data.train={out_of_range}"]),
        (CheckpointError, wide, "shape mismatch", [f"model.pretrained={wide}"]),
    ]
    for error, culprit, message, extra in cases:
        # Resuming the finished run on broken inputs: the error must come before anything in it is touched.
        cfg = load_config(None, image_overrides(images, out, "model.chunk_size=4", "train.max_steps=4",
                                                "resume=auto", *extra))
        with pytest.raises(error, match=re.escape(message)) as err:
            train(cfg)
        assert str(culprit) in str(err.value)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, f"{message}: run folder changed"
