"""``sct bench``: latency, throughput, peak memory and achieved GFLOP/s of models, fairly compared.

Every model runs in a fresh Python process (``python -m sct.analysis.bench --worker SPEC``) so that
its peak memory is its own and no allocator or thread-pool state carries over; every process draws
the same inputs from the same seed, and the machine's matmul GFLOP/s is measured in the same run,
so the ratios in one table are fair. On a CPU the peak is the growth of the process's peak resident
set (``VmHWM``, reset through ``/proc/self/clear_refs``) over the forward passes; on a GPU it is
``torch.cuda.max_memory_allocated`` above the model's own memory, and timings use CUDA events.

With ``--train`` what is timed is one training step: forward, cross-entropy on fixed random labels,
backward and an AdamW step. Its GFLOP/s count a training step as three forward passes (the backward pass
costs two), whatever gradient checkpointing recomputes on top; its peak memory includes the gradients and
the optimiser's state, which the first step creates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sct.analysis.hardware import describe_machine, matmul_gflops
from sct.analysis.report import markdown_table
from sct.errors import ConfigError, SCTError
from sct.options import add_json, add_out, non_negative_int, positive_float, positive_int
from sct.outputs import check_writable_dir, writing

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass
class BenchSettings:
    """One run's protocol, identical for every model in it."""

    frames: int = 8
    size: int = 224
    batch: int = 8
    dtype: str = "fp32"
    compile: bool = False
    train: bool = False
    grad_checkpointing: bool = False
    repeats: int = 10
    warmup: int = 2
    classes: int = 400
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("frames", "size", "batch", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        if self.grad_checkpointing and not self.train:
            raise ConfigError("--grad-checkpointing only changes training: add --train")

    @property
    def flops_per_macs(self) -> int:
        """FLOPs per forward multiply-accumulate the timed work does: 2 for inference, 6 for a training step."""
        return 6 if self.train else 2


# ----------------------------------------------------------------------------- worker side


def _proc_status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{key} missing from /proc/self/status")
    return int(match.group(1))


def memory_now(device: str) -> int | None:
    """Bytes in use now: the process's resident set on CPU, the allocator's on CUDA (``None``: unknown)."""
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    try:
        return _proc_status_kib("VmRSS") * 1024
    except OSError:
        return None


class PeakMemory:
    """Peak memory (bytes) over a block of work, above ``baseline`` (the bytes in use before any forward pass).

    CPU: the process's peak resident set (``VmHWM``, reset on entry through ``/proc/self/clear_refs``).
    CUDA: ``max_memory_allocated``. ``peak`` stays ``None`` where it cannot be measured honestly.
    """

    def __init__(self, device: str, baseline: int | None):
        self.device = device
        self.baseline = baseline
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self.baseline = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.baseline is None:
            return
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.baseline
        else:
            self.peak = _proc_status_kib("VmHWM") * 1024 - self.baseline


def _timer(device: str):
    """A callable timing ``fn()`` in seconds: CUDA events on a GPU, ``perf_counter`` on a CPU."""
    if device == "cuda":
        def timed(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000
        return timed

    def timed_cpu(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return timed_cpu


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  labels: torch.Tensor) -> Callable[[], None]:
    """``step()``: one training step on the batch ``x`` (the model's input) with ``labels`` ``(B,)``: forward,
    cross-entropy, backward, ``optimizer.step()``, gradients cleared."""
    def step() -> None:
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn()`` (CPU), after ``warmup`` untimed calls (the
    first steps pay for allocation and oneDNN primitive creation)."""
    for _ in range(warmup):
        fn()
    return statistics.median(_timer("cpu")(fn) for _ in range(repeats))


def _autocast(settings: BenchSettings):
    return (torch.autocast(settings.device, dtype=torch.bfloat16) if settings.dtype == "bf16"
            else contextlib.nullcontext())


def _inference(model: torch.nn.Module, settings: BenchSettings):
    """``run(clip)``: one forward pass of ``clip`` ``(B, 3, T, H, W)``, without autograd."""
    def run(clip: torch.Tensor) -> None:
        with torch.inference_mode(), _autocast(settings):
            model(clip)
    return run


def _training(model: torch.nn.Module, params: list[torch.nn.Parameter], settings: BenchSettings):
    """``run(clip)``: one training step on ``clip`` ``(B, 3, T, H, W)``: forward, loss, backward, AdamW."""
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    labels = torch.randint(settings.classes, (settings.batch,), generator=torch.Generator().manual_seed(1))
    labels = labels.to(settings.device)

    def run(clip: torch.Tensor) -> None:
        with _autocast(settings):
            logits = model(clip)
        torch.nn.functional.cross_entropy(logits.float(), labels[:clip.shape[0]]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def _measure(run, clip: torch.Tensor, settings: BenchSettings, repeats: int, baseline: int | None) -> dict[str, Any]:
    """Warm up, then time ``repeats`` calls of ``run(clip)`` (``clip`` ``(B, 3, T, H, W)``) and track peak memory."""
    timed = _timer(settings.device)

    def once() -> None:
        run(clip)

    with PeakMemory(settings.device, baseline) as memory:
        for _ in range(settings.warmup):
            once()
        times = [timed(once) for _ in range(repeats)]
    quantiles = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median_s": statistics.median(times), "p10_s": quantiles[0], "p90_s": quantiles[-1],
            "times_s": times, "peak_bytes": memory.peak}


def bench_in_process(name: str, settings: BenchSettings, overrides: dict[str, Any]) -> dict[str, Any]:
    """Build ``name`` and measure it in this process (the worker's body)."""
    from sct.analysis.flops import count_macs, count_params
    from sct.analysis.peers import build_model

    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model = build_model(name, num_classes=settings.classes, num_frames=settings.frames, img_size=settings.size,
                        grad_checkpointing=settings.grad_checkpointing, **overrides)
    model = model.to(settings.device).train(settings.train)
    compiled = torch.compile(model) if settings.compile else model
    run = _training(compiled, list(model.parameters()), settings) if settings.train else _inference(compiled, settings)
    g = torch.Generator().manual_seed(settings.seed)
    big = torch.randn(settings.batch, 3, settings.frames, settings.size, settings.size, generator=g)
    big = big.to(settings.device)
    small = big[:1].clone()
    # Memory is measured before anything else runs a forward pass, against what the model and inputs hold.
    baseline = memory_now(settings.device)
    latency = _measure(run, small, settings, settings.repeats, baseline)
    # At batch 1 the throughput run would repeat the latency run; its clips/s come from the same timings.
    throughput = (latency if settings.batch == 1
                  else _measure(run, big, settings, max(3, settings.repeats // 3), baseline))
    macs, _ = count_macs(model.cpu().eval(), small.cpu())
    return {"model": name, "params": count_params(model), "macs": macs, "latency": latency,
            "throughput": throughput, "clips_per_s": settings.batch / throughput["median_s"],
            "achieved_gflops": settings.flops_per_macs * macs * settings.batch / throughput["median_s"] / 1e9}


def _worker(spec: str) -> int:
    job = json.loads(spec)
    try:
        result = bench_in_process(job["model"], BenchSettings(**job["settings"]), job["overrides"])
    except (SCTError, RuntimeError, ValueError, TypeError) as err:
        result = {"model": job["model"], "error": f"{type(err).__name__}: {err}"}
    print("SCT-BENCH-RESULT " + json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- driver side


def bench_model(name: str, settings: BenchSettings, overrides: dict[str, Any] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
    """Measure ``name`` in a fresh process; returns its result dict (``error`` set if it failed)."""
    spec = json.dumps({"model": name, "settings": dataclasses.asdict(settings), "overrides": overrides or {}})
    try:
        proc = subprocess.run([sys.executable, "-m", "sct.analysis.bench", "--worker", spec],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("SCT-BENCH-RESULT "):
            return json.loads(line.removeprefix("SCT-BENCH-RESULT "))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"model": name, "error": f"worker exited {proc.returncode}: {' | '.join(tail)}"}


def run_bench(names: list[str], settings: BenchSettings, overrides: dict[str, dict[str, Any]] | None = None,
              timeout: float | None = None, progress=None, matmul_n: int = 2048) -> dict[str, Any]:
    """Benchmark ``names`` under one protocol; the report holds the machine's matmul GFLOP/s from this run."""
    from sct.analysis.peers import available

    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(available())}")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    load_before = os.getloadavg()[0]
    peak = matmul_gflops(DTYPES[settings.dtype], n=matmul_n, device=settings.device)
    results = []
    for name in names:
        if progress:
            progress(name)
        results.append(bench_model(name, settings, (overrides or {}).get(name), timeout))
    for r in results:
        if "error" not in r:
            r["fraction_of_matmul"] = r["achieved_gflops"] / peak
    # Other work on the machine slows every model; the load average says how busy it was.
    return {"machine": describe_machine(), "settings": dataclasses.asdict(settings), "matmul_gflops": peak,
            "load_average": [load_before, os.getloadavg()[0]], "results": results}


def write_report(report: dict[str, Any], out: str | Path) -> str:
    """Write ``bench.json`` and ``bench.md`` into ``out``; returns the Markdown."""
    out = Path(out)
    text = format_report(report)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2))
        (out / "bench.md").write_text(text + "\n")
    return text


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown: a settings line and one row per model."""
    s = report["settings"]
    work = "inference"
    if s.get("train"):
        work = "training step (forward, backward, AdamW)" + (", gradient checkpointing" if s["grad_checkpointing"]
                                                             else "")
    head = (f"{report['machine']}; {s['device']}, {s['dtype']}{', compiled' if s['compile'] else ''}; {work}; "
            f"clip {s['frames']}x{s['size']}x{s['size']}; latency at batch 1 over {s['repeats']} runs after "
            f"{s['warmup']} warm-up; throughput at batch {s['batch']}; matmul {report['matmul_gflops']:.0f} GFLOP/s "
            "measured in the same run.")
    if "load_average" in report:
        head += " Load average {:.1f} at the start, {:.1f} at the end.".format(*report["load_average"])
    rows = []
    for r in report["results"]:
        if "error" in r:
            rows.append([r["model"], "failed: " + r["error"]] + [""] * 7)
            continue
        lat, thr = r["latency"], r["throughput"]
        rows.append([r["model"], f"{r['params'] / 1e6:.1f}", f"{r['macs'] / 1e9:.1f}", _ms(lat["median_s"]),
                     f"{_ms(lat['p10_s'])}-{_ms(lat['p90_s'])}", f"{r['clips_per_s']:.2f}",
                     f"{_mib(lat['peak_bytes'])} / {_mib(thr['peak_bytes'])}", f"{r['achieved_gflops']:.0f}",
                     f"{100 * r['fraction_of_matmul']:.0f}%"])
    table = markdown_table(["model", "params (M)", "GFLOPs/clip", "latency b1 (ms, median)", "p10-p90 (ms)",
                            f"clips/s (b{s['batch']})", f"peak mem MiB (b1 / b{s['batch']})", "GFLOP/s",
                            "of matmul"], rows)
    return head + "\n\n" + table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="registered model names or hf:timesformer, hf:vivit, hf:videomae (random init)")
    parser.add_argument("--frames", type=positive_int, default=8,
                        help="clip length T, the same for every model (default 8)")
    parser.add_argument("--size", type=positive_int, default=224,
                        help="crop size, the same for every model (default 224)")
    parser.add_argument("--batch", type=positive_int, default=8, help="batch size of the throughput run (default 8)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="fp32, or bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (warm-up absorbs compiling)")
    parser.add_argument("--train", action="store_true",
                        help="time training steps (forward, backward, AdamW step) instead of inference")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="with --train: recompute each transformer layer's activations in backward")
    parser.add_argument("--repeats", type=positive_int, default=10,
                        help="timed batch-1 runs per model (default 10)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs before timing (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--timeout", type=positive_float, default=None, help="seconds allowed per model")
    add_out(parser, "directory for bench.json and bench.md")
    add_json(parser, "the Markdown table")


def run(args: argparse.Namespace) -> int:
    settings = BenchSettings(frames=args.frames, size=args.size, batch=args.batch, dtype=args.dtype,
                             compile=args.compile, train=args.train, grad_checkpointing=args.grad_checkpointing,
                             repeats=args.repeats, warmup=args.warmup, device=args.device,
                             threads=args.threads)
    if args.out:
        check_writable_dir(args.out, "--out")
    report = run_bench(args.models, settings, timeout=args.timeout,
                       progress=lambda name: print(f"benchmarking {name} ...", file=sys.stderr, flush=True))
    text = write_report(report, args.out) if args.out else format_report(report)
    print(json.dumps(report, indent=2) if args.json else text)
    failed = [r["model"] for r in report["results"] if "error" in r]
    if failed:
        print(f"sct bench: {len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    sys.exit("usage: python -m sct.analysis.bench --worker SPEC_JSON (use `sct bench` instead)")
