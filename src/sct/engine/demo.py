"""``sct demo``: synthesise the motion dataset, train ``sct_tiny``, evaluate it multi-view, summarise.

The recipe is ``configs/demo.yaml``: a run config plus a ``synthetic`` section (arguments of
:func:`sct.data.synthetic.generate`). The data goes to ``<output>/data`` (reused when it is already
there), the run to ``<output>`` itself, the evaluation to ``<output>/eval_test_<views>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from sct.config import apply_override, config_from_dict
from sct.data.synthetic import generate
from sct.engine.checkpoint import atomic_write, model_from_checkpoint
from sct.engine.evaluate import evaluate
from sct.engine.train import train
from sct.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo recipe (default configs/demo.yaml)")
    parser.add_argument("--output", default="runs/demo", help="folder for data, run and plots (default runs/demo)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides, e.g. train.epochs=5 or synthetic.videos_per_class=20")


def run(args: argparse.Namespace) -> int:
    summary = demo(args.config, args.output, args.overrides)
    print(describe(summary), flush=True)
    return 0


def load_demo_config(path: str | Path, output: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """``(RunConfig, synthetic kwargs)`` of a demo recipe with ``output_dir``/``data.root`` under ``output``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"demo config {path} does not exist (pass --config)")
    raw = yaml.safe_load(path.read_text()) or {}
    for item in [f"output_dir={output}", f"data.root={Path(output) / 'data'}", *overrides]:
        apply_override(raw, item)
    synthetic = raw.pop("synthetic", None) or {}
    return config_from_dict(raw), synthetic


def demo(config: str | Path = DEFAULT_CONFIG, output: str | Path = "runs/demo",
         overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the whole loop; returns (and writes to ``<output>/demo.json``) the timings and accuracies."""
    cfg, synthetic = load_demo_config(config, output, overrides)
    output = Path(output)
    start = time.perf_counter()
    try:
        data_root = generate(cfg.data.root, **synthetic)
    except TypeError as err:
        raise ConfigError(f"synthetic section of {config}: {err}") from None
    data_seconds = time.perf_counter() - start
    if cfg.resume is None:
        # A demo run starts from scratch each time; its data set is kept and reused.
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
    run_dir = train(cfg)
    train_seconds = time.perf_counter() - start - data_seconds
    weights = run_dir / "model.safetensors"
    result = evaluate(weights, views=cfg.eval.views)
    eval_seconds = time.perf_counter() - start - data_seconds - train_seconds
    model, _ = model_from_checkpoint(weights)
    summary = {
        "total_seconds": time.perf_counter() - start,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "data": str(data_root),
        "classes": len((run_dir / "labels.txt").read_text().split()),
        "model": cfg.model.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": cfg.train.epochs,
        "views": result["views"],
        "top1": result["top1"],
        "top5": result["top5"],
        "topk": result["topk"],
        "clip_top1": result["clip_top1"],
        "num_videos": result["num_videos"],
        "num_failed": result["num_failed"],
        "bad_files": result["bad_files"],
        "run_dir": str(run_dir),
        "eval_dir": result["output_dir"],
    }
    text = json.dumps(summary, indent=2).encode()
    atomic_write(output / "demo.json", lambda f: f.write(text))
    return summary


def describe(s: dict[str, Any]) -> str:
    run_dir, eval_dir = Path(s["run_dir"]), Path(s["eval_dir"])
    return "\n".join([
        f"sct demo finished in {s['total_seconds'] / 60:.1f} min (data {s['data_seconds']:.0f}s, "
        f"training {s['train_seconds']:.0f}s, evaluation {s['eval_seconds']:.0f}s)",
        f"  data: {s['data']} ({s['classes']} classes)",
        f"  model: {s['model']} ({s['parameters'] / 1e6:.2f}M parameters), trained for {s['epochs']} epochs",
        f"  test: top-1 {s['top1']:.1f}%, top-{s['topk']} {s['top5']:.1f}% over {s['num_videos']} videos "
        f"({s['views']} views; clip top-1 {s['clip_top1']:.1f}%), {s['num_failed']} failed",
        f"  plots: {run_dir / 'curves.png'}, {eval_dir / 'confusion.png'}",
        f"  outputs: {run_dir / 'model.safetensors'}, {run_dir / 'metrics.jsonl'}, {eval_dir / 'eval.json'}, "
        f"{eval_dir / 'predictions.csv'}, {run_dir / 'demo.json'}",
    ])
