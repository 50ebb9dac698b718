"""Training steps before and after a change, and gradient checkpointing's memory and time cost.

``--protocol steps``: one training step (forward, cross-entropy, backward, AdamW) at fp32, batch ``--batch``,
for SCT-S, X-ViT and Hugging Face's TimeSformer, each run with the code of two source trees: ``before`` (the
``src`` of a git ref, exported with ``git archive``) and ``after`` (this checkout). Every (tree, model)
runs in its own process, and the processes of one round alternate, so both trees meet the same load on
this shared machine; each number is the best step over all rounds. The FLOP ratios of the models bound
what the time ratios can be; the table sets them side by side. Each process also times a 2048 x 2048
matmul before and after its steps (the better of the two), so every model's GFLOP/s is read against the
matmul rate its own process met.

``--protocol inference``: the same, for one forward pass in inference mode (SCT-S, X-ViT, Hugging Face's
TimeSformer).

``--protocol checkpointing``: SCT-S/M/L at 24x224 (the paper's clip), batch 1, with and without
``grad_checkpointing``: step time and peak memory. Memory on a CPU is the growth of the process's peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before the first step) over the
resident set once the model and the clip are built: activations, gradients and AdamW's state.

``--protocol checkpointing_time``: the time alone, each model in one process whose steps alternate without
and with checkpointing (``--rounds`` each after a warm-up of each), so both meet the same load.

``--protocol allocator``: SCT-S and X-ViT training steps in this checkout with glibc's malloc keeping freed
memory (what the ``sct`` command sets, ``engine.host_memory``) and without (``SCT_SYSTEM_MALLOC=1``),
processes alternating; best and median of every timed step.

``--protocol profile``: where SCT-S's time goes in a training step and in inference (this checkout only;
``torch.profiler``, self time per operator).

``--protocol lsh``: the image LSH attention of SCT-S's first block (8 frames x 3137 tokens, 6 heads of
16, 64 buckets, 2 rounds) forward + backward, before and after, both in this process, calls alternating;
best of ``--rounds`` calls each.

    .venv/bin/python benchmarks/training_speed.py --protocol steps           # writes docs/benchmarks.md
    .venv/bin/python benchmarks/training_speed.py --protocol steps --batch 4
    .venv/bin/python benchmarks/training_speed.py --protocol inference
    .venv/bin/python benchmarks/training_speed.py --protocol checkpointing --models sct_s,sct_m   # then sct_l
    .venv/bin/python benchmarks/training_speed.py --protocol lsh
    .venv/bin/python benchmarks/training_speed.py --protocol allocator --rounds 3 --repeats 3
    .venv/bin/python benchmarks/training_speed.py --protocol profile --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The commit this comparison's "before" code comes from: the last one before the training-speed work.
BEFORE_REF = "c0e562a"
RESULT = "TRAINING-SPEED-RESULT "


# ----------------------------------------------------------------------------- worker (either tree's sct)


def _worker(job: dict) -> dict:
    import torch

    from sct.analysis.bench import PeakMemory, memory_now
    from sct.analysis.hardware import matmul_gflops

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    _keep_freed_memory()
    if job.get("interleaved"):
        return _interleaved(job)
    step = _lsh_step(job) if job["model"] == "lsh" else _model_step(job)
    baseline = memory_now("cpu")
    times = []
    matmul = matmul_gflops(repeats=3)
    with PeakMemory("cpu", baseline) as memory:
        step()  # warm-up; creates the gradients and the optimiser's state
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {"times_s": times, "peak_bytes": memory.peak, "macs": job.get("macs"),
            "matmul_gflops": max(matmul, matmul_gflops(repeats=3))}


def _keep_freed_memory() -> None:
    """What the ``sct`` command sets before it runs a model (``engine.host_memory``); trees from before it lack it."""
    try:
        from sct.engine.host_memory import keep_freed_memory
    except ImportError:
        return
    keep_freed_memory()


def _model_step(job: dict):
    import torch

    from sct.analysis.flops import count_macs
    from sct.analysis.peers import build_model

    extra = {"grad_checkpointing": True} if job["checkpointing"] else {}
    model = build_model(job["model"], num_classes=400, num_frames=job["frames"], img_size=job["size"], **extra)
    batch = job.get("batch", 1)
    clip = torch.randn(batch, 3, job["frames"], job["size"], job["size"], generator=torch.Generator().manual_seed(0))
    if job.get("count_macs", True):
        job["macs"] = count_macs(model.eval(), clip[:1])[0]
    if job.get("inference"):
        def forward() -> None:
            with torch.inference_mode():
                model(clip)
        return forward
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    label = torch.full((batch,), 7)

    def step() -> None:
        torch.nn.functional.cross_entropy(model(clip), label).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step.model = model
    return step


def _interleaved(job: dict) -> dict:
    """Training steps of one model alternating without and with checkpointing, in this one process: the
    step times per variant, after a warm-up step of each."""
    import torch

    from sct.models.checkpointing import set_grad_checkpointing

    step = _model_step(job)
    model = step.model
    times = {"plain": [], "ckpt": []}
    for r in range(job["rounds"] + 1):
        for variant in times:
            set_grad_checkpointing(model, variant == "ckpt")
            start = time.perf_counter()
            step()
            if r:
                times[variant].append(time.perf_counter() - start)
    return {"times_s": times, "threads": torch.get_num_threads()}


def _lsh_step(job: dict, lsh_attention=None):
    import torch

    from sct.models.attention.lsh import default_n_buckets, random_rotations

    if lsh_attention is None:
        from sct.models.attention.lsh import lsh_attention

    g = torch.Generator().manual_seed(0)
    qk, v = (torch.randn(8, 6, 3137, 16, generator=g, requires_grad=True) for _ in range(2))
    n_buckets = default_n_buckets(3137, 64)
    rotations = random_rotations(6, 16, 2, n_buckets, torch.Generator().manual_seed(1))
    grad = torch.randn(8, 6, 3137, 16, generator=g)

    def step() -> None:
        qk.grad = v.grad = None
        lsh_attention(qk, v, n_hashes=2, n_buckets=n_buckets, chunk_length=64, rotations=rotations).backward(grad)
    return step


# ----------------------------------------------------------------------------- driver


def export_tree(ref: str, into: Path) -> Path:
    """``src`` of git ``ref`` written under ``into``; returns the path to put on ``PYTHONPATH``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run_job(src: Path, job: dict, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(job["threads"])}
    if job.get("mmap_threshold"):
        env["MALLOC_MMAP_THRESHOLD_"] = str(job["mmap_threshold"])
    if job.get("system_malloc"):
        env["SCT_SYSTEM_MALLOC"] = "1"
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line.removeprefix(RESULT))
    raise RuntimeError(f"worker {job} failed: {proc.stderr.strip()[-2000:]}")


