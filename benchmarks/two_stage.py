"""The paper's two-stage recipe in miniature: image pretraining of the frame pathway, then video fine-tuning.

1. ``sct synth --images``: the synthetic image set (18 shape x texture classes) at the demo's 32 px.
2. Pretrain ``sct_tiny_image`` on it (one run, ``--pretrain-seed``).
3. Fine-tune ``sct_tiny`` on the demo's motion set (``configs/demo.yaml``: its classes, clip length, model
   and optimiser) from those weights, and train the same model from scratch, with the same fine-tuning
   budget, for each of ``--seeds``; the two runs of a seed go side by side so that they share the
   machine's load.

Reported per run: validation top-1 after every epoch, the optimiser step at which it first reaches
``--target`` (90%), and test top-1 (``--views``). ``results.json`` in ``--work`` holds everything;
docs/training.md quotes it.

    python benchmarks/two_stage.py --work runs/two_stage [--seeds 0 1 2]
    python benchmarks/two_stage.py --work runs/two_stage --report-step 280   # runs stopped early: their
        # curves up to that step and test top-1 of the step's checkpoint -> results_step280.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import yaml

from sct.config import config_from_dict
from sct.data.synthetic import generate
from sct.data.synthetic_images import generate_images
from sct.engine.evaluate import evaluate
from sct.engine.metrics import read_metrics
from sct.engine.train import train

ROOT = Path(__file__).resolve().parents[1]


def pretrain_config(args, data: Path, out: Path) -> dict:
    return {
        "output_dir": str(out), "seed": args.pretrain_seed,
        "model": {"name": "sct_tiny_image", "chunk_size": 8},
        "data": {"root": str(data), "format": "imagefolder", "train": "train", "val": "val", "test": "test",
                 "crop_size": 32, "train_crop": "resized", "rrc_scale": [0.6, 1.0], "flip": True},
        "optim": {"name": "adamw", "lr": args.pretrain_lr, "weight_decay": 0.05, "warmup_epochs": 1,
                  "clip_grad": 1.0},
        "train": {"epochs": args.pretrain_epochs, "batch_size": 32, "num_workers": 1, "num_threads": 1,
                  "label_smoothing": 0.1, "log_every_steps": 20},
        "eval": {"views": "1x1", "num_workers": 0},
    }


def finetune_config(args, data: Path, out: Path, seed: int, pretrained: Path | None) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    raw.pop("synthetic")
    raw.update(output_dir=str(out), seed=seed)
    raw["model"]["pretrained"] = str(pretrained) if pretrained else None
    raw["data"]["root"] = str(data)
    raw["train"].update(epochs=args.epochs, num_threads=1)
    raw["eval"].update(views=args.views, num_workers=0)
    return raw


def run_one(raw: dict) -> dict:
    """Train one config to the end and evaluate it on the test split; ``{"curve", "test_top1", ...}``."""
    cfg = config_from_dict(raw)
    start = time.perf_counter()
    run_dir = train(cfg)
    seconds = time.perf_counter() - start
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = [(r["step"], r["val_top1"]) for r in records if r.get("type") == "epoch" and "val_top1" in r]
    test = evaluate(run_dir / "model.safetensors", views=raw["eval"]["views"], split="test", num_workers=0)
    return {"run": str(run_dir), "curve": curve, "test_top1": test["top1"], "train_seconds": seconds}


def report_at_step(work: Path, seeds: list[int], step: int, views: str, target: float) -> dict:
    """Curves up to ``step`` and test top-1 of each run's checkpoint at ``step`` (runs cut short)."""
    out = {}
    for seed in seeds:
        for arm in ("pretrained", "scratch"):
            run_dir = work / f"{arm}_seed{seed}"
            records = read_metrics(run_dir / "metrics.jsonl")
            curve = [(r["step"], r["val_top1"]) for r in records
                     if r.get("type") == "epoch" and "val_top1" in r and r["step"] <= step]
            checkpoint = run_dir / "checkpoints" / f"step_{step:08d}.safetensors"
            test = evaluate(checkpoint, views=views, split="test", num_workers=0,
                            output_dir=run_dir / f"eval_test_{views}_step{step}")
            out.setdefault(f"seed{seed}", {})[arm] = {"curve": curve, "test_top1": test["top1"],
                                                     "steps_to_target": first_step(curve, target)}
    (work / f"results_step{step}.json").write_text(json.dumps(out, indent=2))
    return out


def first_step(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, top1 in curve if top1 >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/two_stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12, help="fine-tuning budget, the same for both starts")
    parser.add_argument("--clips-per-class", type=int, default=200)
    parser.add_argument("--images-per-class", type=int, default=300)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=90.0)
    parser.add_argument("--views", default="1x1")
    parser.add_argument("--report-step", type=int, default=None)
    args = parser.parse_args()
    work = Path(args.work)
    if args.report_step is not None:
        print(json.dumps(report_at_step(work, args.seeds, args.report_step, args.views, args.target), indent=2))
        return
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["settings"] = {k: v for k, v in vars(args).items() if k != "seeds"}

    images = generate_images(work / "images", images_per_class=args.images_per_class, size=32, seed=0)
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["synthetic"]
    videos = generate(work / "videos", **{**demo, "videos_per_class": args.clips_per_class}, workers=1)
    if "pretrain" not in results:
        results["pretrain"] = run_one(pretrain_config(args, images, work / "pretrain"))
        results_path.write_text(json.dumps(results, indent=2))
    weights = Path(results["pretrain"]["run"]) / "model.safetensors"
    for seed in args.seeds:
        key = f"seed{seed}"
        if key in results:
            continue
        jobs = [finetune_config(args, videos, work / f"{arm}_seed{seed}", seed, w)
                for arm, w in (("pretrained", weights), ("scratch", None))]
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pretrained, scratch = pool.map(run_one, jobs)
        for run in (pretrained, scratch):
            run["steps_to_target"] = first_step(run["curve"], args.target)
        results[key] = {"pretrained": pretrained, "scratch": scratch}
        # Other invocations (other --seeds, run side by side) write their seeds into the same file.
        on_disk = json.loads(results_path.read_text())
        results_path.write_text(json.dumps({**on_disk, key: results[key]}, indent=2))
        print(json.dumps({key: {arm: {k: v for k, v in r.items() if k != "curve"} for arm, r in results[key].items()}}),
              flush=True)


if __name__ == "__main__":
    main()
