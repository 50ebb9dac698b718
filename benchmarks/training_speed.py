"""Training steps before and after a change, and gradient checkpointing's memory and time cost.

``--protocol steps``: one training step (forward, cross-entropy, backward, AdamW) at fp32, batch 1, for
SCT-S, X-ViT and Hugging Face's TimeSformer, each run with the code of two source trees: ``before`` (the
``src`` of a git ref, exported with ``git archive``) and ``after`` (this checkout). Every (tree, model)
runs in its own process, and the processes of one round alternate, so both trees meet the same load on
this shared machine; each number is the best step over all rounds. The FLOP ratios of the models bound
what the time ratios can be; the table sets them side by side.

``--protocol checkpointing``: SCT-S/M/L at 24x224 (the paper's clip), batch 1, with and without
``grad_checkpointing``: step time and peak memory. Memory on a CPU is the growth of the process's peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before the first step) over the
resident set once the model and the clip are built: activations, gradients and AdamW's state.

``--protocol lsh``: the image LSH attention of SCT-S's first block (8 frames x 3137 tokens, 6 heads of
16, 64 buckets, 2 rounds) forward + backward, before and after, both in this process, calls alternating;
best of ``--rounds`` calls each.

    .venv/bin/python benchmarks/training_speed.py --protocol steps           # writes docs/benchmarks.md
    .venv/bin/python benchmarks/training_speed.py --protocol checkpointing
    .venv/bin/python benchmarks/training_speed.py --protocol lsh
"""

from __future__ import annotations

import argparse
import json
import os
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

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    step = _lsh_step(job) if job["model"] == "lsh" else _model_step(job)
    baseline = memory_now("cpu")
    times = []
    with PeakMemory("cpu", baseline) as memory:
        step()  # warm-up; creates the gradients and the optimiser's state
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {"times_s": times, "peak_bytes": memory.peak, "macs": job.get("macs")}


def _model_step(job: dict):
    import torch

    from sct.analysis.flops import count_macs
    from sct.analysis.peers import build_model

    extra = {"grad_checkpointing": True} if job["checkpointing"] else {}
    model = build_model(job["model"], num_classes=400, num_frames=job["frames"], img_size=job["size"], **extra)
    clip = torch.randn(1, 3, job["frames"], job["size"], job["size"], generator=torch.Generator().manual_seed(0))
    job["macs"] = count_macs(model.eval(), clip)[0]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    label = torch.tensor([7])

    def step() -> None:
        torch.nn.functional.cross_entropy(model(clip), label).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


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
            "repeats": args.repeats, "checkpointing": False, **extra}


def steps_protocol(args, trees) -> tuple[str, dict]:
    models = ["sct_s", "xvit_b16", "hf:timesformer"]
    best = measure(trees, {m: _job(m, args) for m in models}, args.rounds, args.timeout)
    rows = []
    for m in models:
        before, after = best[f"before/{m}"], best[f"after/{m}"]
        flops = 6 * after["macs"]
        rows.append([m, f"{after['macs'] / 1e9:.1f}", f"{before['best_s']:.2f}", f"{after['best_s']:.2f}",
                     f"{before['best_s'] / after['best_s']:.2f}x", f"{flops / after['best_s'] / 1e9:.0f}",
                     f"{before['peak_bytes'] / 2**20:.0f} / {after['peak_bytes'] / 2**20:.0f}"])
    table = markdown_table(["model", "GMACs/clip", "step s (before)", "step s (after)", "speed-up", "GFLOP/s (after)",
                            "peak MiB (before / after)"], rows)
    lines = [table, ""]
    s_macs = best["after/sct_s"]["macs"]
    for peer in ("xvit_b16", "hf:timesformer"):
        ratio = {t: best[f"{t}/sct_s"]["best_s"] / best[f"{t}/{peer}"]["best_s"] for t in ("before", "after")}
        lines.append(f"- SCT-S step / {peer} step: {ratio['before']:.2f} before, **{ratio['after']:.2f}** after; "
                     f"the FLOP ratio allows {s_macs / best[f'after/{peer}']['macs']:.2f}.")
    return "\n".join(lines), best


def checkpointing_protocol(args, trees) -> tuple[str, dict]:
    models = args.models.split(",") if args.models else ["sct_s", "sct_m", "sct_l"]
    jobs = {}
    for m in models:
        jobs[m] = _job(m, args)
        jobs[m + " +ckpt"] = _job(m, args, checkpointing=True)
    best = measure({"after": trees["after"]}, jobs, args.rounds, args.timeout)
    rows = []
    for m in models:
        plain, ckpt = best[f"after/{m}"], best[f"after/{m} +ckpt"]
        rows.append([m, f"{plain['best_s']:.1f}", f"{ckpt['best_s']:.1f}", f"{ckpt['best_s'] / plain['best_s']:.2f}x",
                     f"{plain['peak_bytes'] / 2**20:.0f}", f"{ckpt['peak_bytes'] / 2**20:.0f}",
                     f"{ckpt['peak_bytes'] / plain['peak_bytes']:.2f}x"])
    return markdown_table(["model", "step s", "step s, checkpointing", "time", "peak MiB", "peak MiB, checkpointing",
                           "memory"], rows), best


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


PROTOCOLS = {"steps": (steps_protocol, 8), "checkpointing": (checkpointing_protocol, 24), "lsh": (lsh_protocol, 8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="steps")
    parser.add_argument("--before", default=BEFORE_REF, help=f"git ref of the 'before' code (default {BEFORE_REF})")
    parser.add_argument("--frames", type=int, default=None, help="clip length (default: 8, or 24 for checkpointing)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per process after one warm-up")
    parser.add_argument("--models", default=None, help="checkpointing protocol: comma-separated models")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    protocol, frames = PROTOCOLS[args.protocol]
    args.frames = args.frames or frames
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": export_tree(args.before, Path(tmp)), "after": ROOT / "src"}
        load = os.getloadavg()[0]
        text, best = protocol(args, trees)
    head = (f"`python benchmarks/training_speed.py --protocol {args.protocol}` on {describe_machine()} "
            f"({args.threads} thread(s) per process); fp32, batch 1, clip {args.frames}x{args.size}x{args.size}; "
            f"best of {args.rounds} rounds x {args.repeats} step(s) after a warm-up; 'before' = commit "
            f"{args.before}. Load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores).")
    text = head + "\n\n" + text
    print(text)
    if not args.no_doc:
        update_doc_section(args.doc, f"training_{args.protocol}", text, title=TITLES[args.protocol])
        Path(args.doc).with_name(f"training_{args.protocol}.json").write_text(json.dumps(best, indent=2))
    return 0


TITLES = {"steps": "Training steps: SCT-S, X-ViT, Hugging Face TimeSformer, before and after",
          "checkpointing": "Gradient checkpointing: peak memory and time of a training step at 24x224",
          "lsh": "Image LSH attention, forward + backward, before and after"}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(RESULT + json.dumps(_worker(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    from sct.analysis.hardware import describe_machine
    from sct.analysis.report import markdown_table, update_doc_section
    sys.exit(main())