def measure(trees: dict[str, Path], jobs: dict[str, dict], rounds: int, timeout: float) -> dict:
    """Best step time and largest peak per (tree, job name), the processes of each round interleaved."""
    best: dict[tuple[str, str], dict] = {}
    for r in range(rounds):
        for name, job in jobs.items():
            for tree, src in trees.items():
                if tree == "before" and job.get("checkpointing"):
                    continue
                result = run_job(src, job, timeout)
                print(f"round {r + 1}: {tree:6s} {name:28s} {min(result['times_s']):8.2f} s  "
                      f"peak {result['peak_bytes'] / 2**20:8.0f} MiB", file=sys.stderr, flush=True)
                old = best.get((tree, name))
                if old is None or min(result["times_s"]) < old["best_s"]:
                    best[tree, name] = {**result, "best_s": min(result["times_s"]), "macs": result.get("macs")}
    return {f"{tree}/{name}": value for (tree, name), value in best.items()}


def _job(model: str, args, **extra) -> dict:
    return {"model": model, "frames": args.frames, "size": args.size, "threads": args.threads,
            "repeats": args.repeats, "checkpointing": False, "batch": args.batch,
            "mmap_threshold": args.malloc_mmap_threshold, **extra}


def _rate(result: dict, flops: float) -> str:
    """Achieved GFLOP/s and its share of the matmul rate measured in the same process."""
    gflops = flops / result["best_s"] / 1e9
    return f"{gflops:.0f} ({100 * gflops / result['matmul_gflops']:.0f}%)"


