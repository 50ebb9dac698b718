"""WebDataset-layout tar shards: ``KEY.jpg|jpeg|png|webp`` + ``KEY.cls`` (the label id) per sample.

``data.format: shards`` with ``data.train: shards/train-{000000..000999}.tar`` (a brace range, relative to
``data.root``). The shards are indexed once per run (tar headers and the tiny ``.cls`` members), which
checks every label against the class list (``data.classes`` or ``root/classes.txt``, required) and
refuses empty shards, naming the file.

Training reads the shards sequentially (:class:`ShardStream`): the epoch's shard order is a permutation
drawn from ``(seed, epoch)``; the concatenated sample sequence is cut into ``ranks x workers`` equal
contiguous runs, so each sample is read once per epoch by one loader worker of one process (the last
``N mod (ranks x workers)`` samples of the epoch's order wait for the next epoch); each worker opens only
the shards its run overlaps, reads them front to back, and shuffles through a buffer of
``data.shuffle_buffer`` samples. Validation and testing index members by byte offset and read them as
a map-style dataset (:class:`ShardImageDataset`), so ``sct eval`` shards them over processes as usual.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sct.data.annotations import Annotations
from sct.data.image_dataset import ImageDataset
from sct.data.images import IMAGE_SUFFIXES, augment_image, decode_boxes, train_boxes
from sct.errors import AnnotationError, ConfigError, VideoDecodeError

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``train-{000..002}.tar`` -> ``[train-000.tar, train-001.tar, train-002.tar]`` (zero padding kept;
    several ranges expand as a product)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    lo, hi = match[1], match[2]
    if int(hi) < int(lo):
        raise ConfigError(f"shard pattern {pattern!r}: empty range {{{lo}..{hi}}}")
    width = len(lo)
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [name for i in range(int(lo), int(hi) + 1) for name in expand_braces(f"{head}{i:0{width}d}{tail}")]


@dataclass(frozen=True)
class Member:
    """One sample: its image's byte range in ``shard`` and its label."""

    shard: str
    key: str
    offset: int
    size: int
    label: int

    @property
    def name(self) -> str:
        return f"{self.shard}:{self.key}"

    def read(self, handle) -> bytes:
        handle.seek(self.offset)
        return handle.read(self.size)


# One read call per this many bytes of a shard: on a network file system every call is a round trip.
READ_BLOCK = 4 << 20


def read_members(members: Iterable[Member]) -> Iterator[tuple[Member, bytes]]:
    """Each member's image bytes, in the given order. A run of members of one shard in file order is read
    front to back in ``READ_BLOCK`` blocks (one open per run, the kernel told the access is sequential), so
    the tar headers and labels between images cost no extra call."""
    handle, current, block, start = None, None, b"", 0
    try:
        for member in members:
            if member.shard != current:
                if handle is not None:
                    handle.close()
                handle, current, block, start = _open_sequential(member.shard), member.shard, b"", 0
            lo = member.offset - start
            if lo < 0 or lo + member.size > len(block):
                handle.seek(member.offset)
                block, start, lo = handle.read(max(READ_BLOCK, member.size)), member.offset, 0
            yield member, block[lo:lo + member.size]
    finally:
        if handle is not None:
            handle.close()


def _open_sequential(path: str):
    handle = open(path, "rb", buffering=0)
    if hasattr(os, "posix_fadvise"):
        # Doubles the kernel's read-ahead for this file: the next block is already on its way.
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return handle


def index_shard(path: Path, num_classes: int) -> list[Member]:
    """The samples of one shard, in file order; bad labels, lone members and empty shards raise."""
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, ext = info.name.partition(".")
                if f".{ext.lower()}" in IMAGE_SUFFIXES:
                    images[key] = (info.offset_data, info.size)
                elif ext == "cls":
                    labels[key] = _label(tar.extractfile(info).read(), path, key, num_classes)
    except (tarfile.TarError, OSError) as err:
        raise AnnotationError(f"{path}: not a readable tar shard ({err})") from None
    if not images:
        raise AnnotationError(f"{path}: empty shard (no {'/'.join(IMAGE_SUFFIXES)} members)")
    lone = sorted(images.keys() ^ labels.keys())
    if lone:
        raise AnnotationError(f"{path}: sample {lone[0]} has {'no .cls label' if lone[0] in images else 'no image'}"
                              f" ({len(lone)} incomplete sample(s))")
    return [Member(str(path), key, *images[key], labels[key]) for key in images]


def _label(data: bytes, path: Path, key: str, num_classes: int) -> int:
    text = data.decode("utf-8", errors="replace").strip()
    if not re.fullmatch(r"\d+", text):
        raise AnnotationError(f"{path}: {key}.cls holds {text[:20]!r}, not a label id")
    label = int(text)
    if label >= num_classes:
        raise AnnotationError(f"{path}: {key}.cls: label {label} outside 0..{num_classes - 1} "
                              f"({num_classes} classes in the class list)")
    return label


