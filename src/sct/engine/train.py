"""``sct train``: the paper's recipe (SGD + warmup/cosine, label smoothing, dropout) with exact resume.

``sct train --config configs/k400.yaml data.root=/data/k400 optim.lr=0.1`` (single process), or under
``torchrun --nproc_per_node N -m sct train ...`` for data parallelism. Everything a run writes goes to
``output_dir``: ``config.yaml`` (resolved), ``labels.txt``, ``metrics.jsonl``, ``checkpoints/``,
``curves.png``, ``model.safetensors`` and ``summary.json`` (and ``tensorboard/`` with ``train.tensorboard``).
While it runs, a terminal shows a progress bar per epoch with the epoch's and the run's ETA; a log file gets
plain lines (:mod:`sct.engine.progress`).

Reliability: ``output_dir`` is checked for writing before any work and locked for the whole run
(``run.lock``); files that killed writes left behind are removed when a run starts; SIGINT/SIGTERM stop
at the next optimiser step with a resumable checkpoint; ``resume=auto`` skips a damaged latest
checkpoint (renamed ``*.damaged``) for the one before it. See docs/reliability.md.

Exactness: the data order is a function of ``(seed, epoch)``, augmentation of ``(seed, epoch, item)``,
dropout of ``(seed, rank, step)`` (the global RNG is reseeded before every optimiser step), and random
state a model keeps (LSH's rotation draw counter) is a buffer, saved with the weights. A resumed run
therefore repeats the uninterrupted one bit for bit on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from sct.config import RunConfig, dump_config, load_recipe, parse_views
from sct.data.datasets import BadFileTracker, build_dataset, collate
from sct.data.synthetic import generate_from_recipe
from sct.engine import bad_files, distributed
from sct.engine.checkpoint import (
    CheckpointPaths,
    atomic_write,
    complete_checkpoints,
    latest_checkpoint,
    load_into,
    load_state,
    load_weights,
    model_metadata,
    prune_checkpoints,
    read_checkpoint,
    remove_orphans,
    save_checkpoint,
    set_aside,
)
from sct.engine.compiled import CompiledWithFallback
from sct.engine.distributed import DistContext, TrainBatchSampler, accumulation_steps
from sct.engine.ema import ModelEMA
from sct.engine.evaluate import infer_scores
from sct.engine.metrics import MetricsLog, read_metrics, summarize
from sct.engine.mixup import Mixup, soft_cross_entropy
from sct.engine.optim import build_optimizer, build_schedule
from sct.engine.plots import plot_curves
from sct.engine.progress import TrainProgress
from sct.engine.run_lock import RunLock
from sct.engine.stop import Interrupted, StopRequest, ignore_in_worker
from sct.engine.tensorboard_log import TensorBoardLog, require_tensorboard
from sct.errors import CheckpointError, ConfigError, DataQualityError, OutputError, SCTError
from sct.models.registry import create_model
from sct.models.weights import save_weights
from sct.options import add_out
from sct.outputs import check_writable_dir, writing

log = logging.getLogger(__name__)

# What a training state file must hold (name -> type); anything else is a damaged file.
STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "step_in_epoch": int, "global_step": int, "batch_size": int, "optimizer": dict,
    "schedule": dict, "scaler": (dict, type(None)), "epoch_totals": list, "bad_files": list,
}


class TrainingDivergedError(SCTError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (e.g. configs/k400.yaml, or configs/demo.yaml whose "
                                          "synthetic section generates the data first); defaults apply without one")
    parser.add_argument("--resume", metavar="PATH", help="checkpoint (.safetensors) to continue from, or 'auto'")
    add_out(parser, "run folder (the config's output_dir)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=0.1")


def run(args: argparse.Namespace) -> int:
    extra = [f"output_dir={args.out}"] if args.out else []
    cfg, synthetic = load_recipe(args.config, [*args.overrides, *extra])
    if args.resume:
        cfg.resume = args.resume
    train(cfg, synthetic=synthetic)
    return 0


def train(cfg: RunConfig, synthetic: dict[str, Any] | None = None) -> Path:
    """Train as ``cfg`` says (in this process, or as one rank under ``torchrun``); return the run folder.

    ``synthetic``: a recipe's ``synthetic`` section; the data set is generated at ``data.root`` first
    (reused when it is already there).
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    with distributed.session(cfg.train.device) as ctx:
        trainer = Trainer(cfg, ctx, synthetic)
        try:
            return trainer.fit()
        finally:
            # The DDP wrapper goes before the process group it communicates through.
            trainer.close()


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the global RNG (dropout, drop-path) for optimiser step ``step`` on process ``rank``."""
    digest = hashlib.blake2b(f"{seed}:{rank}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclasses.dataclass
class Position:
    """Where training stands: ``step_in_epoch`` optimiser steps of ``epoch`` done, ``global_step`` in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclasses.dataclass