def steps_protocol(args, trees, inference: bool = False) -> tuple[str, dict]:
    """``inference``: forward passes in inference mode instead of training steps."""
    models = ["sct_s", "xvit_b16", "hf:timesformer"]
    best = measure(trees, {m: _job(m, args, inference=inference) for m in models}, args.rounds, args.timeout)
    rows = []
    what, per_mac = ("forward", 2) if inference else ("step", 6)
    for m in models:
        before, after = best[f"before/{m}"], best[f"after/{m}"]
        flops = per_mac * after["macs"] * args.batch
        rows.append([m, f"{after['macs'] / 1e9:.1f}", f"{before['best_s']:.2f}", f"{after['best_s']:.2f}",
                     f"{before['best_s'] / after['best_s']:.2f}x", _rate(before, flops), _rate(after, flops)]
                    # Inference frees as it goes: its peak is noise around the resident set, so not shown.
                    + ([] if inference else [f"{before['peak_bytes'] / 2**20:.0f} / "
                                             f"{after['peak_bytes'] / 2**20:.0f}"]))
    table = markdown_table(["model", "GMACs/clip", f"{what} s (before)", f"{what} s (after)", "speed-up",
                            "GFLOP/s before (% of matmul)", "GFLOP/s after (% of matmul)"]
                           + ([] if inference else ["peak MiB (before / after)"]), rows)
    lines = [table, ""]
    s_macs = best["after/sct_s"]["macs"]
    for peer in ("xvit_b16", "hf:timesformer"):
        ratio = {t: best[f"{t}/sct_s"]["best_s"] / best[f"{t}/{peer}"]["best_s"] for t in ("before", "after")}
        lines.append(f"- SCT-S {what} / {peer} {what}: {ratio['before']:.2f} before, **{ratio['after']:.2f}** after; "
                     f"the FLOP ratio allows {s_macs / best[f'after/{peer}']['macs']:.2f}.")
    return "\n".join(lines), best


def inference_protocol(args, trees) -> tuple[str, dict]:
    return steps_protocol(args, trees, inference=True)


def _models_and_kept_rows(args) -> tuple[list[str], str, dict]:
    """``--models`` (default SCT-S/M/L), the clip, and the rows of the last run of this protocol (from the JSON
    beside the doc, when it is of the same clip) for the models not measured now."""
    models = args.models.split(",") if args.models else ["sct_s", "sct_m", "sct_l"]
    saved = Path(args.doc).with_name(f"{doc_key(args)}.json")
    clip = f"{args.frames}x{args.size}"
    previous = json.loads(saved.read_text()) if saved.exists() and not args.no_doc else {}
    return models, clip, previous.get("rows", {}) if previous.get("clip") == clip else {}


def checkpointing_protocol(args, trees) -> tuple[str, dict]:
    """``--models`` measures some models and keeps the other rows of the last run (from the JSON beside the
    doc, when it is of the same clip), so a long table can be made in several locked runs."""
    models, clip, rows = _models_and_kept_rows(args)
    for m in models:
        load = os.getloadavg()[0]
        jobs = {m: _job(m, args, count_macs=False), m + " +ckpt": _job(m, args, checkpointing=True, count_macs=False)}
        best = measure({"after": trees["after"]}, jobs, args.rounds, args.timeout)
        rows[m] = {"plain": best[f"after/{m}"], "ckpt": best[f"after/{m} +ckpt"], "load": load,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    table = []
    for m, row in sorted(rows.items()):
        plain, ckpt = row["plain"], row["ckpt"]
        table.append([m, f"{plain['best_s']:.1f}", f"{ckpt['best_s']:.1f}", f"{ckpt['best_s'] / plain['best_s']:.2f}x",
                      f"{plain['peak_bytes'] / 2**20:.0f}", f"{ckpt['peak_bytes'] / 2**20:.0f}",
                      f"{ckpt['peak_bytes'] / plain['peak_bytes']:.2f}x", f"{row['load']:.1f}", row["date"]])
    text = markdown_table(["model", "step s", "step s, checkpointing", "time", "peak MiB", "peak MiB, checkpointing",
                           "memory", "load at start", "measured"], table)
    return text, {"clip": clip, "rows": rows}


def checkpointing_time_protocol(args, trees) -> tuple[str, dict]:
    """Each model in one process, steps without and with checkpointing alternating (``--rounds`` each after a
    warm-up of each), so both meet the same load; the ratio of the best steps, and each round's ratio."""
    models, clip, results = _models_and_kept_rows(args)
    for m in models:
        load = os.getloadavg()[0]
        job = _job(m, args, count_macs=False, interleaved=True, rounds=args.rounds)
        times = run_job(trees["after"], job, args.timeout)["times_s"]
        results[m] = {"times_s": times, "load": load, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"{m}: {times}", file=sys.stderr, flush=True)
    rows = []
    for m, result in sorted(results.items()):
        times = result["times_s"]
        ratios = ", ".join(f"{c / p:.2f}x" for p, c in zip(times["plain"], times["ckpt"]))
        rows.append([m, f"{min(times['plain']):.1f}", f"{min(times['ckpt']):.1f}",
                     f"{min(times['ckpt']) / min(times['plain']):.2f}x", ratios, f"{result['load']:.1f}",
                     result["date"]])
    text = markdown_table(["model", "step s", "step s, checkpointing", "time (best / best)", "each round",
                           "load at start", "measured"], rows)
    return text, {"clip": clip, "rows": results}


def lsh_protocol(args, trees) -> tuple[str, dict]:
    """Both trees' ``lsh.py`` imported into this process and called alternately: on a busy machine, calls
    interleaved within one process see the same load far more closely than separate processes do."""
    import importlib.util

    import torch

    torch.set_num_threads(args.threads)
    modules = {}
    for tree, src in trees.items():
        spec = importlib.util.spec_from_file_location(f"lsh_{tree}", src / "sct/models/attention/lsh.py")
        modules[tree] = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[tree])
    steps = {tree: _lsh_step({}, module.lsh_attention) for tree, module in modules.items()}
    best = dict.fromkeys(steps, float("inf"))
    for step in steps.values():
        step()  # warm-up
    for r in range(args.rounds):
        for tree, step in steps.items():
            start = time.perf_counter()
            step()
            best[tree] = min(best[tree], time.perf_counter() - start)
        print(f"round {r + 1}: " + "  ".join(f"{t} {best[t]:.2f} s" for t in steps), file=sys.stderr, flush=True)
    row = [f"{best['before'] * 1e3:.0f}", f"{best['after'] * 1e3:.0f}", f"{best['before'] / best['after']:.2f}x"]
    return markdown_table(["ms before", "ms after", "speed-up"], [row]), best


