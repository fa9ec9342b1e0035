"""Peak memory of meta-training: second order against first order as inner steps grow.

Each configuration runs in its own process. The peak resident memory of a
``fit`` with ``max_iter=0`` (data, network, imports) is subtracted from that
of a short fit, so the number is what the bilevel step itself needs: the
graph through the inner steps that second order keeps for the backward pass.

Usage: ``python benchmarks/memory.py [--meta-batch 100] [--steps 1 5 10 20]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import RESULTS, machine_line, markdown_table, try_pyplot, write_result

CHILD = r"""
import resource, sys, torch
torch.set_num_threads(1)
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
steps, first_order, batch, iters = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
est = MetaRegressor(head="gradient", inner_steps=steps, first_order=first_order, meta_batch_size=batch, max_iter=iters,
                    compile=False, random_state=0)
est.fit(X, y, groups=g)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(steps: int, first_order: bool, batch: int, iters: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), "1" if first_order else "0", str(batch), str(iters)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--output", default="memory")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {}
    for steps in args.steps:
        base = peak_kib(steps, False, args.meta_batch, 0)
        for first_order in (False, True):
            peak = peak_kib(steps, first_order, args.meta_batch, args.iterations)
            results[(steps, first_order)] = (peak - base) / 1024
            order = "first" if first_order else "second"
            print(f"  {steps:>2} steps, {order} order: {results[(steps, first_order)]:.1f} MiB")
    rows = [
        [
            steps,
            f"{results[(steps, False)]:.1f}",
            f"{results[(steps, True)]:.1f}",
            f"{results[(steps, False)] / max(results[(steps, True)], 0.1):.1f}",
        ]
        for steps in args.steps
    ]
    text = (
        "## Peak memory of meta-training\n\n"
        f"Command: `python benchmarks/memory.py --meta-batch {args.meta_batch}` "
        f"({time.perf_counter() - start:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n"
        f"MetaRegressor, MLP 40-40, sinusoid tasks, K = 10 support + 10 query rows, meta-batch {args.meta_batch}, "
        f"{args.iterations} updates. Extra peak resident memory over the same `fit` with `max_iter=0` (MiB); "
        "first-order MAML keeps no graph through the inner gradients, second order does.\n\n"
        + markdown_table(["inner steps", "second order (MiB)", "first order (MiB)", "ratio"], rows)
        + "\n"
    )
    plt = try_pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for first_order, label in ((False, "second order"), (True, "first order")):
            ax.plot(args.steps, [results[(s, first_order)] for s in args.steps], marker="o", label=label)
        title = f"Meta-training memory, meta-batch {args.meta_batch}"
        ax.set(xlabel="inner steps", ylabel="extra peak memory (MiB)", title=title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.output}.png", dpi=110)
        text += f"\n![memory]({args.output}.png)\n"
    path = write_result(args.output, text)
    (RESULTS / f"{args.output}.json").write_text(
        json.dumps({f"{s}-{'fo' if fo else 'so'}": v for (s, fo), v in results.items()}, indent=1)
    )
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
