"""Multi-process data parallelism under ``torchrun`` and the deterministic data sharding the engine uses.

``torchrun --nproc_per_node N -m sct train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` joins the process group (gloo on CPU, NCCL on CUDA). Without those variables everything
runs in one process and the collectives below are no-ops.

The samplers here replace ``DistributedSampler``: the order of a training epoch is a pure function of
``(seed, epoch)``, optimiser step ``j`` consumes the ``j``-th block of ``batch_size`` samples of that
order whatever the number of processes, and a sampler can start at any step. That is what makes a
2-process run follow the 1-process trajectory and a resumed run continue exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from sct.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ``ConfigError``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one; return this process's rank and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistContext(rank, world_size, local_rank, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes, in place; identity in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of training items for ``epoch``: a pure function of ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


@dataclasses.dataclass
class TrainBatchSampler:
    """Micro-batches of indices for one process, one epoch, from optimiser step ``start_step`` on.

    Step ``j`` uses items ``order[j*B:(j+1)*B]`` (``B`` = global batch); process ``r`` of ``W`` takes the
    ``r``-th contiguous ``B/W`` of them and yields them as ``accum_steps`` micro-batches. The incomplete
    last global batch is dropped so every step averages over the same number of samples.
    """

    num_items: int
    batch_size: int
    accum_steps: int
    seed: int
    epoch: int
    rank: int = 0
    world_size: int = 1
    start_step: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.world_size * self.accum_steps)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.num_items, self.seed, self.epoch).tolist()
        share, micro = self.batch_size // self.world_size, self.micro_batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            begin = step * self.batch_size + self.rank * share
            for k in range(self.accum_steps):
                yield order[begin + k * micro : begin + (k + 1) * micro]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """Contiguous, non-overlapping evaluation shard of process ``rank``: every item exactly once overall."""
    per, extra = divmod(num_items, world_size)
    begin = rank * per + min(rank, extra)
    return list(range(begin, begin + per + (rank < extra)))


def accumulation_steps(batch_size: int, micro_batch_size: int | None, world_size: int) -> int:
    """How many micro-batches each process accumulates per optimiser step; ``ConfigError`` if uneven."""
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} is not divisible by the {world_size} processes")
    share = batch_size // world_size
    micro = micro_batch_size or share
    if share % micro:
        raise ConfigError(
            f"train.micro_batch_size={micro} does not divide the per-process batch {share} "
            f"(train.batch_size={batch_size} over {world_size} processes)"
        )
    return share // micro


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistContext]:
    """:func:`setup` for the duration of a ``with`` block; leaves a process group it did not create alone."""
    owned = not dist.is_initialized()
    ctx = setup(device)
    try:
        yield ctx
    finally:
        if owned:
            cleanup()