def profile_protocol(args, trees) -> tuple[str, dict]:
    """Where SCT-S's time goes: ``torch.profiler`` over one training step and one inference forward of this
    checkout (after a warm-up each), self time per operator, the largest ones and the rest."""
    import torch
    from torch.profiler import profile

    import sct
    from sct.analysis.bench import training_step

    torch.set_num_threads(args.threads)
    _keep_freed_memory()
    model = sct.create_model("sct_s", num_frames=args.frames, img_size=args.size)
    clip = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    step = training_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), clip, torch.full((args.batch,), 7))

    def train() -> None:
        model.train()
        step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(clip)

    shares, totals = {}, {}
    for name, fn in (("training step", train), ("inference", infer)):
        fn()
        with profile() as prof:
            start = time.perf_counter()
            fn()
            totals[name] = time.perf_counter() - start
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        shares[name] = sorted(((e.self_cpu_time_total / total, e.key, e.count) for e in events), reverse=True)
    lines = []
    for name, rows in shares.items():
        top = rows[:args.top]
        table = [[f"{100 * share:.1f}%", f"`{op}`", count] for share, op, count in top]
        table.append([f"{100 * sum(r[0] for r in rows[args.top:]):.1f}%", "everything else", ""])
        lines += [f"**{name}**, {totals[name]:.2f} s under the profiler (self time per operator):",
                  "", markdown_table(["share", "operator", "calls"], table), ""]
    return "\n".join(lines), {k: [list(r) for r in v[:args.top]] for k, v in shares.items()}


