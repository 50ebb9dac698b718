"""Peak tensor memory of a piece of work, counted from the storages PyTorch's operators create."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorBytes(TorchDispatchMode):
    """Inside ``with PeakTensorBytes() as memory:``, ``memory.peak`` is the most bytes held at once, after any
    operator, by the storages the operators made inside the block (what existed before, parameters
    included, is not counted). Storages are followed through weak references, so a tensor kept only by
    autograd's graph counts until autograd frees it."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[int, int]] = {}  # data pointer -> (weak reference, bytes)
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key, (ref, _) in list(self.live.items()):
            if torch.UntypedStorage._expired(ref):
                torch.UntypedStorage._free_weak_ref(ref)
                del self.live[key]
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in self.live:
                storage = tensor.untyped_storage()
                self.live[storage.data_ptr()] = (storage._weak_ref(), storage.nbytes())
        self.peak = max(self.peak, sum(size for _, size in self.live.values()))
        return out
