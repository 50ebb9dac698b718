"""LSH attention speed and peak memory: ours vs Hugging Face's Reformer ``LSHSelfAttention`` vs dense SDPA.

Same configuration for all three: batch 1, H=4 heads, d_h=64, 2 hash rounds, chunk 64, one chunk of
look-back, float32, forward pass without autograd. ``n_buckets`` is Hugging Face's whole rule for L (with
``max_position_embeddings = L``): the power of two at or below ``2 L / 64``, split into two factors
(:func:`sct.models.attention.lsh.factorised`) above ``2 * max(sqrt(L / 64), 64)``; the same buckets are
passed explicitly to both LSH implementations. ``hf1`` is the reference again with the power of two as
one factor, the unfactorised hashing this table used before. What is timed is the attention itself on
already-projected heads ``(B, H, L, d_h)``:
the reference's query/key and value projections are replaced by identities, so no method pays for
projections. Times are the best of ``--repeats`` calls, the methods interleaved within one run,
so their ratios are fair on a noisy machine.

Peak memory: each (method, L) runs in a fresh Python process that builds its inputs and warms up at a
small L, returns freed heap to the OS (``malloc_trim``), resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs one call and reads ``VmHWM - VmRSS(before)``: the extra resident
memory the call needed at its peak (its output included, its inputs not). glibc serves allocations of
256 KiB or more by mmap in these processes, so freed tensors leave the resident set at once. Linux only.

    .venv/bin/python benchmarks/lsh.py                   # full table, writes docs/benchmarks.md + PNG
    .venv/bin/python benchmarks/lsh.py --lengths 1024 4096 --repeats 2 --no-doc
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sct.analysis.hardware import describe_machine, matmul_gflops
from sct.analysis.report import markdown_table, update_doc_section
from sct.models.attention.lsh import bucket_count, default_n_buckets, factorised, lsh_attention, random_rotations

ROOT = Path(__file__).resolve().parents[1]

HEADS, DIM_HEAD, N_HASHES, CHUNK = 4, 64, 2, 64
TABLE_LENGTHS = [1024, 3136, 4096, 12544, 16384]
# Shorter lengths, timed only to locate the crossover with dense attention.
CROSSOVER_LENGTHS = [128, 256, 512]
METHODS = ("ours", "hf", "hf1", "sdpa")
LABELS = {"before": "ours, before (--before)", "ours": "ours (sct)", "hf": "Hugging Face Reformer",
          "hf1": "Hugging Face, buckets unfactorised", "sdpa": "dense SDPA"}
# Functions of sct.models.attention.lsh whose time the breakdown reports, in the order a call runs them.
STAGES = {"hash_vectors": "hashing", "sort_by_bucket": "sort", "_gather_block": "gathers of the blocks' rows",
          "_attend": "attention kernel (fused CPU flash attention)", "_merge_round": "un-sort and merge of rounds"}


def hf_buckets(seq_len: int) -> int | tuple[int, int]:
    """Hugging Face's ``_set_num_buckets`` for ``max_position_embeddings = seq_len``: factorised above its limit."""
    n_buckets = default_n_buckets(seq_len, CHUNK)
    limit = 2 * max(int((seq_len // CHUNK) ** 0.5), CHUNK)
    return factorised(n_buckets) if n_buckets > limit else n_buckets


def _bucket_label(n_buckets: int | tuple[int, ...]) -> str:
    if isinstance(n_buckets, int):
        return str(n_buckets)
    return f"{bucket_count(n_buckets)} = {' x '.join(map(str, n_buckets))}"


# ``lsh_attention`` of the source tree given by ``--before``, once imported (see :func:`import_before`).
_BEFORE: dict[str, Callable] = {}


def import_before(ref: str, into: Path) -> None:
    """Import ``lsh_attention`` of git ``ref`` beside this checkout's: its ``lsh.py`` and ``lsh_hashing.py``
    (exported under ``into``), everything else they import from this checkout."""
    import importlib.util

    from training_speed import export_tree

    src = export_tree(ref, into) / "sct" / "models" / "attention"

    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    hashing = "sct.models.attention.lsh_hashing"
    current = sys.modules[hashing]
    try:
        if (src / "lsh_hashing.py").exists():
            load(hashing, src / "lsh_hashing.py")  # bound into the old lsh.py by its own imports
        _BEFORE["lsh_attention"] = load("lsh_before", src / "lsh.py").lsh_attention
    finally:
        sys.modules[hashing] = current


def make_case(method: str, seq_len: int) -> Callable[[], torch.Tensor]:
    """A no-argument callable running ``method`` once on fresh inputs ``(1, H, L, d_h)``."""
    x = torch.randn(1, HEADS, seq_len, DIM_HEAD, generator=torch.Generator().manual_seed(seq_len))
    n_buckets = default_n_buckets(seq_len, CHUNK) if method == "hf1" else hf_buckets(seq_len)
    if method in ("ours", "before"):
        attention = lsh_attention if method == "ours" else _BEFORE["lsh_attention"]
        rotations = random_rotations(HEADS, DIM_HEAD, N_HASHES, n_buckets, torch.Generator().manual_seed(0))
        return lambda: attention(x, x, n_hashes=N_HASHES, n_buckets=n_buckets, chunk_length=CHUNK,
                                 rotations=rotations)
    if method in ("hf", "hf1"):
        layer = _hf_layer(n_buckets if isinstance(n_buckets, int) else list(n_buckets))
        hidden = x.transpose(1, 2).reshape(1, seq_len, HEADS * DIM_HEAD)
        return lambda: layer(hidden).hidden_states
    if method == "sdpa":
        return lambda: F.scaled_dot_product_attention(x, x, x)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _hf_layer(n_buckets: int | list[int]) -> torch.nn.Module:
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention
    from transformers.utils import logging

    logging.set_verbosity_error()
    config = ReformerConfig(
        hidden_size=HEADS * DIM_HEAD, num_attention_heads=HEADS, attention_head_size=DIM_HEAD,
        num_hashes=N_HASHES, num_buckets=n_buckets, lsh_attn_chunk_length=CHUNK, lsh_num_chunks_before=1,
        lsh_num_chunks_after=0, attn_layers=["lsh"], is_decoder=False, lsh_attention_probs_dropout_prob=0.0,
    )
    layer = LSHSelfAttention(config).eval()
    layer.query_key = torch.nn.Identity()
    layer.value = torch.nn.Identity()
    return layer


@torch.no_grad()
def time_all(lengths: list[int], repeats: int, methods: tuple[str, ...]) -> dict[tuple[str, int], float]:
    """Best-of-``repeats`` seconds per (method, L); methods interleaved per repeat."""
    times = {}
    for seq_len in lengths:
        cases = {m: make_case(m, seq_len) for m in methods}
        for fn in cases.values():
            fn()  # warm-up
        best = dict.fromkeys(methods, math.inf)
        for _ in range(repeats):
            for method, fn in cases.items():
                start = time.perf_counter()
                fn()
                best[method] = min(best[method], time.perf_counter() - start)
        for method in methods:
            times[method, seq_len] = best[method]
        print(f"L={seq_len:6d}  " + "  ".join(f"{m} {best[m] * 1e3:9.1f} ms" for m in methods), flush=True)
    return times


@torch.no_grad()
def breakdown(seq_len: int, repeats: int) -> tuple[dict[str, float], float]:
    """Mean seconds per call that ours spends in each of :data:`STAGES` at ``seq_len``, and per whole call.

    The stages are timed by wrapping the module's functions for the duration of this measurement.
    """
    from sct.models.attention import lsh as module

    spent = dict.fromkeys(STAGES, 0.0)
    originals = {name: getattr(module, name) for name in STAGES}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return result
        return wrapper

    try:
        for name in STAGES:
            setattr(module, name, timed(name, originals[name]))
        fn = make_case("ours", seq_len)
        fn()
        spent.update(dict.fromkeys(STAGES, 0.0))
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        total = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(module, name, original)
    return {name: seconds / repeats for name, seconds in spent.items()}, total / repeats


@torch.no_grad()
def hf_matmul_share(seq_len: int) -> tuple[float, float]:
    """Seconds of one Hugging Face call spent in matrix products (``bmm`` / ``mm``, profiled), and in all ops."""
    fn = make_case("hf", seq_len)
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::bmm", "aten::mm"))
    return matmul / 1e6, sum(e.self_cpu_time_total for e in events) / 1e6


def _resident_kib(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


@torch.no_grad()
def _memory_child(method: str, seq_len: int) -> None:
    make_case(method, 256)()  # load kernels and thread pools before the baseline
    fn = make_case(method, seq_len)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the call's pages are new ones
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to the current one
    before = _resident_kib("VmRSS")
    out = fn()
    peak = _resident_kib("VmHWM")
    del out
    print(json.dumps({"peak_bytes": (peak - before) * 1024}))


def peak_memory(method: str, seq_len: int, threads: int) -> int:
    """Extra peak resident memory (bytes) of one call, measured in a fresh process."""
    command = [sys.executable, __file__, "--memory-child", method, str(seq_len), "--threads", str(threads)]
    # Serve every allocation of 256 KiB or more by mmap, so a freed tensor leaves the resident set at once and
    # the peak counts live tensors rather than the heap fragmentation of whichever method ran.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(256 * 1024)}
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def crossover(lengths: list[int], ours: list[float], dense: list[float]) -> float | None:
    """First L where ours becomes faster than dense, interpolated in log-log; None if it never does."""
    points = list(zip(lengths, ours, dense, strict=True))
    for (l0, a0, b0), (l1, a1, b1) in zip(points, points[1:], strict=False):
        if a0 >= b0 and a1 < b1:
            d0, d1 = math.log(a0 / b0), math.log(a1 / b1)
            return math.exp(math.log(l0) + (math.log(l1) - math.log(l0)) * d0 / (d0 - d1))
    if points and points[0][1] < points[0][2]:
        return float(points[0][0])  # already faster at the shortest length measured
    return None


def growth_per_doubling(lengths: list[int], seconds: list[float]) -> float:
    """``2 ** slope`` of the least-squares line through (log2 L, log2 t)."""
    xs, ys = [math.log2(n) for n in lengths], [math.log2(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return 2**slope


def plot(lengths, times, memory, crossover_lengths, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    all_lengths = sorted(set(lengths) | set(crossover_lengths))
    for method in LABELS:
        if (method, all_lengths[0]) in times:
            ax_t.plot(all_lengths, [times[method, n] * 1e3 for n in all_lengths], "o-", label=LABELS[method])
    for method in METHODS:
        ax_m.plot(lengths, [memory[method, n] / 2**20 for n in lengths], "o-", label=LABELS[method])
    for ax, ylabel in ((ax_t, "forward time (ms)"), (ax_m, "extra peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_t.set_title(f"LSH attention, H={HEADS}, d_h={DIM_HEAD}, {N_HASHES} hashes, chunk {CHUNK}")
    ax_m.set_title("peak resident memory of one call")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _breakdown_lines(seq_len: int, stages: dict[str, float], total: float, hf_time: float,
                     hf_profile: tuple[float, float], matmul_rate: float) -> list[str]:
    """Where ours spends its time at ``seq_len`` against the reference's matrix products."""
    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.1f}"

    parts = [f"{STAGES[name]} {ms(seconds)} ms ({seconds / total:.0%})" for name, seconds in stages.items()]
    rest = total - sum(stages.values())
    flop = 4 * HEADS * N_HASHES * seq_len * 2 * CHUNK * DIM_HEAD
    kernel = stages["_attend"]
    hf_matmul, hf_profiled = hf_profile
    return [
        f"- Where ours spends its time at L={seq_len} (mean of timed calls after the table, {ms(total)} ms per call): "
        + "; ".join(parts) + f"; the rest (slot bookkeeping, Python) {ms(rest)} ms ({rest / total:.0%}). The kernel "
        f"does the {flop / 1e9:.1f} GFLOP of the windows' two products at {flop / kernel / 1e9:.0f} GFLOP/s, "
        f"{flop / kernel / 1e9 / matmul_rate:.0%} of a 2048 x 2048 matmul's rate in this run ({matmul_rate:.0f} "
        f"GFLOP/s, one thread): at that rate the products alone would take {ms(flop / matmul_rate / 1e9)} ms.",
        f"- Hugging Face spends {hf_matmul / hf_profiled:.0%} of a profiled call in matrix products "
        f"({ms(hf_matmul)} of {ms(hf_profiled)} ms), the same products our kernel does plus the hashing. 8x its "
        f"time in the table is {ms(hf_time / 8)} ms; our attention kernel alone took {ms(kernel)} ms, so 8x needs "
        "that kernel faster (it already runs the windows in cache-sized blocks) as well as the rest of the call "
        "close to nothing.",
    ]


def _before_lines(lengths: list[int], times: dict[tuple[str, int], float], ref: str) -> list[str]:
    """Before (git ``ref``'s code) and after, from the same interleaved run."""
    rows = [[n, f"{times['before', n] * 1e3:.1f}", f"{times['ours', n] * 1e3:.1f}",
             f"{times['before', n] / times['ours', n]:.2f}x", f"{times['hf', n] / times['before', n]:.2f}x",
             f"{times['hf', n] / times['ours', n]:.2f}x"] for n in lengths]
    return ["", f"Before and after, timed in the same run: `--before {ref}` imports that commit's `lsh.py` and "
            "`lsh_hashing.py` into this process and interleaves their calls with the others.", "",
            markdown_table(["L", "before ms", "ours ms", "speed-up", "HF / before", "HF / ours"], rows)]


def report(lengths, times, memory, cross_at, growth, plot_name: str, breakdown_lines: list[str],
           load: tuple[float, float], before_ref: str | None = None) -> str:
    ms, mib = (lambda s: f"{s * 1e3:.1f}"), (lambda b: f"{b / 2**20:.1f}")
    rows = [[n, _bucket_label(hf_buckets(n)), ms(times["ours", n]), ms(times["hf", n]), ms(times["hf1", n]),
             ms(times["sdpa", n]), f"{times['hf', n] / times['ours', n]:.2f}x",
             f"{times['hf1', n] / times['ours', n]:.2f}x", f"{times['sdpa', n] / times['ours', n]:.2f}x",
             mib(memory["ours", n]), mib(memory["hf", n]), mib(memory["sdpa", n]),
             f"{memory['ours', n] / max(memory['sdpa', n], 1):.2f}x"] for n in lengths]
    table = markdown_table(["L", "n_buckets", "ours ms", "HF ms", "HF unfactorised ms", "SDPA ms", "HF / ours",
                            "HF unfactorised / ours", "SDPA / ours", "ours MiB", "HF MiB", "SDPA MiB",
                            "ours / SDPA mem"], rows)
    longest = lengths[-1]
    last_doubling = (times["ours", longest] / times["ours", longest // 4]) ** 0.5 if longest // 4 in lengths else None
    cross = "never within the lengths measured" if cross_at is None else f"L ≈ {cross_at:.0f}"
    lines = [
        f"Machine: {describe_machine()}. Batch 1, H={HEADS}, d_h={DIM_HEAD}, {N_HASHES} hash rounds, chunk "
        f"{CHUNK} with one chunk of look-back, float32 forward without autograd. Time = best of several "
        "interleaved calls; memory = extra peak resident set of one call in a fresh process (output included). "
        f"Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end, on {os.cpu_count()} cores.",
        "Each method attends on the same projected heads (the reference's projections are identities). "
        "`n_buckets` follows Hugging Face's rule, factorised above its limit, and the same buckets are given to "
        "both LSH implementations; \"HF unfactorised\" is the reference with the power of two as one factor "
        "(what this table compared against before the factorised hashing).",
        f"Reproduce: `.venv/bin/python benchmarks/lsh.py --threads {torch.get_num_threads()}"
        + ("" if lengths == TABLE_LENGTHS else f" --lengths {' '.join(map(str, lengths))}")
        + ("" if before_ref is None else f" --before {before_ref}") + "`."
        + (" One torch thread because the two cores were shared with other jobs during the run: with two threads "
           "on a busy machine every OpenMP region waits for a time slice, which distorts code made of many small "
           "operations (ours, block by block) far more than a few large ones." if torch.get_num_threads() == 1
           else ""),
        "",
        table,
        "",
        f"- At L={longest}: ours is **{times['hf', longest] / times['ours', longest]:.2f}x** faster than Hugging "
        f"Face with the same buckets (target >= 8x; "
        f"{times['hf1', longest] / times['ours', longest]:.2f}x its unfactorised hashing) and "
        f"**{times['sdpa', longest] / times['ours', longest]:.2f}x** faster than dense "
        f"SDPA (target >= 4x); its peak memory is **{memory['ours', longest] / max(memory['sdpa', longest], 1):.2f}x**"
        " dense SDPA's (target <= 2x).",
        f"- Time growth per doubling of L (log-log fit over {lengths[0]}..{longest}): **{growth:.2f}x** "
        "(target <= 2.3x)" + (f"; from L={longest // 4} to {longest}: {last_doubling:.2f}x per doubling."
                              if last_doubling else "."),
        f"- Crossover where LSH becomes faster than dense SDPA: {cross} (also timed at "
        f"{', '.join(map(str, CROSSOVER_LENGTHS))}).",
        "- Hashing: one factor costs O(L · n_buckets), quadratic in L when `n_buckets` grows with L; factors "
        "`(n1, n2)` cost O(L · (n1 + n2)) = O(L · sqrt(n_buckets)), and more factors (e.g. all 2s) O(L log "
        "n_buckets). Memory stays O(L): the rotated vectors are made a block of rows at a time.",
        *breakdown_lines,
        *([] if before_ref is None else _before_lines(lengths, times, before_ref)),
        "",
        f"![LSH attention time and memory]({plot_name})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=TABLE_LENGTHS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "lsh_attention.png")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing docs/")
    parser.add_argument("--before", metavar="REF", help="also time the LSH attention of git REF (imported into "
                        "this process, calls interleaved with the others') for a before/after table")
    parser.add_argument("--memory-child", nargs=2, metavar=("METHOD", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    lengths = sorted(args.lengths)
    load_start = os.getloadavg()[0]
    methods = METHODS
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            import_before(args.before, Path(tmp))
        methods = ("before", *METHODS)
    times = time_all(sorted(set(CROSSOVER_LENGTHS) | set(lengths)), args.repeats, methods)
    memory = {}
    for n in lengths:
        for method in METHODS:
            memory[method, n] = peak_memory(method, n, args.threads)
        print(f"L={n:6d}  " + "  ".join(f"{m} {memory[m, n] / 2**20:7.1f} MiB" for m in METHODS), flush=True)
    all_lengths = sorted(set(CROSSOVER_LENGTHS) | set(lengths))
    cross_at = crossover(all_lengths, [times["ours", n] for n in all_lengths],
                         [times["sdpa", n] for n in all_lengths])
    growth = growth_per_doubling(lengths, [times["ours", n] for n in lengths])
    longest = lengths[-1]
    stages, total = breakdown(longest, args.repeats)
    breakdown_text = _breakdown_lines(longest, stages, total, times["hf", longest], hf_matmul_share(longest),
                                      matmul_gflops())
    print("\n".join(breakdown_text), flush=True)
    section = report(lengths, times, memory, cross_at, growth, args.plot.name, breakdown_text,
                     (load_start, os.getloadavg()[0]), args.before)
    if args.no_doc:
        print(section)
        return 0
    plot(lengths, times, memory, CROSSOVER_LENGTHS, args.plot)
    update_doc_section(args.doc, "lsh", section, title="LSH attention (ours vs Hugging Face Reformer vs dense SDPA)")
    print(f"wrote {args.doc} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
