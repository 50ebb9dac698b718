"""glibc's malloc keeping freed memory (``engine.host_memory``), on its own and as the ``sct`` command sets it.

Each case runs in a fresh interpreter: the allocator setting is process-wide and cannot be undone.
"""

import json
import os
import subprocess
import sys

import pytest

from sct.engine.host_memory import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt only")

MIB = 2**20
# A tensor above glibc's mmap ceiling (32 MiB), as SCT's first-stage activations are.
PROBE = """
import json, resource, torch
def rss():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
{setup}
before = rss()
torch.ones(16 * 2**20)  # 64 MiB, written and freed
kept = rss() - before
for _ in range(2):  # the heap settles within the first allocations
    torch.ones(16 * 2**20)
start = faults()
for _ in range(5):
    torch.ones(16 * 2**20)
print(json.dumps({{"applied": applied, "kept": kept, "faults": faults() - start}}))
"""


def _probe(setup: str, **env) -> dict:
    code = PROBE.format(setup=setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.splitlines()[-1])


KEEP = "from sct.engine.host_memory import keep_freed_memory\napplied = keep_freed_memory()"
CLI = "import tempfile\nfrom sct.cli import main\nmain(['runs', tempfile.mkdtemp()])\napplied = None"


def test_default_allocator_returns_a_large_tensor_to_the_system():
    result = _probe("applied = False")
    assert result["kept"] < 16 * MIB
    assert result["faults"] >= 5 * 16384 * 0.9


def test_kept_memory_serves_the_next_tensor_without_page_faults():
    result = _probe(KEEP)
    assert result["applied"] is True
    assert result["kept"] >= 60 * MIB
    # 64 MiB of fresh 4 KiB pages is 16,384 faults: five such tensors reuse the first one's pages.
    assert result["faults"] < 16384


def test_opting_out_leaves_the_allocator_alone():
    result = _probe(KEEP, SCT_SYSTEM_MALLOC="1")
    assert result["applied"] is False
    assert result["kept"] < 16 * MIB


def test_the_sct_command_keeps_freed_memory():
    assert _probe(CLI)["kept"] >= 60 * MIB
    assert _probe(CLI, SCT_SYSTEM_MALLOC="1")["kept"] < 16 * MIB
