"""The ``sct`` command line: ``sct VERB [options]``.

Each verb lives in the module that implements it; that module provides ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen verb's module is imported, so ``sct --help`` stays fast.

Every verb runs with glibc's malloc keeping freed memory for reuse (``engine.host_memory``: SCT's large
CPU activations are not mapped afresh at every step); ``SCT_SYSTEM_MALLOC=1`` leaves the allocator alone.

Every failure the user can act on ends in one line, ``sct VERB: error: ...``, and a non-zero exit: an
``SCTError`` (its ``exit_code``; 130/143 for a run stopped by SIGINT/SIGTERM), an OS error writing an
output (disk full, read-only, no permission), or Ctrl-C (130).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sct.engine.host_memory import keep_freed_memory
from sct.errors import SCTError
from sct.outputs import is_output_error, reason

VERBS: dict[str, tuple[str, str]] = {
    "synth": ("sct.data.synthetic", "generate the synthetic motion dataset (real H.264 .mp4 files)"),
    "data": ("sct.data.check", "dataset tools: `sct data check ANNOTATION` scans for bad videos"),
    "train": ("sct.engine.train", "train a model from a YAML config with dotted overrides"),
    "eval": ("sct.engine.evaluate", "multi-view evaluation of a checkpoint"),
    "predict": ("sct.engine.predict", "top-k labels for video files (PyTorch or onnxruntime)"),
    "export": ("sct.deploy.export", "a checkpoint or model as an ONNX file (needs sct[deploy])"),
    "stream": ("sct.deploy.stream", "online recognition of a video file or live source: a timeline of labels"),
    "runs": ("sct.engine.runs", "the run folders under a directory: model, data, progress, best val, status"),
    "demo": ("sct.engine.demo", "synthesise data, train sct_tiny, evaluate: the whole loop in minutes"),
    "profile": ("sct.analysis.flops", "parameters and GFLOPs per model and per module"),
    "bench": ("sct.analysis.bench", "latency, throughput and memory of models"),
    "visualize": ("sct.analysis.visualize", "attention-rollout heat maps over a clip"),
}


def _usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: sct VERB [options]   (sct VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from sct import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"sct: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sct {verb}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    keep_freed_memory()
    try:
        return int(module.run(args) or 0)
    except SCTError as err:
        if not err.reported:
            print(f"sct {verb}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if not is_output_error(err):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"sct {verb}: error: cannot write {where}{reason(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsct {verb}: interrupted", file=sys.stderr)
        return 130
