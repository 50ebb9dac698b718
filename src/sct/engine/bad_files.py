"""Bad files across the processes of a ``torchrun`` run: one global count, one global list, one decision.

Each process finds bad files only in the videos it reads. At every check point (each optimiser step in
training, each batch that every process has in evaluation) the processes exchange what they found since
the last one, so every process holds the same global set, then each applies ``max_bad_fraction`` to
it: all processes stop together, at the same point, with the same :class:`DataQualityError`, instead
of one stopping and the others failing in their next collective. In a single process the exchange is a
no-op and only the limit is applied.
"""

from __future__ import annotations

import torch

from sct.data.datasets import BadFileTracker
from sct.engine import distributed


def share(tracker: BadFileTracker, device: torch.device) -> None:
    """Give every process the bad files any process found since the last call, then apply the limit.

    Every process must call it at the same point; ``device`` is where the collective's tensor lives
    (NCCL reduces CUDA tensors only).
    """
    new = tracker.take_unshared()
    found = distributed.all_reduce_sum(torch.tensor([len(new)], dtype=torch.int64, device=device))
    if distributed.is_distributed() and found.item():
        for part in distributed.all_gather_objects(new):
            tracker.merge(part)
    tracker.check()
