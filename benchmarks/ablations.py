"""The papers' ablations in miniature: sct_tiny-sized models on the synthetic motion dataset.

Each experiment is a model name plus config overrides (every variant is a config value); each is
trained with ``sct.engine.train.train`` and tested with ``sct.engine.evaluate.evaluate`` for several
seeds, and the tables report mean +- std of test top-1 beside the papers' numbers. The synthetic
classes come in time-reversed pairs (a motion and its reverse), so a model without temporal order
cannot beat pair-level guessing: it is a small but real test of temporal modelling.

    .venv/bin/python benchmarks/ablations.py            # everything, 3 seeds (long on 2 shared cores)
    .venv/bin/python benchmarks/ablations.py --quick    # 1 seed, 2 epochs, fewer videos: minutes
    .venv/bin/python benchmarks/ablations.py --only table5,table8 --seeds 3

Finished runs are cached in ``<work>/results.jsonl`` (keyed by experiment, seed, settings and the
experiment's revision: see ``REVISIONS``), so an interrupted run resumes and reruns only rebuild the tables.
Writes the marked ``ablations`` section of ``docs/ablations.md`` (the hand-written reading around it is kept)
and ``docs/ablations.json`` (``--quick`` writes under the work folder instead, unless ``--doc`` is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from sct.analysis.report import update_doc_section
from sct.config import load_config
from sct.data.synthetic import DEFAULT_CLASSES, generate
from sct.engine.evaluate import evaluate
from sct.engine.train import train

ROOT = Path(__file__).resolve().parents[1]

# A ViT small enough for this machine: 64 wide, 4 layers, 4 heads, 8x8 patches (16 tokens at 32 px); like
# sct_tiny it starts from the width-scaled xavier init (timm's std 0.02 leaves it at chance for long).
TINY_VIT = {"dim": 64, "depth": 4, "heads": 4, "patch_size": 8, "weight_init": "xavier"}
# The demo's pairs first; the rotating pair last (the demo leaves it out: too fine at 32 px).
CLASS_ORDER = tuple(c for c in DEFAULT_CLASSES if not c.startswith("rotate")) + tuple(
    c for c in DEFAULT_CLASSES if c.startswith("rotate"))
# sct_tiny as the demo runs it at 32 px: one 8 x 8 ViLT chunk per frame.
TINY_SCT = {"chunk_size": 8}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """``revision``: how many code changes that move this experiment's result it has been rerun after (see
    ``REVISIONS``); it is part of the cache id, so a bump retrains the experiment and leaves the rest cached."""

    key: str
    model: str
    overrides: dict
    label: str
    revision: int = 0


# The cache is keyed by the protocol (``Settings.fingerprint``), which cannot see a change to the code a run
# trains: a change that moves a result bumps the revision of the experiments it moves, with its reason here,
# and the tables name the revision each row was measured at.
REVISIONS = {
    1: "the ViT's temporal embedding out of weight decay (each model declares `no_weight_decay()`); "
       "`xvit_b16` with X-ViT's Dropout(0.5) on every frame feature before its head (`frame_drop_rate`)",
}
VIT_REVISION = 1

E = Experiment
EXPERIMENTS = {e.key: e for e in [
    E("sct", "sct_tiny", {**TINY_SCT}, "SCT (shifted MSA, 1 layer, 1 frame; ViLT + LSH; clip encoder 1 layer)"),
    E("sct_literal", "sct_tiny_literal", {**TINY_SCT},
      "SCT, the paper's letter (ViLT + LSH + pooling in every block; heads width / heads)"),
    E("sct_space", "sct_tiny", {**TINY_SCT, "temporal_kind": "space"}, "space attention"),
    E("sct_time", "sct_tiny", {**TINY_SCT, "temporal_kind": "time"}, "time attention"),
    E("sct_concat", "sct_tiny", {**TINY_SCT, "temporal_kind": "space_time_concat"}, "space-time concat"),
    E("sct_shift_layers2", "sct_tiny", {**TINY_SCT, "temporal_depth": 2}, "2 shifted MSA layers, 1 frame"),
    E("sct_shift_frames2", "sct_tiny", {**TINY_SCT, "shift_frames": 2}, "1 shifted MSA layer, 2 frames"),
    E("sct_causal", "sct_tiny", {**TINY_SCT, "shift_mode": "causal"},
      "SCT with the causal shift (the first frame takes its own keys)"),
    E("sct_clip2", "sct_tiny", {**TINY_SCT, "clip_depth": 2}, "clip encoder 2 layers"),
    E("sct_clip4", "sct_tiny", {**TINY_SCT, "clip_depth": 4}, "clip encoder 4 layers"),
    E("sct_conv_local", "sct_tiny", {**TINY_SCT, "local_kind": "conv"}, "conv local blocks instead of ViLT"),
    E("sct_dense_global", "sct_tiny", {**TINY_SCT, "global_kind": "dense"}, "dense global attention instead of LSH"),
    E("sct_no_global", "sct_tiny", {**TINY_SCT, "global_kind": "none"}, "no global layer"),
    E("tsm_avg", "tsm_vit_b16", {**TINY_VIT, "head": "average"}, "TSM-ViT, temporal average pooling",
      VIT_REVISION),
    E("tsm_ta", "tsm_vit_b16", {**TINY_VIT, "head": "temporal_attention"}, "TSM-ViT, temporal attention",
      VIT_REVISION),
    E("xvit_avg", "xvit_b16", {**TINY_VIT, "head": "average"}, "X-ViT, temporal average pooling",
      VIT_REVISION),
    E("xvit_ta", "xvit_b16", {**TINY_VIT, "head": "temporal_attention"}, "X-ViT, temporal attention",
      VIT_REVISION),
    E("bag_of_frames", "vit_b16_frames", {**TINY_VIT, "head": "average"},
      "bag of frames (per-frame ViT, features averaged)", VIT_REVISION),
]}

# Each table: (title, [(experiment, paper's number)], what the paper concludes, the metric it reports).
TABLES = {
    "temporal": ("SCT appendix: shifted MSA vs other temporal attentions (SCT-S, K400 top-1)",
                 [("sct", "78.41"), ("sct_space", "77.02"), ("sct_time", "77.62"), ("sct_concat", "77.35")],
                 "shifted MSA is best; time > concat > space"),
    "table5": ("SCT Table 5: shifted MSA layers and shifted frames (SCT-S, K400 / UCF101 top-1)",
               [("sct_space", "76.91 / 97.01 (0 layers)"), ("sct", "78.41 / 98.02"),
                ("sct_shift_frames2", "77.02 / 97.15 (5 of 24 frames)"), ("sct_shift_layers2", "77.45 / 97.33")],
               "one shifted layer with one frame is best; 0 layers is worst"),
    "causal": ("Cyclic vs causal shift (streaming: causal features are computed once per frame; no paper number)",
               [("sct", "78.41 (cyclic, SCT-S K400)"), ("sct_causal", "-")],
               "the paper trains the cyclic shift only"),
    "table8": ("SCT Table 8: clip encoder depth (SCT-S, K400 / UCF101 top-1)",
               [("sct_clip2", "76.32 / 97.35"), ("sct_clip4", "78.41 / 98.02")],
               "4 layers beat 2"),
    "local": ("SCT appendix: ViLT vs convolutional local blocks (SCT-S, K400 / UCF101 top-1)",
              [("sct", "78.4 / 98.3"), ("sct_conv_local", "73.9 / 94.9 (conv)")],
              "ViLT beats every conv variant"),
    "global": ("SCT appendix: LSH vs dense vs no global layer (SCT-S, K400 / UCF101 top-1)",
               [("sct", "78.41 / 98.02"), ("sct_dense_global", "not reported"),
                ("sct_no_global", "76.2 / 96.5")],
               "removing LSH costs 2.2 points; dense attention is not reported"),
    "literal": ("Our reading of SCT's blocks vs the paper's letter (docs/architecture.md, reading 1)",
                [("sct", "78.41 (SCT-S, one reading)"), ("sct_literal", "78.41 (SCT-S, one reading)")],
                "one SCT-S; the text does not settle which structure it is"),
    "xvit": ("X-ViT supplementary Table 2: {TSM-ViT, X-ViT} x {average, temporal attention} (ViT-B/16, SSv2 top-1)",
             [("tsm_avg", "60.8"), ("tsm_ta", "not legible in our copy"), ("xvit_avg", "not legible in our copy"),
              ("xvit_ta", "63.3 (main paper, rho = 25%)")],
             "temporal attention aggregation is much better than average pooling; X-ViT differs from TSM-ViT"),
    "bag": ("Bag of frames vs temporal models (no paper number)",
            [("bag_of_frames", "-"), ("tsm_avg", "-"), ("xvit_ta", "-"), ("sct", "-")],
            "a model without temporal order cannot tell a motion from its reverse"),
}
VIEW_MODELS = ("sct", "xvit_ta")
# Run first (all seeds) so that a run stopped early still answers the main question: does temporal
# modelling help, and does SCT's shifted MSA beat plain space attention?
CORE = ("sct", "sct_space", "bag_of_frames", "xvit_ta")


@dataclasses.dataclass
class Settings:
    """The miniature protocol: the demo's data and recipe (its 8 classes, noise and distractor) with
    fewer clips. On the translation pairs alone sct_tiny stayed at chance for 1,200 steps while X-ViT
    learnt them; with the other pairs beside them it learns all four (docs/ablations.md)."""

    classes: int = 8  # the first classes of CLASS_ORDER: 4 time-reversed pairs, as the demo
    videos_per_class: int = 150
    noise: float = 0.04
    distractor: bool = True
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2)
    video_frames: int = 24
    clip_frames: int = 8
    sampling_rate: int = 2  # a clip spans 16 of the 24 frames, so temporal test views differ
    size: int = 32
    epochs: int = 30
    batch_size: int = 16
    lr: float = 0.0003  # the demo recipe's finding: from scratch, lr >= 1e-3 collapses to the label prior
    view: str = "1x1"  # every table's test views
    # The test-view table (VIEW_MODELS only), temporal x spatial. Its test frames are resized to a short side
    # of 37 px (the train scale jitter's lower end) so that the three spatial crops differ: at 32 px all
    # three would be the whole square frame.
    view_grid: tuple[str, ...] = ("1x1", "1x3", "2x1", "2x3", "4x1", "4x3")
    grid_short_side: int = 37

    def fingerprint(self) -> str:
        """Of the training protocol only: a change to how runs are tested does not retrain them."""
        protocol = {k: v for k, v in dataclasses.asdict(self).items() if k not in _TEST_FIELDS}
        return hashlib.sha1(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:10]


_TEST_FIELDS = ("view", "view_grid", "grid_short_side")


def run_config(exp: Experiment, seed: int, settings: Settings, data_root: Path, out: Path):
    """The engine's RunConfig for one (experiment, seed): the demo recipe at this scale."""
    overrides = [
        f"output_dir={out}", f"seed={seed}", f"model.name={exp.model}", "resume=auto",
        f"data.root={data_root}", "data.format=csv", f"data.num_frames={settings.clip_frames}",
        f"data.sampling_rate={settings.sampling_rate}", f"data.crop_size={settings.size}", "data.flip=false",
        "data.cache_mb=256", "optim.clip_grad=1.0", "train.label_smoothing=0.1",
        "optim.name=adamw", f"optim.lr={settings.lr}", "optim.weight_decay=0.05", "optim.warmup_epochs=1",
        f"train.epochs={settings.epochs}", f"train.batch_size={settings.batch_size}", "train.num_workers=0",
        "train.eval_every_epochs=0", "train.log_every_steps=1000", "train.device=cpu",
        f"eval.views={settings.view}", "eval.num_workers=0", "eval.batch_size=32",
    ]
    overrides += [f"model.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in exp.overrides.items()]
    return load_config(None, overrides)


def cache_id(exp: Experiment, seed: int, settings: Settings, revision: int | None = None) -> str:
    """``key/seed<n>/<protocol fingerprint>``, then ``/rev<n>`` from revision 1 on (default: the experiment's)."""
    revision = exp.revision if revision is None else revision
    return f"{exp.key}/seed{seed}/{settings.fingerprint()}" + (f"/rev{revision}" if revision else "")


def load_cache(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("id")}


def run_one(exp: Experiment, seed: int, settings: Settings, data_root: Path, work: Path) -> dict:
    """Train (or, with resume=auto, reload a finished run) and test one (experiment, seed).

    ``top1``: at ``settings.view``; ``view_grid`` (VIEW_MODELS): at every view of the grid.
    """
    # A revision trains in a folder of its own: resume=auto would otherwise reload the older revision's run.
    out = work / "runs" / (f"{exp.key}_seed{seed}" + (f"_rev{exp.revision}" if exp.revision else ""))
    cfg = run_config(exp, seed, settings, data_root, out)
    start = time.perf_counter()
    weights = train(cfg) / "model.safetensors"
    train_s = time.perf_counter() - start
    record = {"experiment": exp.key, "seed": seed,
              "top1": {settings.view: evaluate(weights, views=settings.view, num_workers=0, device="cpu")["top1"]}}
    if exp.key in VIEW_MODELS:
        grid_data = dataclasses.replace(cfg.data, test_short_side=settings.grid_short_side)
        record["view_grid"] = {v: evaluate(weights, grid_data, views=v, num_workers=0, device="cpu")["top1"]
                               for v in settings.view_grid}
    return {**record, "train_seconds": train_s, "seconds": time.perf_counter() - start}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def _scores(results: list[dict], key: str, view: str, field: str = "top1") -> list[float]:
    return [r[field][view] for r in results if r["experiment"] == key and view in r.get(field, {})]


def _revision_notes(keys: list[str]) -> list[str]:
    """One line per code revision: which of the tabled experiments were rerun after it."""
    lines = []
    for revision, change in REVISIONS.items():
        rerun = [k for k in keys if EXPERIMENTS[k].revision >= revision]
        if rerun:
            lines += [f"Revision {revision}: {change}. It moves {', '.join(f'`{k}`' for k in rerun)}, which are "
                      f"retrained at revision {revision}; while a row has fewer seeds at revision {revision} than the "
                      "others, its earlier runs follow, marked \"before it\". Every other experiment is unmoved by it.",
                      ""]
    return lines


def _cell(results: list[dict], older: list[dict], key: str, view: str, seeds: int, field: str = "top1") -> str:
    """A row's mean +- std at the experiment's revision; while that has fewer than ``seeds`` seeds, the runs
    of earlier revisions follow, marked as predating it."""
    now, before = _scores(results, key, view, field), _scores(older, key, view, field)
    revision = EXPERIMENTS[key].revision
    if revision and before and len(now) < seeds:
        return f"{_mean_std(now)} at revision {revision}; {_mean_std(before)} before it"
    return _mean_std(now)


def format_doc(results: list[dict], settings: Settings, seeds: list[int], wall: float, classes: int,
               older: list[dict] = ()) -> str:
    """docs/ablations.md: setting, then each table with the paper's numbers beside ours. ``older``: runs of
    revised experiments at earlier revisions (shown while a revision's seeds are incomplete)."""
    main_view = settings.view
    keys = list(dict.fromkeys(r["experiment"] for r in [*results, *older]))
    lines = [
        f"Setting: synthetic motion dataset, {classes} classes ({classes // 2} time-reversed pairs), "
        f"{settings.videos_per_class} videos per class (train/val/test split "
        f"{'/'.join(f'{f:.0%}' for f in settings.splits)}), {settings.video_frames}-frame "
        f"{settings.size}x{settings.size} videos; clips of {settings.clip_frames} frames, "
        f"{settings.sampling_rate} apart; "
        f"noise {settings.noise}, distractor {'on' if settings.distractor else 'off'}; "
        f"{settings.epochs} epochs of AdamW (lr {settings.lr}, batch {settings.batch_size}), from scratch; "
        f"test top-1 at {main_view} views; seeds {', '.join(map(str, seeds))}; "
        f"{len(results)} runs{f' (and {len(older)} of earlier revisions)' if older else ''}, {wall / 60:.0f} min of "
        "training and testing on this machine's CPU.",
        f"Models: `sct_tiny` at {settings.clip_frames} frames x {settings.size} px with ViLT chunks of "
        f"{TINY_SCT['chunk_size']}x{TINY_SCT['chunk_size']} tiny patches; ViT family at "
        f"{TINY_VIT['dim']} wide, {TINY_VIT['depth']} layers, {TINY_VIT['heads']} heads, "
        f"{TINY_VIT['patch_size']}x{TINY_VIT['patch_size']} patches; every model with xavier init.",
        "",
    ]
    lines += _revision_notes(keys)
    for title, rows, claim in TABLES.values():
        lines += [f"## {title}", "", f"Paper: {claim}.", "",
                  "| variant | paper | ours: test top-1 (mean +- std over seeds) |", "|---|---|---|"]
        lines += [f"| {EXPERIMENTS[k].label} | {paper} | {_cell(results, older, k, main_view, len(seeds))} |"
                  for k, paper in rows]
        lines.append("")
    grid = settings.view_grid
    lines += ["## Test views, temporal x spatial (SCT Fig. 3, X-ViT supplementary Fig. 1)", "",
              "Paper: more temporal views help, with diminishing returns (X-ViT: no gain beyond 2 temporal views).",
              "", f"Test frames resized to a short side of {settings.grid_short_side} px, then "
              f"{settings.size}-px crops (1: the centre; 3: both ends and the centre).", "",
              "| model | " + " | ".join(grid) + " |", "|---|" + "---|" * len(grid)]
    for key in VIEW_MODELS:
        lines.append(f"| {EXPERIMENTS[key].label} | "
                     + " | ".join(_cell(results, older, key, v, len(seeds), "view_grid") for v in grid) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 10 videos per class")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per experiment (default 3, quick 1)")
    parser.add_argument("--seed-list", default=None,
                        help="comma-separated seeds instead of 0..SEEDS-1 (e.g. 2: a second process for seed 2)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--videos-per-class", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated table keys: " + ",".join(TABLES))
    parser.add_argument("--experiments", default=None, help="comma-separated experiment keys (overrides --only)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="change the setting, e.g. --set lr=0.003 classes=4 distractor=false")
    parser.add_argument("--work", default=None, help="data, runs and cache (default runs/ablations[_quick])")
    parser.add_argument("--doc", default=None, help="Markdown output (default docs/ablations.md)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--write-only", action="store_true", help="rebuild the doc from cached runs, train nothing")
    args = parser.parse_args(argv)

    settings = Settings()
    if args.quick:
        settings = dataclasses.replace(settings, videos_per_class=10, epochs=2, batch_size=16, view_grid=("1x1", "2x3"))
    if args.epochs:
        settings = dataclasses.replace(settings, epochs=args.epochs)
    if args.videos_per_class:
        settings = dataclasses.replace(settings, videos_per_class=args.videos_per_class)
    for item in args.set:
        field, _, value = item.partition("=")
        kind = type(getattr(settings, field, None))
        if field not in {f.name for f in dataclasses.fields(Settings)} or kind not in (int, float, bool):
            parser.error(f"--set: {field!r} is not a number or flag of the setting")
        settings = dataclasses.replace(settings, **{field: value.lower() in ("1", "true", "yes") if kind is bool
                                                    else kind(value)})
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    if args.seed_list:
        if not all(seed.strip().isdigit() for seed in args.seed_list.split(",")):
            parser.error(f"--seed-list: expected comma-separated non-negative integers, got {args.seed_list!r}")
        seeds = [int(seed) for seed in args.seed_list.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work or ROOT / "runs" / ("ablations_quick" if args.quick else "ablations"))
    doc = Path(args.doc) if args.doc else (work / "ablations.md" if args.quick else ROOT / "docs" / "ablations.md")
    tables = args.only.split(",") if args.only else list(TABLES)
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        parser.error(f"--only: unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    keys = list(dict.fromkeys(k for t in tables for k, _ in TABLES[t][1]))
    if args.experiments:
        keys = args.experiments.split(",")
        unknown = sorted(set(keys) - set(EXPERIMENTS))
        if unknown:
            parser.error(f"--experiments: unknown {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")

    data_root = generate(work / "data", videos_per_class=settings.videos_per_class, seed=0,
                         num_frames=settings.video_frames, size=settings.size, progress=False,
                         classes=CLASS_ORDER[:settings.classes], splits=settings.splits,
                         noise=settings.noise, distractor=settings.distractor)
    classes = len((data_root / "classes.txt").read_text().split())
    cache_path = work / "results.jsonl"
    cache = load_cache(cache_path)
    core = [k for k in keys if k in CORE]
    rest = [k for k in keys if k not in CORE]
    results, older = [], []
    for key, seed in [(k, s) for s in seeds for k in core] + [(k, s) for s in seeds for k in rest]:
        run_id = cache_id(EXPERIMENTS[key], seed, settings)
        tested = run_id in cache and (key not in VIEW_MODELS or "view_grid" in cache[run_id])
        if not tested and not args.write_only:
            print(f"[ablations] {key} seed {seed} ...", flush=True)
            record = {"id": run_id, **run_one(EXPERIMENTS[key], seed, settings, data_root, work)}
            with cache_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            cache[run_id] = record
            print(f"[ablations] {key} seed {seed}: top-1 {record['top1']} ({record['seconds']:.0f} s)", flush=True)
        if run_id in cache:
            results.append(cache[run_id])
        older += [cache[i] for i in (cache_id(EXPERIMENTS[key], seed, settings, r)
                                     for r in range(EXPERIMENTS[key].revision)) if i in cache]
    wall = sum(r["seconds"] for r in [*results, *older])
    # Only the marked section is rewritten: the hand-written reading of the numbers around it stays.
    update_doc_section(doc, "ablations", format_doc(results, settings, seeds, wall, classes, older),
                       title="Measured (generated by benchmarks/ablations.py)")
    doc.with_suffix(".json").write_text(json.dumps({"settings": dataclasses.asdict(settings), "seeds": seeds,
                                                    "results": results, "earlier_revisions": older}, indent=2))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
