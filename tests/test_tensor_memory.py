"""The tensor-memory ledger: peak bytes of the storages made inside the block, and who made them."""

import torch

from sct.analysis.tensor_memory import TensorMemory


def test_peak_counts_what_is_alive_at_once_and_names_its_makers():
    # Weights of 1 MiB: their transposes (views) made inside the block must not count as new memory.
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    x = torch.randn(1024, 256)  # made before the block: not counted
    names = {m: n for n, m in model.named_modules()}
    with TensorMemory(names) as memory:
        out = model(x)
    hidden = 1024 * 1024 * 4
    # The first Linear's output and GELU's output are both held (autograd keeps them for backward).
    assert memory.at_peak["0: addmm"] == hidden and memory.at_peak["1: gelu"] == hidden
    assert memory.peak == sum(memory.at_peak.values()) == 2 * hidden + out.numel() * 4
    with TensorMemory(names) as memory:
        out.sum().backward()
    # No forward pass ran inside this block: the backward pass's tensors are made "after nothing".
    assert memory.peak >= hidden and all(label.startswith("after nothing") for label in memory.at_peak)


def test_freed_tensors_leave_the_ledger_and_small_ones_are_not_followed():
    with TensorMemory() as memory:
        for _ in range(10):
            torch.ones(1 << 20)  # 4 MiB, dropped at once
        kept = [torch.ones(1000) for _ in range(100)]  # 4 kB each, under min_bytes
    assert memory.peak == 4 << 20 and len(kept) == 100
    with TensorMemory(min_bytes=0) as memory:
        kept = [torch.ones(1000) for _ in range(100)]
    assert memory.peak == 100 * 4000