class Saved:
    """A checkpoint read back whole (``ema``: the EMA weights, when this run keeps an EMA)."""

    paths: CheckpointPaths
    metadata: dict[str, str]
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None


class Trainer:
    """One training run. Everything that can be wrong with the inputs is checked in ``__init__``."""

    def __init__(self, cfg: RunConfig, ctx: DistContext, synthetic: dict[str, Any] | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        if cfg.train.precision == "fp16" and ctx.device.type != "cuda":
            raise ConfigError(f"train.precision=fp16 needs a CUDA device, this run is on {ctx.device.type}; "
                              "use bf16 (or fp32) on a CPU")
        self.run_dir = check_writable_dir(cfg.output_dir, "output_dir")
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.damaged: list[CheckpointPaths] = []
        self.resume_from = self._resolve_resume()
        if synthetic:
            distributed.run_on_main(lambda: generate_from_recipe(cfg.data.root, synthetic, "synthetic"))
        self.accum = accumulation_steps(cfg.train.batch_size, cfg.train.micro_batch_size, ctx.world_size)
        micro = cfg.train.batch_size // (self.accum * ctx.world_size)
        self.train_set = build_dataset(cfg.data, "train", **({"rank": ctx.rank, "world_size": ctx.world_size,
                                                              "micro_batch": micro} if cfg.data.format == "shards"
                                                             else {}))
        self.class_names = list(self.train_set.class_names)
        self.val_set = self._build_val_set()
        self.steps_per_epoch = self._steps_per_epoch()
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is larger than the {len(self.train_set)} training "
                f"{'samples per loader worker' if self.streaming else 'videos'}"
            )
        self.model = self._build_model().to(ctx.device)
        self.net = self._wrap(self.model)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = build_schedule(self.optimizer, cfg.optim, steps_per_epoch=self.steps_per_epoch,
                                       epochs=cfg.train.epochs)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.train.precision == "fp16")
        self.ema = ModelEMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing, reduction="sum")
        self.mixup = Mixup(len(self.class_names), cfg.train.mixup, cfg.train.cutmix, cfg.train.mixup_switch_prob,
                           cfg.train.label_smoothing)
        self.tracker = BadFileTracker(self.train_set.num_videos, cfg.data.max_bad_fraction)
        self.dropped_clips = 0  # training clips left out: bad videos without a decodable replacement
        self.metadata = model_metadata(self.model, cfg.model.name, self.class_names, dump_config(cfg))
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=ctx.is_main)
        if cfg.train.tensorboard:
            require_tensorboard()
        self.board = TensorBoardLog(self.run_dir / "tensorboard", enabled=False)
        self.pos = Position()
        # (loss x n, correct, n) of the epoch so far, over all processes; saved so a resumed epoch reports
        # the same averages.
        self.epoch_totals = torch.zeros(3, dtype=torch.float64)
        self.last_checkpoint: CheckpointPaths | None = None
        self.val_top1: float | None = None
        self.lock: RunLock | None = None
        self.stop = StopRequest()
        if self.resume_from is not None:
            self._load(self.resume_from)

    # ---- set-up -------------------------------------------------------------------------------------

    def _resolve_resume(self) -> Saved | None:
        existing = latest_checkpoint(self.ckpt_dir)
        resume = self.cfg.resume
        if resume is None:
            if existing is not None:
                raise ConfigError(
                    f"output_dir {self.run_dir} already holds checkpoints (latest {existing.weights.name}); "
                    "pass resume=auto to continue that run, or choose another output_dir"
                )
            return None
        if resume == "auto":
            return self._latest_readable()
        path = Path(resume)
        paths = latest_checkpoint(path) if path.is_dir() else CheckpointPaths.from_weights(path)
        if paths is None or not paths.weights.is_file():
            raise CheckpointError(f"resume={resume}: no checkpoint there")
        if not paths.state.is_file():
            raise CheckpointError(
                f"resume={resume}: no training state {paths.state.name} beside it; a weights-only file can start "
                "a new run through model.pretrained, not resume one"
            )
        return self._read_saved(paths)

    def _latest_readable(self) -> Saved | None:
        """The newest checkpoint of the run folder that reads back whole; damaged newer ones are noted."""
        candidates = [paths for _, paths in reversed(complete_checkpoints(self.ckpt_dir))]
        reasons = []
        for paths in candidates:
            try:
                return self._read_saved(paths)
            except CheckpointError as err:
                reasons.append(str(err))
                self.damaged.append(paths)
                if self.ctx.is_main:
                    log.warning("resume=auto: skipping a damaged checkpoint (%s); trying the one before it", err)
        if candidates:
            raise CheckpointError(f"resume=auto: no checkpoint in {self.ckpt_dir} can be read:\n  "
                                  + "\n  ".join(reasons))
        return None

    def _read_saved(self, paths: CheckpointPaths) -> Saved:
        """Read every file of a checkpoint; ``CheckpointError`` if any is truncated or malformed."""
        weights, metadata = read_checkpoint(paths.weights)
        state = load_state(paths.state, STATE_FIELDS)
        ema = None
        if self.cfg.train.ema_decay:
            ema = load_weights(paths.ema)[0] if paths.ema.is_file() else weights
        return Saved(paths, metadata, state, weights, ema)

    @property
    def streaming(self) -> bool:
        """Training reads tar shards sequentially (an iterable dataset) instead of indexing items."""
        return isinstance(self.train_set, torch.utils.data.IterableDataset)

    def _steps_per_epoch(self) -> int:
        if self.streaming:
            per_worker = self.train_set.batches_per_worker(self.cfg.train.num_workers)
            return per_worker * max(self.cfg.train.num_workers, 1) // self.accum
        return len(self.train_set) // self.cfg.train.batch_size

    def _build_val_set(self):
        if not self.cfg.train.eval_every_epochs or not self.cfg.data.val:
            return None
        temporal, spatial = parse_views(self.cfg.train.val_views, "train.val_views")
        data = dataclasses.replace(self.cfg.data, num_temporal_views=temporal, num_spatial_crops=spatial)
        return build_dataset(data, "val")

    def _build_model(self) -> nn.Module:
        derived = {
            "num_classes": (len(self.class_names), f"the dataset's {len(self.class_names)} classes"),
            "num_frames": (1, f"the image data (data.format={self.cfg.data.format})") if self.cfg.data.is_image
            else (self.cfg.data.num_frames, f"data.num_frames={self.cfg.data.num_frames}"),
            "img_size": (self.cfg.data.crop_size, f"data.crop_size={self.cfg.data.crop_size}"),
        }
        overrides = dict(self.cfg.model.overrides)
        for key, (value, source) in derived.items():
            if key in overrides and overrides.pop(key) != value:
                raise ConfigError(f"model.{key}={self.cfg.model.overrides[key]} disagrees with {source}")
        torch.manual_seed(self.cfg.seed)
        model = create_model(self.cfg.model.name, pretrained=self.cfg.model.pretrained,
                             grad_checkpointing=self.cfg.train.grad_checkpointing,
                             **{k: v for k, (v, _) in derived.items()}, **overrides)
        if getattr(model, "takes_images", False) != self.cfg.data.is_image:
            raise ConfigError(
                f"model {self.cfg.model.name} takes {'images' if getattr(model, 'takes_images', False) else 'clips'}"
                f" but data.format={self.cfg.data.format} gives {'images' if self.cfg.data.is_image else 'clips'}"
            )
        if self.ctx.is_main and hasattr(model, "load_report"):
            print(model.load_report, flush=True)
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return CompiledWithFallback(model) if self.cfg.train.compile else model

    def _load(self, saved: Saved) -> None:
        """Check that the checkpoint belongs to this model and data, then restore every piece of state."""
        paths, metadata, state = saved.paths, saved.metadata, saved.state
        own = json.loads(self.metadata["model_config"])
        theirs = json.loads(metadata["model_config"])
        if metadata["model"] != self.cfg.model.name or own != theirs:
            changed = sorted(k for k in own.keys() | theirs.keys() if own.get(k) != theirs.get(k))
            raise CheckpointError(
                f"checkpoint {paths.weights} was written for model {metadata['model']!r}, not this "
                f"{self.cfg.model.name!r} config" + (f" (differs in {', '.join(changed)})" if changed else "")
            )
        if json.loads(metadata["classes"]) != self.class_names:
            raise CheckpointError(f"checkpoint {paths.weights} was trained on other classes than {self.cfg.data.root}")
        if state["batch_size"] != self.cfg.train.batch_size:
            raise ConfigError(
                f"train.batch_size={self.cfg.train.batch_size} but the checkpoint {paths.weights} was trained with "
                f"{state['batch_size']}: the data position cannot be carried over"
            )
        load_into(self.model, saved.weights, paths.weights)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"training state {paths.state} does not fit this run's optimiser "
                                  f"({self.cfg.optim.name}): {err}") from None
        if self.ema is not None:
            self.ema.load_state_dict(saved.ema)
        self.tracker.update(state["bad_files"])
        self.tracker.take_unshared()  # every process loaded them
        self.dropped_clips = int(state.get("dropped_clips", 0))
        self.pos = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
        self.epoch_totals = torch.tensor(state["epoch_totals"], dtype=torch.float64)
        self.last_checkpoint = paths

    # ---- the loop -----------------------------------------------------------------------------------

    def fit(self) -> Path:
        start = time.perf_counter()
        self._prepare_run_folder()
        cfg = self.cfg.train
        try:
            with self.stop.catching(announce=self.ctx.is_main):
                while self.pos.epoch < cfg.epochs and not self._reached_max_steps():
                    # A signal that came during the last validation stops here, on that epoch's checkpoint.
                    self._stop_if_signalled(distributed.all_reduce_sum(self._signal_flags()).cpu())
                    self._run_epoch()
                    if self.pos.step_in_epoch < self.steps_per_epoch:
                        break  # stopped by train.max_steps inside the epoch
                    self._end_epoch()
                if not self._checkpoint_is_current():
                    self._save_checkpoint()
            self._finish(time.perf_counter() - start)
        finally:
            self.progress.close_epoch()
            self.board.close()
        return self.run_dir

    def close(self) -> None:
        """Release the run folder and drop the DDP wrapper (before the process group is destroyed)."""
        self.net = self.model
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _checkpoint_is_current(self) -> bool:
        return self.last_checkpoint is not None and self._latest_saved_step() == self.pos.global_step

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run: all epochs, or ``train.max_steps`` if that comes first."""
        steps = self.steps_per_epoch * self.cfg.train.epochs
        return min(steps, self.cfg.train.max_steps) if self.cfg.train.max_steps else steps

    def _record(self, record: dict[str, Any]) -> None:
        """Append to metrics.jsonl and mirror into TensorBoard."""
        self.log.append(record)
        self.board.record(record)

    def _reached_max_steps(self) -> bool:
        return self.cfg.train.max_steps is not None and self.pos.global_step >= self.cfg.train.max_steps

    def _prepare_run_folder(self) -> None:
        """Lock the run folder, clear what interrupted runs left, write config and labels (rank 0)."""
        distributed.run_on_main(self._take_run_folder)
        self.progress = TrainProgress(epochs=self.cfg.train.epochs, steps_per_epoch=self.steps_per_epoch,
                                      total_steps=self.total_steps, log_every=self.cfg.train.log_every_steps,
                                      enabled=self.ctx.is_main)

    def _take_run_folder(self) -> None:
        self.lock = RunLock(self.run_dir)
        for paths in self.damaged:
            for moved in set_aside(paths):
                log.warning("damaged checkpoint file kept as %s", moved)
        removed = remove_orphans(self.run_dir, checkpoints=False) + remove_orphans(self.ckpt_dir, checkpoints=True)
        if removed:
            log.warning("removed %d file(s) left by interrupted writes: %s", len(removed),
                        ", ".join(str(p) for p in removed))
        config_text = dump_config(self.cfg).encode()
        atomic_write(self.run_dir / "config.yaml", lambda f: f.write(config_text))
        labels = "".join(name + "\n" for name in self.class_names).encode()
        atomic_write(self.run_dir / "labels.txt", lambda f: f.write(labels))
        with writing(self.log.path):
            if self.resume_from is None:
                self.log.reset()
            else:
                self.log.truncate_after(self.pos.global_step)
        # Events past the checkpoint belong to the interrupted attempt: purged, as metrics.jsonl is truncated.
        self.board = TensorBoardLog(self.run_dir / "tensorboard", enabled=self.cfg.train.tensorboard,
                                    purge_step=0 if self.resume_from is None else self.pos.global_step + 1)

    def _loader(self, epoch: int) -> DataLoader:
        if self.streaming:
            self.train_set.set_epoch(epoch)
            self.train_set.skip_batches = self.pos.step_in_epoch * self.accum
            return DataLoader(self.train_set, batch_size=self.train_set.micro_batch, drop_last=True,
                              num_workers=self.cfg.train.num_workers,
                              collate_fn=functools.partial(collate, drop_failed=True),
                              pin_memory=self.ctx.device.type == "cuda")
        sampler = TrainBatchSampler(
            len(self.train_set), self.cfg.train.batch_size, self.accum, self.cfg.seed, epoch,
            self.ctx.rank, self.ctx.world_size, start_step=self.pos.step_in_epoch,
        )
        self.train_set.set_epoch(epoch)
        return DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=self.cfg.train.num_workers,
            collate_fn=functools.partial(collate, drop_failed=True),
            pin_memory=self.ctx.device.type == "cuda",
            # A private generator: creating the iterator must not consume the global RNG.
            generator=torch.Generator().manual_seed(self.cfg.seed), worker_init_fn=ignore_in_worker,
        )

    def _run_epoch(self) -> None:
        """Train until the epoch ends or ``train.max_steps`` is reached."""
        epoch, cfg = self.pos.epoch, self.cfg.train
        batches = iter(self._loader(epoch))
        self.progress.start_epoch(epoch, self.pos.step_in_epoch, self.pos.global_step)
        tic = time.perf_counter()
        while self.pos.step_in_epoch < self.steps_per_epoch and not self._reached_max_steps():
            lr = self.schedule.current_lr()
            stats, grad_norm = self._optimizer_step(batches)
            self.epoch_totals += stats[:3]
            self.pos.step_in_epoch += 1
            self.pos.global_step += 1
            loss, top1 = stats[0].item() / stats[2].item(), 100.0 * stats[1].item() / stats[2].item()
            rate = cfg.batch_size / max(time.perf_counter() - tic, 1e-9)
            tic = time.perf_counter()
            self._record({"type": "step", "epoch": epoch, "step": self.pos.global_step, "loss": loss,
                          "top1": top1, "lr": lr, "grad_norm": grad_norm, "samples_per_s": rate})
            self.progress.step(self.pos.step_in_epoch, self.pos.global_step, loss, lr, rate)
            every = cfg.checkpoint_every_steps
            if every and self.pos.global_step % every == 0 and self.pos.step_in_epoch < self.steps_per_epoch:
                self._save_checkpoint()
            if stats[4:].any():
                self.progress.close_epoch()
            self._stop_if_signalled(stats[4:])
        self.progress.close_epoch()

    def _signal_flags(self) -> torch.Tensor:
        """``(SIGINT seen, SIGTERM seen)`` on this process, to be summed over processes."""
        return torch.tensor([self.stop.signum == signal.SIGINT, self.stop.signum == signal.SIGTERM],
                            dtype=torch.float64, device=self.ctx.device)

    def _stop_if_signalled(self, flags: torch.Tensor) -> None:
        """Stop if any process got a signal; ``flags`` went through an all-reduce, so all processes agree."""
        if not flags.any():
            return
        signum = signal.SIGTERM if flags[1] else signal.SIGINT
        if not self._checkpoint_is_current():
            self._save_checkpoint()
        command = "sct train" if not self.ctx.distributed else (
            f"torchrun --nproc_per_node {self.ctx.world_size} -m sct train")
        message = (f"{signal.Signals(signum).name}: stopped at epoch {self.pos.epoch + 1}, optimiser step "
                   f"{self.pos.global_step}; checkpoint {self.last_checkpoint.weights} saved. Resume with: "
                   f"{command} --config {self.run_dir / 'config.yaml'} resume=auto")
        # Printed here, by the main process, and no process leaves before it is out: under torchrun the
        # first process to exit makes torchrun terminate the others, which could cut a later message short.
        if self.ctx.is_main:
            print(message, file=sys.stderr, flush=True)
        distributed.barrier()
        raise Interrupted(signum, message, reported=True)

    def _optimizer_step(self, batches) -> tuple[torch.Tensor, float]:
        """Forward/backward this process's ``accum`` micro-batches, then one optimiser step.

        Clips of bad videos without a decodable replacement were dropped by the collate; the step is the
        mean loss over the decodable clips of the global batch, whatever process holds them. Returns the
        step's ``(summed loss, correct, clips, non-finite, SIGINT seen, SIGTERM seen)`` summed over
        processes, and the gradient norm.
        """
        torch.manual_seed(step_seed(self.cfg.seed, self.ctx.rank, self.pos.global_step))
        self.net.train()
        micro = [next(batches) for _ in range(self.accum)]
        for batch in micro:
            self.tracker.update(batch["bad"], check=False)
        bad_files.share(self.tracker, self.ctx.device)
        clips = self._count_clips(micro)
        # Each process's loss is its clips' summed loss x (processes / global clips): DDP averages the
        # gradients over processes, which makes the step's gradient the mean over the decodable clips.
        scale = self.ctx.world_size / clips
        work = [(batch, 1.0) for batch in micro if len(batch["label"])] or [(self._stand_in(micro[0]), 0.0)]
        # On the training device: NCCL reduces CUDA tensors, and no per-micro-batch host sync is needed.
        stats = torch.zeros(4, dtype=torch.float64, device=self.ctx.device)
        for k, (batch, weight) in enumerate(work):
            video = batch["video"].to(self.ctx.device, non_blocking=True)
            label = batch["label"].to(self.ctx.device, non_blocking=True)
            last = k == len(work) - 1
            sync = self.net.no_sync() if self.ctx.distributed and not last else contextlib.nullcontext()
            targets = None
            if self.mixup.active:
                video, targets = self.mixup(video, label)
            with sync:
                with self._autocast():
                    logits = self.net(video)
                loss = (self.criterion(logits.float(), label) if targets is None
                        else soft_cross_entropy(logits.float(), targets, reduction="sum"))
                self.scaler.scale(loss * (scale * weight)).backward()
            loss = loss.detach().double() * weight
            correct = (logits.argmax(dim=-1) == label).sum().double() * weight
            stats += torch.stack([loss, correct, stats.new_tensor(label.numel() * weight),
                                  (~torch.isfinite(loss)).double()])
        # Whether a stop signal arrived rides on the step's all-reduce, so every process stops at the same step.
        stats = distributed.all_reduce_sum(torch.cat([stats, self._signal_flags()])).cpu()
        if stats[3] > 0:
            self._diverged(stats[0].item() / stats[2].item())
        grad_norm = self._clip_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return stats, grad_norm

    def _count_clips(self, micro: list[dict]) -> int:
        """Decodable clips of this step over all processes (adds the dropped ones to ``dropped_clips``)."""
        counts = torch.tensor([sum(len(b["label"]) for b in micro), sum(b["dropped"] for b in micro)],
                              dtype=torch.int64, device=self.ctx.device)
        clips, dropped = distributed.all_reduce_sum(counts).tolist()
        self.dropped_clips += dropped
        if clips == 0:
            raise DataQualityError(
                f"every clip of optimiser step {self.pos.global_step + 1} (epoch {self.pos.epoch + 1}) comes from "
                f"a bad video whose {self.cfg.data.max_replacements} replacement draws were bad too: nothing "
                f"to train on. Fix or remove the bad files (`sct data check`) or raise data.max_replacements")
        return clips

    @staticmethod
    def _stand_in(empty: dict) -> dict:
        """A zero-weighted one-clip batch for a process whose clips of this step were all dropped: DDP needs
        every process in the gradient exchange, and a weight of 0 adds exactly nothing to the gradient."""
        video = empty["video"].new_zeros((1, *empty["video"].shape[1:]))
        return {**empty, "video": video, "label": torch.zeros(1, dtype=torch.long)}

    def _autocast(self):
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.ctx.device.type, dtype=dtype)

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.optim.clip_grad if self.cfg.optim.clip_grad is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _kept(self) -> str:
        return (f"the last good checkpoint is {self.last_checkpoint.weights}" if self.last_checkpoint
                else "no checkpoint had been written yet")

    def _diverged(self, loss: float) -> None:
        where = f"epoch {self.pos.epoch + 1}, optimiser step {self.pos.global_step + 1}"
        keep = self._kept()
        self._record({"type": "diverged", "epoch": self.pos.epoch, "step": self.pos.global_step + 1,
                      "loss": loss})
        if self.ctx.is_main:
            plot_curves(read_metrics(self.log.path), self.run_dir / "curves.png")
        raise TrainingDivergedError(
            f"loss became {loss} at {where} (lr {self.schedule.current_lr():.4g}); training stopped before "
            f"updating the weights, {keep}. Lower optim.lr or enable optim.clip_grad, then resume=auto"
        )

    def _end_epoch(self) -> None:
        totals = self.epoch_totals
        record: dict[str, Any] = {
            "type": "epoch", "epoch": self.pos.epoch + 1, "step": self.pos.global_step,
            "train_loss": totals[0].item() / max(totals[2].item(), 1),
            "train_top1": 100.0 * totals[1].item() / max(totals[2].item(), 1),
        }
        every = self.cfg.train.eval_every_epochs
        last_epoch = self.pos.epoch + 1 == self.cfg.train.epochs
        if self.val_set is not None and ((self.pos.epoch + 1) % every == 0 or last_epoch):
            metrics = self.validate()
            record.update(val_top1=metrics["top1"], val_clip_top1=metrics["clip_top1"])
            self.val_top1 = metrics["top1"]
            self.board.confusion("val/confusion", metrics["confusion"], self.class_names, self.pos.global_step)
        self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step)
        self.epoch_totals = torch.zeros(3, dtype=torch.float64)
        self._record(record)
        self.progress.end_epoch(record)
        self._save_checkpoint()

    def validate(self) -> dict[str, Any]:
        """Video-level accuracy on the val split with ``train.val_views`` views."""
        tracker = BadFileTracker(self.val_set.num_videos, self.cfg.data.max_bad_fraction)
        scores = infer_scores(self.model, self.val_set, ctx=self.ctx, batch_size=self.cfg.eval.batch_size,
                              num_workers=self.cfg.train.num_workers, precision=self.cfg.train.precision,
                              tracker=tracker, desc="val")
        return summarize(scores, self.class_names)

    # ---- checkpoints and the end of the run ---------------------------------------------------------

    def _bad_files(self) -> list[list[str]]:
        """Every process's bad files: the tracker holds the global list after each step's exchange."""
        return [list(item) for item in sorted(self.tracker.items)]

    def _save_checkpoint(self) -> None:
        bad_files = self._bad_files()
        paths = CheckpointPaths.for_step(self.ckpt_dir, self.pos.global_step)

        def save() -> None:
            state = {
                "epoch": self.pos.epoch,
                "step_in_epoch": self.pos.step_in_epoch,
                "global_step": self.pos.global_step,
                "batch_size": self.cfg.train.batch_size,
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "epoch_totals": self.epoch_totals.tolist(),
                "bad_files": bad_files,
                "dropped_clips": self.dropped_clips,
            }
            with self._noting_kept_checkpoint():
                save_checkpoint(paths, weights=self.model.state_dict(), metadata=self.metadata, state=state,
                                ema=self.ema.state_dict() if self.ema is not None else None)
            prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)

        distributed.run_on_main(save)
        self.last_checkpoint = paths

    @contextlib.contextmanager
    def _noting_kept_checkpoint(self) -> Iterator[None]:
        """A write that fails for lack of space (or permission) says which checkpoint is still good."""
        try:
            yield
        except OutputError as err:
            raise OutputError(f"{err}; training stopped at optimiser step {self.pos.global_step}, {self._kept()} "
                              "and intact. Make room, then continue with resume=auto") from None

    def _latest_saved_step(self) -> int:
        return int(self.last_checkpoint.weights.name.removeprefix("step_").removesuffix(".safetensors"))

    def _finish(self, seconds: float) -> None:
        bad_files = self._bad_files()
        distributed.run_on_main(lambda: self._write_results(seconds, bad_files))

    def _write_results(self, seconds: float, bad_files: list[list[str]]) -> None:
        final = self.run_dir / "model.safetensors"
        with self._noting_kept_checkpoint():
            save_weights(self.model, final, self.metadata)
            if self.ema is not None:
                save_weights(self.ema.state_dict(), CheckpointPaths.from_weights(final).ema, self.metadata)
        records = read_metrics(self.log.path)
        plot_curves(records, self.run_dir / "curves.png")
        steps = [r for r in records if r.get("type") == "step"]
        summary = {
            "model": self.cfg.model.name,
            "epochs": self.pos.epoch,
            "global_step": self.pos.global_step,
            "train_seconds": seconds,
            "final_loss": steps[-1]["loss"] if steps else None,
            "val_top1": self.val_top1,
            "weights": str(final),
            "checkpoint": str(self.last_checkpoint.weights),
            "bad_files": bad_files,
            "dropped_clips": self.dropped_clips,
        }
        text = json.dumps(summary, indent=2).encode()
        with self._noting_kept_checkpoint():
            atomic_write(self.run_dir / "summary.json", lambda f: f.write(text))
        print(self.describe(summary), flush=True)

    def describe(self, summary: dict[str, Any]) -> str:
        lines = [
            f"trained {summary['model']}: {summary['global_step']} optimiser steps, "
            f"{summary['epochs']} of {self.cfg.train.epochs} epochs, {summary['train_seconds']:.0f}s",
        ]
        if summary["final_loss"] is not None:
            lines.append(f"  last training loss {summary['final_loss']:.4f}")
        if summary["val_top1"] is not None:
            lines.append(f"  val top-1 {summary['val_top1']:.1f}% ({self.cfg.train.val_views} views)")
        lines.append(f"  run folder {self.run_dir}: model.safetensors, metrics.jsonl, curves.png, checkpoints/")
        bad = summary["bad_files"]
        lines.append(f"  bad files: {len(bad)}, their clips replaced by other videos' clips"
                     + (f" except {summary['dropped_clips']} clips left out (no decodable replacement)"
                        if summary["dropped_clips"] else "")
                     + "".join(f"\n    {p}: {r}" for p, r in bad))
        return "\n".join(lines)
