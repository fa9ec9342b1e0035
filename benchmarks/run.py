"""Run every benchmark, each in its own process, and record how long each took.

    python benchmarks/run.py           # quick settings: about 3-5 minutes on 2 cores
    python benchmarks/run.py --full    # speed: full run (5-10 min); accuracy: 70,000 iterations (~35-45 min)

Results go to ``benchmarks/results/`` (``speed.md``, ``accuracy.md``, ``memory.md``, their
PNG plots and JSON raw data) and a summary to ``benchmarks/results/run.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import machine_line, markdown_table, write_result

HERE = Path(__file__).resolve().parent

QUICK = {
    "speed": ["--quick"],
    "accuracy": [],  # its defaults are the quick run
    "memory": ["--steps", "1", "5", "10"],
}
FULL = {
    "speed": [],
    "accuracy": ["--iterations", "70000", "--jobs", "2"],
    "memory": [],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-length settings (about 45 minutes on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=list(QUICK), default=list(QUICK), help="run only these")
    args = parser.parse_args(argv)
    settings = FULL if args.full else QUICK
    rows, failed = [], []
    for name in args.only:
        command = [sys.executable, str(HERE / f"{name}.py"), *settings[name]]
        print(f"==> {' '.join(command)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call(command, cwd=HERE.parent)
        seconds = time.perf_counter() - start
        rows.append(
            [
                name,
                "`" + " ".join(["python", f"benchmarks/{name}.py", *settings[name]]) + "`",
                f"{seconds:.0f}",
                "ok" if rc == 0 else f"failed (exit {rc})",
            ]
        )
        if rc:
            failed.append(name)
    text = (
        "## Benchmark run\n\n"
        f"Machine: {machine_line(threads=False)}\n\n"
        + markdown_table(["benchmark", "command", "wall time (s)", "status"], rows)
        + "\n\nTables: [speed.md](speed.md), [accuracy.md](accuracy.md), [memory.md](memory.md).\n"
    )
    write_result("run", text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
