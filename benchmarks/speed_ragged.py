"""What ragged tasks cost: time and memory per meta-training update, equal-size against ragged groups.

The sinusoid collection of the quick start (2,000 tasks, an MLP 1-40-40-1,
``n_support=10``, ``meta_batch_size=25``), in two shapes:

* ``equal``: every task has 20 rows (10 support, 10 query);
* ``ragged``: the same tasks cut to 2-38 rows each (uniform, 20 on average;
  ``make_sinusoid_tasks`` with 38 rows, then the first ``n`` of each task), so
  that each task adapts on ``min(10, rows - 1)`` rows and predicts the others:
  batches are padded to 10 support and up to 28 query rows and masked.

And in two versions of the code for the equal-size data: this checkout, and
the commit before ragged tasks (``--before``, a git revision checked out in a
temporary worktree), to show that equal-size data pay nothing for the masks.

Each (code, data, head) cell runs in its own process, the cells taking turns
over ``--rounds`` rounds; the table gives the median. Time per update:
``fit(max_iter=N)`` minus ``fit(max_iter=0)`` (validation, tensors, network),
divided by ``N``, after a warm-up ``fit(max_iter=1)``. Memory: the growth of the process's peak resident memory
during the ``N``-update fit (what the bilevel step needs beyond the data).

Usage::

    python benchmarks/speed_ragged.py               # ~4 minutes on 2 cores
    python benchmarks/speed_ragged.py --rounds 1 --iters 50
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

from _common import machine_line, markdown_table, median, write_result

ROOT = Path(__file__).resolve().parent.parent
HEADS = {
    "ridge (default)": "'ridge'",
    "GradientHead() (SGD, 1 step)": "GradientHead()",
    "GradientHead(meta-sgd, 5 steps)": "GradientHead(inner_optimizer='meta-sgd', inner_steps=5)",
}

CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np, torch
torch.set_num_threads(1)
import sklearn_meta
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead
shape, head, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
if shape == "equal":
    X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
else:
    X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=38, random_state=0)
    sizes = np.random.default_rng(0).integers(2, 39, size=2000)
    keep = np.concatenate([np.flatnonzero(g == t)[:n] for t, n in enumerate(sizes)])
    X, y, g = X[keep], y[keep], g[keep]
def fit(n):
    est = MetaRegressor(hidden_layer_sizes=(40, 40), head=eval(head), n_support=10, meta_batch_size=25,
                        max_iter=n, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, groups=g)
    return time.perf_counter() - start, est
fit(1)  # warm-up: the first fit in a process pays for lazy imports and the first kernels
fixed, _ = fit(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total, est = fit(iters)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"per_update_ms": 1000 * (total - fixed) / iters, "memory_kib": after - before,
                  "n_support": int(est.n_support_), "n_query": int(est.n_query_), "rows": len(y),
                  "package": sklearn_meta.__file__}))
"""


def run_child(source: Path, shape: str, head: str, iters: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, shape, head, str(iters)],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(source)):
        raise RuntimeError(f"the child imported {result['package']}, not the code under {source}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=300, help="updates per timed fit (default 300)")
    parser.add_argument("--before", default="9e50a5b", help="git revision before ragged tasks (default 9e50a5b)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True)
        try:
            cells = [("before", "equal", h) for h in HEADS] + [
                ("now", s, h) for s in ("equal", "ragged") for h in HEADS
            ]
            results: dict[tuple, list[dict]] = {cell: [] for cell in cells}
            for round_ in range(args.rounds):
                order = cells[round_ % len(cells) :] + cells[: round_ % len(cells)]
                for code, shape, head in order:
                    source = before if code == "before" else ROOT
                    results[code, shape, head].append(run_child(source, shape, HEADS[head], args.iters))
                    print(code, shape, head, results[code, shape, head][-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)

    def cell(code, shape, head, key):
        return median([r[key] for r in results[code, shape, head]])

    rows = []
    for head in HEADS:
        before_ms, equal_ms, ragged_ms = (cell(c, s, head, "per_update_ms") for c, s, _ in cells[:: len(HEADS)])
        first = results["now", "ragged", head][0]
        rows.append(
            [
                head,
                f"{before_ms:.2f}",
                f"{equal_ms:.2f}",
                f"{equal_ms / before_ms:.2f}",
                f"{ragged_ms:.2f} ({first['n_support']} + {first['n_query']} padded)",
                f"{ragged_ms / equal_ms:.2f}",
                f"{cell('now', 'equal', head, 'memory_kib') / 1024:.1f}",
                f"{cell('now', 'ragged', head, 'memory_kib') / 1024:.1f}",
            ]
        )
    command = "python benchmarks/speed_ragged.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        "## Ragged tasks: time and memory per meta-training update\n\n"
        f"Command: `{command.strip()}` ({time.perf_counter() - started:.0f} s)\n\n"
        f"Machine: {machine_line(threads=False)}; one torch thread per process\n\n"
        f"Sinusoids, MLP 1-40-40-1, n_support=10, meta_batch_size=25, {args.iters} updates per timed fit; median "
        f"of {args.rounds} rounds, each cell in its own process, the cells taking turns. `equal`: 2,000 tasks "
        "of 20 rows; `ragged`: 2,000 tasks of 2-38 rows (20 on average), padded and masked. `before`: the code "
        f"at `{args.before}`, before ragged tasks. Memory: growth of the peak resident memory during the fit.\n\n"
        + markdown_table(
            [
                "head",
                "equal, before (ms/update)",
                "equal, now (ms/update)",
                "now ÷ before",
                "ragged, now (ms/update)",
                "ragged ÷ equal",
                "equal, memory (MiB)",
                "ragged, memory (MiB)",
            ],
            rows,
        )
        + "\n"
    )
    path = write_result("speed_ragged", text)
    print(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
