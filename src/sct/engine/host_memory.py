"""Host memory: let glibc's malloc keep the memory of freed tensors for the next ones.

glibc serves every allocation above its mmap ceiling (32 MiB on 64-bit Linux, however its threshold is
set) with pages freshly mapped from the kernel, and unmaps them on free. SCT's first-stage activations
are above it (8 frames x 3,136 tokens x 384 channels is 38.5 MB), so a CPU forward and backward pass
fault in, zero and unmap every such tensor again, every step. Measured on a 2-core machine (a VM, where a
fresh page can cost a trip to the host), SCT-S's training step at 8x224 became 1.08x faster in the median at
batch 1 and 1.23x at batch 4 (X-ViT 1.02x / 1.14x), for 1.18x the peak resident memory at batch 4: the
heap holds what it freed, and fragments (docs/benchmarks.md, "Training speed and memory").
Serving all allocations from the heap and never trimming it removes that cost; the process keeps its
peak memory resident instead of returning it between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Opting out: set to 1 to leave the C library's allocator as it is.
OPT_OUT = "SCT_SYSTEM_MALLOC"


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap (``M_MMAP_MAX = 0``) and never trim it (``M_TRIM_THRESHOLD``).

    Returns whether the setting took effect: False on other C libraries (macOS, musl, Windows), or when
    the environment sets ``SCT_SYSTEM_MALLOC=1``. Affects allocations made after the call, in this process
    and the processes it forks (data-loader workers).
    """
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    trim = ctypes.c_int(2**31 - 1)  # the largest value mallopt takes: in effect, never trim
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
