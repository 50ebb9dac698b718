"""The paper's two-stage recipe in miniature: image pretraining of the frame pathway, then video fine-tuning.

1. ``sct synth --images``: the synthetic image set (18 shape x texture classes) at the demo's 32 px.
2. Pretrain ``sct_tiny_image`` on it (one run, ``--pretrain-seed``).
3. Fine-tune ``sct_tiny`` on the demo's motion set with the demo's recipe (``configs/demo.yaml``: its data,
   classes, clip length, model and optimiser) from those weights, and train the demo from scratch, both
   for ``--epochs`` (the fine-tuning budget both starts share), for each of ``--seeds``.

At most ``--jobs`` runs go at once (one torch thread each); a scratch run does not wait for the
pretraining. Each finished run leaves ``two_stage.json`` in its folder and is not run again; an
interrupted one resumes from its last checkpoint (``resume=auto``), so a rerun picks up where it stopped.

Reported per run: validation top-1 after every epoch, the optimiser step at which it first reaches
``--target`` (90%), and test top-1 with the demo's views. ``results.json`` in ``--work`` holds everything;
the ``two_stage`` section of docs/training.md is written from it.

    python benchmarks/two_stage.py --work runs/two_stage [--seeds 0 1 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import yaml

from sct.analysis.report import markdown_table, update_doc_section
from sct.config import config_from_dict
from sct.data.synthetic import generate
from sct.data.synthetic_images import generate_images
from sct.engine.evaluate import evaluate
from sct.engine.metrics import read_metrics
from sct.engine.train import train

ROOT = Path(__file__).resolve().parents[1]

RESULT = "two_stage.json"


def pretrain_config(args, data: Path, out: Path) -> dict:
    return {
        "output_dir": str(out), "seed": args.pretrain_seed, "resume": "auto",
        "model": {"name": "sct_tiny_image", "chunk_size": 8},
        "data": {"root": str(data), "format": "imagefolder", "train": "train", "val": "val", "test": "test",
                 "crop_size": 32, "train_crop": "resized", "rrc_scale": [0.6, 1.0], "flip": True},
        "optim": {"name": "adamw", "lr": args.pretrain_lr, "weight_decay": 0.05, "warmup_epochs": 1,
                  "clip_grad": 1.0},
        "train": {"epochs": args.pretrain_epochs, "batch_size": 32, "num_workers": 0, "num_threads": 1,
                  "label_smoothing": 0.1, "log_every_steps": 50},
        "eval": {"views": "1x1", "num_workers": 0},
    }


def finetune_config(args, data: Path, out: Path, seed: int, pretrained: Path | None) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    raw.pop("synthetic")
    raw.update(output_dir=str(out), seed=seed, resume="auto")
    raw["model"]["pretrained"] = str(pretrained) if pretrained else None
    raw["data"]["root"] = str(data)
    raw["train"].update(epochs=args.epochs, num_threads=1)
    raw["eval"].update(num_workers=0, **({"views": args.views} if args.views else {}))
    return raw


def run_one(raw: dict) -> dict:
    """Train one config to the end, evaluate it on the test split, write and return its ``two_stage.json``."""
    cfg = config_from_dict(raw)
    start = time.perf_counter()
    run_dir = train(cfg)
    seconds = time.perf_counter() - start
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = [(r["step"], r["val_top1"]) for r in records if r.get("type") == "epoch" and "val_top1" in r]
    test = evaluate(run_dir / "model.safetensors", split="test", num_workers=0)
    result = {"run": str(run_dir), "curve": curve, "test_top1": test["top1"], "views": raw["eval"]["views"],
              "train_seconds": seconds, "steps": curve[-1][0] if curve else 0}
    (run_dir / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    return result


def finished(run_dir: Path) -> dict | None:
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def first_step(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, top1 in curve if top1 >= target), None)


def run_all(args, work: Path, images: Path, videos: Path) -> dict:
    """Every run (pretraining, then the starts of each seed), ``args.jobs`` at a time; ``{name: result}``."""
    pretrain_dir = work / "pretrain"
    pending = [("pretrain", pretrain_config(args, images, pretrain_dir))] if "pretrained" in args.arms else []
    for seed in args.seeds:
        for arm in args.arms:
            weights = pretrain_dir / "model.safetensors" if arm == "pretrained" else None
            name = f"{arm}_seed{seed}"
            pending.append((name, finetune_config(args, videos, work / name, seed, weights)))
    results = {name: done for name, raw in pending if (done := finished(Path(raw["output_dir"])))}
    pending = [(name, raw) for name, raw in pending if name not in results]
    running: dict[cf.Future, str] = {}
    with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            # A fine-tune from the image weights can start only once the pretraining has finished.
            ready = [job for job in pending if job[0] == "pretrain" or not job[0].startswith("pretrained")
                     or "pretrain" in results]
            for job in ready[:args.jobs - len(running)]:
                pending.remove(job)
                running[pool.submit(run_one, job[1])] = job[0]
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                results[name] = future.result()
                print(json.dumps({name: {k: v for k, v in results[name].items() if k != "curve"}}), flush=True)
    return results


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def summarise(args, results: dict) -> dict:
    """Per seed and arm: steps to the target (``None``: not within the budget), test top-1, the curve."""
    out: dict = {"settings": {k: v for k, v in vars(args).items()}, "pretrain": results["pretrain"], "seeds": {}}
    for seed in args.seeds:
        for arm in ("pretrained", "scratch"):
            run = results[f"{arm}_seed{seed}"]
            reached = first_step(run["curve"], args.target)
            out["seeds"].setdefault(str(seed), {})[arm] = {**run, "steps_to_target": reached}
    return out


def markdown(args, summary: dict) -> str:
    budget = max(run["steps"] for arms in summary["seeds"].values() for run in arms.values())
    rows, steps, tests = [], {"pretrained": [], "scratch": []}, {"pretrained": [], "scratch": []}
    for seed, arms in summary["seeds"].items():
        for arm in ("pretrained", "scratch"):
            run = arms[arm]
            reached = run["steps_to_target"]
            steps[arm].append(reached if reached is not None else float("inf"))
            tests[arm].append(run["test_top1"])
            rows.append([seed, arm, f"{reached}" if reached is not None else f"> {budget}",
                         f"{max(top1 for _, top1 in run['curve']):.1f}", f"{run['curve'][-1][1]:.1f}",
                         f"{run['test_top1']:.1f}", f"{run['train_seconds'] / 60:.0f}"])
    for arm in ("pretrained", "scratch"):
        finite = [s for s in steps[arm] if s != float("inf")]
        reached = mean_std(finite) if len(finite) == len(steps[arm]) else (
            f"> {budget} in {len(steps[arm]) - len(finite)} of {len(steps[arm])} seeds")
        rows.append(["mean +- std", arm, reached, "", "", mean_std(tests[arm]), ""])
    ratios = [ratio(p, s, budget) for p, s in zip(steps["pretrained"], steps["scratch"])]
    pre = summary["pretrain"]
    views = next(iter(summary["seeds"].values()))["scratch"]["views"]
    return "\n\n".join([
        f"`python benchmarks/two_stage.py --work {args.work} --seeds {' '.join(map(str, args.seeds))} "
        f"--epochs {args.epochs} --pretrain-epochs {args.pretrain_epochs} --pretrain-lr {args.pretrain_lr} "
        f"--images-per-class {args.images_per_class}"
        + (f" --section {args.section}" if args.section != "two_stage" else "")
        + f"` (results: `{args.work}/results.json`).",
        f"Stage 1: `sct_tiny_image` on {args.images_per_class} images per class, {args.pretrain_epochs} epochs "
        f"({pre['steps']} steps, AdamW lr {args.pretrain_lr}): val top-1 {pre['curve'][-1][1]:.1f}%, test top-1 "
        f"{pre['test_top1']:.1f}% (18 classes, chance 5.6%), {pre['train_seconds'] / 60:.0f} min. Stage 2: "
        f"`configs/demo.yaml` for {args.epochs} epochs ({budget} optimiser steps, the budget of both starts), "
        f"validation after every epoch (140 steps); test top-1 with {views} views.",
        markdown_table(["seed", "start", f"first step with val >= {args.target:.0f}%", "best val", "final val",
                        "test top-1", "minutes"], rows),
        "Steps to the target, image-pretrained / scratch, per seed: " + ", ".join(ratios)
        + " (aim: at most 0.5; `<`: scratch did not reach the target within the budget, so its steps are"
        " counted as the budget). Minutes: training time with one thread on the machine as it was loaded.",
    ])


def ratio(pretrained: float, scratch: float, budget: int) -> str:
    """Steps to the target, pretrained / scratch; an arm that never got there counts as the budget."""
    if pretrained == float("inf"):
        return "neither reached it" if scratch == float("inf") else f"> {budget / scratch:.2f}"
    return f"< {pretrained / budget:.2f}" if scratch == float("inf") else f"{pretrained / scratch:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/two_stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="fine-tuning budget, the same for both starts")
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=90.0)
    parser.add_argument("--views", default=None, help="test views (default: the demo's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--arms", nargs="+", choices=["scratch", "pretrained"], default=["scratch", "pretrained"],
                        help="run only these starts (the report needs both)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "training.md"))
    parser.add_argument("--section", default="two_stage", help="the section of --doc the table replaces")
    args = parser.parse_args()
    work = Path(args.work)
    images = generate_images(work / "images", images_per_class=args.images_per_class, size=32, seed=0)
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["synthetic"]
    videos = generate(work / "videos", **demo, workers=1)
    results = run_all(args, work, images, videos)
    if set(args.arms) != {"scratch", "pretrained"}:
        return
    summary = summarise(args, results)
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    update_doc_section(args.doc, args.section, markdown(args, summary))
    print(markdown(args, summary))


if __name__ == "__main__":
    main()