def allocator_protocol(args, trees) -> tuple[str, dict]:
    """What keeping freed memory (``engine.host_memory``, set by the ``sct`` command) does to a training step:
    SCT-S and X-ViT in this checkout, each with the setting and with ``SCT_SYSTEM_MALLOC=1``, processes
    alternating; every timed step counts, so the table gives the best and the median."""
    models = ["sct_s", "xvit_b16"]
    variants = {"kept": {}, "system": {"system_malloc": True}}
    times = {(m, v): [] for m in models for v in variants}
    for r in range(args.rounds):
        for m in models:
            for v, extra in variants.items():
                result = run_job(trees["after"], _job(m, args, count_macs=False, **extra), args.timeout)
                times[m, v] += result["times_s"]
                print(f"round {r + 1}: {m:10s} {v:7s} " + " ".join(f"{t:.2f}" for t in result["times_s"]),
                      file=sys.stderr, flush=True)
    rows, med = [], {}
    for m in models:
        med[m] = {v: statistics.median(times[m, v]) for v in variants}
        rows.append([m, f"{min(times[m, 'system']):.2f}", f"{min(times[m, 'kept']):.2f}", f"{med[m]['system']:.2f}",
                     f"{med[m]['kept']:.2f}", f"{med[m]['system'] / med[m]['kept']:.2f}x", len(times[m, "kept"])])
    table = markdown_table(["model", "best s, system malloc", "best s, kept", "median s, system malloc",
                            "median s, kept", "speed-up (medians)", "steps each"], rows)
    ratio = {v: med["sct_s"][v] / med["xvit_b16"][v] for v in variants}
    text = (f"{table}\n\n- SCT-S step / X-ViT step (medians): {ratio['system']:.2f} with the system's malloc, "
            f"**{ratio['kept']:.2f}** with freed memory kept.")
    return text, {f"{m}/{v}": t for (m, v), t in times.items()}


PROTOCOLS = {"steps": (steps_protocol, 8), "inference": (inference_protocol, 8),
             "checkpointing": (checkpointing_protocol, 24), "checkpointing_time": (checkpointing_time_protocol, 24),
             "lsh": (lsh_protocol, 8), "profile": (profile_protocol, 8), "allocator": (allocator_protocol, 8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="steps")
    parser.add_argument("--before", default=BEFORE_REF, help=f"git ref of the 'before' code (default {BEFORE_REF})")
    parser.add_argument("--frames", type=int, default=None, help="clip length (default: 8, or 24 for checkpointing)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="clips per step (steps and inference protocols)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per process after one warm-up")
    parser.add_argument("--top", type=int, default=14, help="profile protocol: operators listed per table")
    parser.add_argument("--models", default=None, help="checkpointing protocol: comma-separated models")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None, metavar="BYTES",
                        help="run the workers with glibc's MALLOC_MMAP_THRESHOLD_ fixed at BYTES (its own doc section)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    protocol, frames = PROTOCOLS[args.protocol]
    args.frames = args.frames or frames
    with tempfile.TemporaryDirectory() as tmp:
        # The checkout's src is copied, so edits made while a long run goes on do not leak into it.
        after = shutil.copytree(ROOT / "src", Path(tmp) / "after" / "src")
        trees = {"before": export_tree(args.before, Path(tmp)), "after": after}
        load = os.getloadavg()[0]
        text, best = protocol(args, trees)
    command = f"python benchmarks/training_speed.py --protocol {args.protocol} --threads {args.threads}"
    command += f" --batch {args.batch}" if args.batch != 1 else ""
    command += f" --malloc-mmap-threshold {args.malloc_mmap_threshold}" if args.malloc_mmap_threshold else ""
    head = (f"`{command}` on {describe_machine()} ({args.threads} thread(s) per process); fp32, batch "
            f"{args.batch}, clip {args.frames}x{args.size}x{args.size}; "
            f"best of {args.rounds} rounds x {args.repeats} step(s) after a warm-up; 'before' = commit "
            f"{args.before}. Load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores).")
    text = head + "\n\n" + text
    print(text)
    if not args.no_doc:
        key = doc_key(args)
        update_doc_section(args.doc, key, text, title=TITLES[args.protocol])
        Path(args.doc).with_name(f"{key}.json").write_text(json.dumps(best, indent=2))
    return 0


def doc_key(args) -> str:
    """The doc section (and JSON file) of a run: protocol, batch, allocator setting."""
    return (f"training_{args.protocol}" + (f"_b{args.batch}" if args.batch != 1 else "")
            + ("_mmap" if args.malloc_mmap_threshold else ""))


TITLES = {"steps": "Training steps: SCT-S, X-ViT, Hugging Face TimeSformer, before and after",
          "inference": "Inference: SCT-S, X-ViT, Hugging Face TimeSformer, before and after",
          "checkpointing": "Gradient checkpointing: peak memory and time of a training step at 24x224",
          "checkpointing_time": "Gradient checkpointing: time of a training step at 24x224, in one process",
          "lsh": "Image LSH attention, forward + backward, before and after",
          "profile": "Where SCT-S's time goes",
          "allocator": "Training steps with and without freed memory kept by malloc"}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(RESULT + json.dumps(_worker(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    from sct.analysis.hardware import describe_machine
    from sct.analysis.report import markdown_table, update_doc_section
    sys.exit(main())
