"""Which tensors hold memory at the peak of a piece of work: a ledger of the storages PyTorch's operators make.

Unlike the process's peak resident set (``bench.PeakMemory``), this counts tensor bytes only, with no
allocator in between, and says who made each one: inside ``with TensorMemory() as memory:``, every storage
an operator creates is recorded with the module whose forward pass was running (during the backward pass:
the module last entered, i.e. the layer being recomputed, or none) and the operator's name. Storages that
existed before the block (parameters, inputs, optimiser state) are not counted.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemory(TorchDispatchMode):
    """``peak``: the most bytes held at once, after any operator, by the storages of ``min_bytes`` or more made
    inside the block (smaller ones are not followed: checking every live storage after every operator is what
    this costs); :meth:`breakdown`: those bytes by maker at that moment. ``names`` maps modules to the names
    shown (``dict(model.named_modules())`` inverted); unnamed modules show their class. Storages are followed
    through weak references, so a tensor kept only by autograd's graph counts until autograd frees it."""

    def __init__(self, names: dict[torch.nn.Module, str] | None = None, min_bytes: int = 1 << 20):
        super().__init__()
        self.names, self.min_bytes = names or {}, min_bytes
        self._live: dict[int, tuple[int, int, str]] = {}  # data pointer -> (weak reference, bytes, label)
        self._modules: list[str] = []
        self._last_module = ""
        self._hooks = []
        self.peak = 0
        self._at_peak: dict[int, tuple[int, str]] = {}

    def __enter__(self):
        self._hooks = [register_module_forward_pre_hook(self._enter_module),
                       register_module_forward_hook(self._leave_module)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def _enter_module(self, module, args):
        self._last_module = self.names.get(module, type(module).__name__)
        self._modules.append(self._last_module)

    def _leave_module(self, module, args, output):
        self._modules.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key, (ref, _, _) in list(self._live.items()):
            if torch.UntypedStorage._expired(ref):
                torch.UntypedStorage._free_weak_ref(ref)
                del self._live[key]
        where = self._modules[-1] if self._modules else f"after {self._last_module or 'nothing'}"
        # A view of an input (a weight's transpose, a slice) is no new memory, even when the input is not followed.
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if storage.nbytes() >= self.min_bytes and key not in self._live and key not in inputs:
                self._live[key] = (storage._weak_ref(), storage.nbytes(),
                                                  f"{where}: {func.overloadpacket.__name__}")
        total = sum(size for _, size, _ in self._live.values())
        if total > self.peak:
            self.peak = total
            self._at_peak = {key: (size, label) for key, (_, size, label) in self._live.items()}
        return out

    @property
    def at_peak(self) -> Counter:
        """Bytes held at the peak by maker (:meth:`breakdown` with nothing renamed)."""
        return self.breakdown()

    def breakdown(self, rename: dict[int, str] | None = None) -> Counter:
        """Bytes held at the peak by ``"module: operator"``; storages whose data pointer is in ``rename`` (e.g.
        the parameters' gradients, which outlive the block) under the name given there."""
        rename = rename or {}
        held = Counter()
        for key, (size, label) in self._at_peak.items():
            held[rename.get(key, label)] += size
        return held
