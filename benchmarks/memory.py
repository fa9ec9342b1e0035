"""Peak memory and time of meta-training as inner steps grow: second order, recomputed, first order.

Each configuration runs in its own process. The peak resident memory of a
``fit`` with ``max_iter=0`` (data, network, imports) is subtracted from that
of a short fit, so the number is what the bilevel step itself needs: the
graph through the inner steps that second order keeps for the backward pass,
or, with ``recompute_inner=True``, the few parameter-sized checkpoints and
the one step's graph that the recomputing backward pass keeps. The time per
update is the fastest of skorch's epoch durations over a few short fits of
each mode, the modes taking turns in one process (robust to other load).

Usage: ``python benchmarks/memory.py [--meta-batch 100] [--steps 1 5 10 20 40] [--inner-optimizer sgd]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _common import RESULTS, machine_line, markdown_table, try_pyplot, write_result

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead
steps, mode, batch, iters, inner = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
head = GradientHead(inner_optimizer=inner, inner_steps=steps, first_order=mode == "first",
                    recompute_inner=mode == "recomputed")
est = MetaRegressor(head=head, meta_batch_size=batch, max_iter=iters, compile=False, random_state=0)
est.fit(X, y, groups=g)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

# Times the three modes in one process, in turns, so that other load on the machine falls on all of them alike.
TIMER = r"""
import json, sys, torch
torch.set_num_threads(1)
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead
steps, batch, rounds, iters, inner = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
durations = {"second": [], "recomputed": [], "first": []}
for _ in range(rounds):
    for mode in durations:
        head = GradientHead(inner_optimizer=inner, inner_steps=steps, first_order=mode == "first",
                            recompute_inner=mode == "recomputed")
        est = MetaRegressor(head=head, meta_batch_size=batch, max_iter=iters, compile=False, random_state=0)
        est.fit(X, y, groups=g)
        durations[mode] += [row["dur"] for row in est.history_][1:]  # the first update warms up
print(json.dumps({mode: 1000 * min(d) for mode, d in durations.items()}))
"""

MODES = {"second": "second order", "recomputed": "second order, recompute_inner", "first": "first order"}


def run_child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    parser.add_argument("--iterations", type=int, default=3, help="updates of each memory measurement")
    parser.add_argument("--rounds", type=int, default=6, help="fits of 5 updates per mode for the time")
    parser.add_argument("--inner-optimizer", default="sgd")
    parser.add_argument("--output", default="memory")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in every child: the machine line says so
    start = time.perf_counter()
    mib, ms = {}, {}
    for steps in args.steps:
        base = run_child(CHILD, steps, "second", args.meta_batch, 0, args.inner_optimizer)["peak_kib"]
        times = run_child(TIMER, steps, args.meta_batch, args.rounds, 5, args.inner_optimizer)
        for mode in MODES:
            peak = run_child(CHILD, steps, mode, args.meta_batch, args.iterations, args.inner_optimizer)["peak_kib"]
            mib[(steps, mode)] = (peak - base) / 1024
            ms[(steps, mode)] = times[mode]
            print(f"  {steps:>2} steps, {MODES[mode]}: {mib[(steps, mode)]:.1f} MiB, {ms[(steps, mode)]:.1f} ms/update")
    rows = [
        [
            steps,
            *(f"{mib[(steps, mode)]:.1f}" for mode in MODES),
            *(f"{ms[(steps, mode)]:.1f}" for mode in MODES),
            f"{ms[(steps, 'recomputed')] / ms[(steps, 'second')]:.2f}",
        ]
        for steps in args.steps
    ]
    header = [
        "inner steps",
        "second order (MiB)",
        "recomputed (MiB)",
        "first order (MiB)",
        "second order (ms/update)",
        "recomputed (ms/update)",
        "first order (ms/update)",
        "time recomputed / second order",
    ]
    command = f"python benchmarks/memory.py --meta-batch {args.meta_batch} --steps {' '.join(map(str, args.steps))}"
    if args.inner_optimizer != "sgd":
        command += f" --inner-optimizer {args.inner_optimizer} --output {args.output}"
    text = (
        "## Peak memory and time of meta-training\n\n"
        f"Command: `{command}` ({time.perf_counter() - start:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n"
        f'MetaRegressor(head=GradientHead(inner_optimizer="{args.inner_optimizer}")), MLP 40-40, sinusoid '
        f"tasks, K = 10 support + 10 query rows, meta-batch {args.meta_batch}, `compile=False`. Memory: extra "
        f"peak resident memory of a `fit` of {args.iterations} updates over the same `fit` with `max_iter=0`, "
        "each in its own process (MiB). Time: the fastest update of "
        f"{args.rounds} fits of 5 updates per mode (the first update of each fit left out), the three modes "
        "fitted in turns in one process so that other load on the machine falls on all of them alike. "
        "Second order keeps the graph through every inner step for the backward pass; `recompute_inner=True` "
        "keeps about log2(steps) + 2 parameter-sized checkpoints of each task's inner trajectory and "
        "recomputes one step's graph at a time in the backward pass (same meta-gradient); first order keeps "
        "no graph through the inner gradients (a different, approximate meta-gradient).\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    plt = try_pyplot()
    if plt is not None:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for mode, label in MODES.items():
            left.plot(args.steps, [mib[(s, mode)] for s in args.steps], marker="o", label=label)
            right.plot(args.steps, [ms[(s, mode)] for s in args.steps], marker="o", label=label)
        left.set(xlabel="inner steps", ylabel="extra peak memory (MiB)", title=f"Memory, meta-batch {args.meta_batch}")
        right.set(xlabel="inner steps", ylabel="ms per update", title="Time per update")
        left.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.output}.png", dpi=110)
        text += f"\n![memory]({args.output}.png)\n"
    path = write_result(args.output, text)
    (RESULTS / f"{args.output}.json").write_text(
        json.dumps(
            {f"{s}-{mode}": {"mib": mib[(s, mode)], "ms_per_update": ms[(s, mode)]} for (s, mode) in mib}, indent=1
        )
    )
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