def index_shards(pattern: str, root: Path, num_classes: int) -> list[list[Member]]:
    """Every shard of ``pattern`` (relative to ``root``), indexed; a missing shard raises naming it."""
    paths = [Path(p) if Path(p).is_absolute() else root / p for p in expand_braces(pattern)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AnnotationError(f"shard(s) not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return [index_shard(p, num_classes) for p in paths]


class ShardImageDataset(ImageDataset):
    """Map-style access to shard members by byte offset (validation and test splits)."""

    def __init__(self, members: list[Member], class_names: list[str], cfg, split: str):
        super().__init__(Annotations([m.name for m in members], [m.label for m in members], class_names), cfg, split)
        self.members = members
        self._handle: tuple[str | None, object] = (None, None)

    def source(self, index: int) -> bytes:
        member = self.members[index]
        if self._handle[0] != member.shard:
            if self._handle[1] is not None:
                self._handle[1].close()
            self._handle = (member.shard, open(member.shard, "rb"))
        return member.read(self._handle[1])

    def __getstate__(self) -> dict:
        # File handles stay in the process that opened them; a loader worker opens its own.
        return {**self.__dict__, "_handle": (None, None)}


class ShardStream(IterableDataset):
    """Sequential, shuffled training reads over shards, split across ranks and loader workers (see above).

    Yields the same item dicts as :class:`ImageDataset` training items, ``index`` being the sample id (see
    :meth:`_run`). ``set_epoch`` picks the epoch; ``skip_batches`` drops the first micro-batches of this
    rank's stream without decoding them (resume).
    """

    def __init__(self, shards: list[list[Member]], class_names: list[str], cfg, *, rank: int = 0,
                 world_size: int = 1, micro_batch: int = 1):
        self.shards, self.class_names, self.cfg = shards, list(class_names), cfg
        self.rank, self.world_size, self.micro_batch = rank, world_size, micro_batch
        self.epoch, self.skip_batches = 0, 0
        self.train = True

    @property
    def num_videos(self) -> int:
        """Samples per epoch (the name the engine's bad-file accounting uses)."""
        return sum(len(s) for s in self.shards)

    def __len__(self) -> int:
        return self.num_videos

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches_per_worker(self, num_workers: int) -> int:
        """Full micro-batches each loader worker yields per epoch."""
        slots = self.world_size * max(num_workers, 1)
        return self.num_videos // slots // self.micro_batch

    def _run(self, slot: int, slots: int) -> list[tuple[int, Member]]:
        """``(sample id, member)`` of ``slot``'s contiguous run of the epoch's shard order; the id is the
        sample's position in the shard list as given (shards in pattern order, members in file order)."""
        order = np.random.default_rng([self.cfg.seed, self.epoch]).permutation(len(self.shards))
        first = np.cumsum([0] + [len(s) for s in self.shards])
        per_slot = self.num_videos // slots
        start, members, seen = slot * per_slot, [], 0
        for s in order:
            shard = self.shards[s]
            lo, hi = max(start - seen, 0), min(start + per_slot - seen, len(shard))
            members += [(int(first[s]) + j, shard[j]) for j in range(lo, hi)]
            seen += len(shard)
        return members

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The loader takes batches from its workers in turn, starting with worker 0; after skipping m
        # batches, worker w must produce what worker (w + m) mod W would have.
        virtual = (worker + self.skip_batches) % workers
        slot, slots = self.rank * workers + virtual, self.world_size * workers
        members = self._run(slot, slots)[: self.batches_per_worker(workers) * self.micro_batch]
        skip = max(0, -(-(self.skip_batches - virtual) // workers)) * self.micro_batch
        rng = np.random.default_rng([self.cfg.seed, self.epoch, slot])
        for count, (sample, member, data, pool) in enumerate(self._shuffled(members, rng)):
            if count >= skip:
                yield self._item(sample, member, data, pool, slot, count)

    def _shuffled(self, members: list[tuple[int, Member]], rng: np.random.Generator):
        """``(sample id, member, bytes, buffer)`` in buffer-shuffled order, reading each shard front to back."""
        buffer: list[tuple[int, Member, bytes]] = []
        for (sample, _), (member, data) in zip(members, read_members(m for _, m in members)):
            buffer.append((sample, member, data))
            if len(buffer) >= self.cfg.shuffle_buffer:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield (*buffer.pop(), buffer)
        for j in rng.permutation(len(buffer)):
            yield (*buffer[j], buffer)

    def _item(self, sample: int, member: Member, data: bytes, pool: list, slot: int, count: int) -> dict:
        """The training item of sample ``sample`` (``member``); a bad image is replaced by a random sample of
        the buffer (the item keeps ``sample`` as its ``index``, as map-style datasets keep theirs)."""
        bad = []
        for attempt in range(self.cfg.max_replacements + 1):
            seq = np.random.SeedSequence([self.cfg.seed, self.epoch, slot, count, attempt])
            gen = torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
            try:
                [crop] = decode_boxes(data, member.name, train_boxes(self.cfg, gen), self.cfg.crop_size,
                                      self.cfg.jpeg_draft)
            except VideoDecodeError as err:
                bad.append((member.name, str(err).removeprefix(f"{member.name}: ")))
                if pool:
                    _, member, data = pool[int(np.random.default_rng(seq).integers(len(pool)))]
                continue
            return {"video": augment_image(crop, self.cfg, gen), "label": member.label, "index": sample,
                    "view": 0, "ok": True, "bad": bad}
        size = self.cfg.crop_size
        return {"video": torch.zeros(3, size, size), "label": member.label, "index": sample, "view": 0, "ok": False,
                "bad": bad}
