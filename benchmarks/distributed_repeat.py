"""Run the multi-process (torchrun) tests many times in a row and count how many runs pass.

A teardown race shows up as a rare failure (a process aborting at exit), so a single green run proves
little; docs/reliability.md quotes the count this script writes.

    python benchmarks/distributed_repeat.py                      # 20 runs of tests/test_distributed.py
    python benchmarks/distributed_repeat.py --times 5 --tests tests/test_interrupt.py -k torchrun

Each run is a fresh ``pytest`` process; the results go to ``docs/distributed_repeat.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repeat(times: int, pytest_args: list[str]) -> dict:
    runs = []
    for i in range(times):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                              cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        summary = (done.stdout.strip().splitlines() or [""])[-1]
        runs.append({"run": i + 1, "exit_code": done.returncode, "seconds": round(seconds, 1), "summary": summary})
        print(f"run {i + 1}/{times}: exit {done.returncode} in {seconds:.0f} s: {summary}", flush=True)
        if done.returncode:
            print(done.stdout[-4000:] + done.stderr[-4000:], flush=True)
    passed = sum(r["exit_code"] == 0 for r in runs)
    return {"command": f"pytest {' '.join(pytest_args)}", "times": times, "passed": passed,
            "machine": f"{platform.node()} ({platform.machine()}, {platform.python_version()})", "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--tests", nargs="+", default=["tests/test_distributed.py"],
                        help="pytest arguments (test files, -k EXPR)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "distributed_repeat.json"))
    args = parser.parse_args()
    result = repeat(args.times, args.tests)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['passed']} of {result['times']} runs passed: {result['command']}")
    return 0 if result["passed"] == result["times"] else 1


if __name__ == "__main__":
    sys.exit(main())
