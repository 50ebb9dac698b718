"""Facts about the machine measured in the same run as a benchmark (so ratios are fair)."""

from __future__ import annotations

import platform
import time

import torch


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                  device: str = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s (2 n^3 FLOPs per product) of an ``n x n`` matmul on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def describe_machine() -> str:
    """One line: CPU/GPU, core count, torch version, for benchmark headers."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{gpu}, torch {torch.__version__}")
