"""Speed as a new user gets it: torch's default threads against one thread, on a quiet and a busy machine.

Two tables, every number from a fresh process:

1. **Threads.** Milliseconds per outer update with 1 intra-op thread and
   with all cores, for networks from the default MLP to bodies far larger,
   next to the floating-point work of one forward pass over an update's rows
   (``torch.utils.flop_counter``). It is the measurement behind
   ``n_threads="auto"``: one thread below
   ``sklearn_meta.training._threads.AUTO_THRESHOLD``, the caller's threads
   above it.
2. **Out of the box.** The README's main example
   (``examples/sinusoid_quickstart.py``, wall time of the whole script) and a
   fixed ``fit`` (400 Meta-SGD updates), each with the package's defaults,
   with ``OMP_NUM_THREADS=1``, and (the fit) with ``n_threads=None`` (torch's
   default threads, the behaviour before ``n_threads``), on a quiet machine
   and with one other CPU-bound process running. Settings are interleaved
   and each cell is the median of ``--repeats`` runs.

Usage: ``python benchmarks/out_of_the_box.py [--repeats 3] [--skip-example] [--skip-threads]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, fmt, machine_line, markdown_table, write_result

ROOT = Path(__file__).resolve().parents[1]

# Networks for the threads table: (name, estimator, arguments, data)
NETWORKS = {
    "MLP 40-40 (default), 1 feature": ("regressor", {}, "sinusoid"),
    "MLP 256-256, 64 features": ("regressor", {"hidden_layer_sizes": (256, 256)}, "wide64"),
    "CNN 32 channels, 8x8 digits, 3-way 5-shot": ("classifier", {"module": "cnn32"}, "digits"),
    "MLP 1024-1024, 256 features": ("regressor", {"hidden_layer_sizes": (1024, 1024)}, "wide256"),
    "CNN 64 channels, 16x16 images, 3-way 5-shot": ("classifier", {"module": "cnn64"}, "images16"),
}

THREADS_CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from skorch.callbacks import Callback
from sklearn_meta import EpisodicClassifier, MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.modules import ConvNet

kind, params, data = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
threads, iters = int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)

rng = np.random.default_rng(0)
if data == "sinusoid":
    X, y, g = make_sinusoid_tasks(n_tasks=500, n_samples_per_task=20, random_state=0)
elif data.startswith("wide"):
    d = int(data[4:])
    X = rng.normal(size=(10000, d)); g = np.repeat(np.arange(500), 20); y = X[:, 0] * rng.normal(size=500)[g]
else:
    side = 8 if data == "digits" else 16
    X = rng.normal(size=(3000, side * side)).astype(np.float32); y = np.repeat(np.arange(10), 300)
    X += y[:, None] * 0.1; g = None
if "module" in params:
    params.update(module=ConvNet, module_kwargs={"channels": 32 if params["module"] == "cnn32" else 64})
stamps = []
class Stamp(Callback):
    def on_epoch_end(self, net, **kwargs):
        stamps.append(time.perf_counter())
common = dict(max_iter=iters, random_state=0, n_threads=None, callbacks=[Stamp()], compile=False)
if kind == "classifier":
    est = EpisodicClassifier(n_way=3, k_shot=5, n_query=5, **common, **params).fit(X, y)
    rows = 3 * (5 + 5)
else:
    est = MetaRegressor(**common, **params).fit(X, y, groups=g)
    rows = 20
batch = np.asarray(X[: est.meta_batch_size * rows], dtype=np.float32)
with torch.no_grad(), FlopCounterMode(display=False) as counter:
    est.module_.network(torch.from_numpy(batch))
durations = [b - a for a, b in zip(stamps, stamps[1:])][3:]
print(json.dumps({"ms": 1e3 * statistics.median(durations), "flops": counter.get_total_flops()}))
"""

FIT_CHILD = r"""
import json, sys, time
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead
n_threads = json.loads(sys.argv[1])
X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
est = MetaRegressor(head=GradientHead(inner_optimizer="meta-sgd"), max_iter=400, random_state=0, n_threads=n_threads)
start = time.perf_counter()
est.fit(X, y, groups=g)
print(json.dumps({"s": time.perf_counter() - start}))
"""


def _env(omp: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    env["MPLBACKEND"] = "Agg"
    if omp:
        env["OMP_NUM_THREADS"] = "1"
    return env


def _child(code: str, args: list[str], omp: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(omp), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def threads_table(iters: int, repeats: int) -> tuple[str, list]:
    cores = os.cpu_count() or 1
    rows, records = [], []
    for name, (kind, params, data) in NETWORKS.items():
        ms = {1: [], cores: []}
        for _ in range(repeats):  # interleaved, each a fresh process
            for threads in ms:
                result = _child(THREADS_CHILD, [kind, json.dumps(params), data, str(threads), str(iters)])
                ms[threads].append(result["ms"])
        one, many = statistics.median(ms[1]), statistics.median(ms[cores])
        records.append({"network": name, "flops": result["flops"], "ms_1": ms[1], f"ms_{cores}": ms[cores]})
        rows.append([name, f"{result['flops'] / 1e6:,.1f}", fmt(one), fmt(many), f"{one / many:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    header = ["network", "MFLOP per forward of an update's rows", "1 thread (ms/update)",
              f"{cores} threads (ms/update)", f"speed-up of {cores} threads"]  # fmt: skip
    return markdown_table(header, rows), records


class Competitor:
    """One other CPU-bound process, as on a shared machine."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def out_of_the_box(repeats: int, example: bool) -> tuple[str, list]:
    # (workload, setting) -> command, environment
    cases = {}
    if example:
        script = [str(ROOT / "examples" / "sinusoid_quickstart.py")]
        cases[("README example (whole script)", "defaults")] = (script, False)
        cases[("README example (whole script)", "OMP_NUM_THREADS=1")] = (script, True)
    fit = ["-c", FIT_CHILD]
    cases[("fit, 400 Meta-SGD updates", "defaults")] = ([*fit, '"auto"'], False)
    cases[("fit, 400 Meta-SGD updates", "OMP_NUM_THREADS=1")] = ([*fit, '"auto"'], True)
    cases[("fit, 400 Meta-SGD updates", "n_threads=None (torch's threads)")] = ([*fit, "null"], False)
    times: dict = {}
    for condition in ("quiet", "one other CPU-bound process"):
        for _ in range(repeats):
            for key, (args, omp) in cases.items():  # interleaved: drift hits every setting alike
                with Competitor() if condition != "quiet" else _nothing():
                    start = time.perf_counter()
                    out = subprocess.run([sys.executable, *args], env=_env(omp), capture_output=True, text=True)
                    wall = time.perf_counter() - start
                if out.returncode:
                    raise RuntimeError(out.stderr[-2000:])
                seconds = json.loads(out.stdout.strip().splitlines()[-1])["s"] if args[0] == "-c" else wall
                times.setdefault((condition, *key), []).append(seconds)
                print(f"  {condition} | {key[0]} | {key[1]}: {seconds:.1f} s", flush=True)
    rows, records = [], []
    for condition in ("quiet", "one other CPU-bound process"):
        for workload in dict.fromkeys(k[0] for k in cases):
            settings = [k[1] for k in cases if k[0] == workload]
            medians = {s: statistics.median(times[(condition, workload, s)]) for s in settings}
            best = min(medians.values())
            for setting in settings:
                spread = times[(condition, workload, setting)]
                rows.append([condition, workload, setting, f"{medians[setting]:.1f}",
                             f"{min(spread):.1f}-{max(spread):.1f}", f"{medians[setting] / best:.2f}"])  # fmt: skip
                records.append({"condition": condition, "workload": workload, "setting": setting, "seconds": spread})
    header = ["machine", "workload", "setting", "median (s)", "range (s)", "÷ best setting"]
    return markdown_table(header, rows), records


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads-iterations", type=int, default=30)
    parser.add_argument("--skip-example", action="store_true", help="leave out the README example (45 s a run)")
    parser.add_argument("--skip-threads", action="store_true")
    parser.add_argument("--output", default="out_of_the_box")
    args = parser.parse_args()
    start = time.perf_counter()
    sections, records = [], {}
    if not args.skip_threads:
        table, records["threads"] = threads_table(args.threads_iterations, args.repeats)
        sections.append(
            "### Threads: one against all cores\n\nMedian update of a fit of "
            f"{args.threads_iterations} updates (the first 3 left out), default head, meta-batch 25, each run a "
            f"fresh process with `torch.set_num_threads` set first; median of {args.repeats} interleaved runs. "
            "MFLOP: `torch.utils.flop_counter` on one "
            "forward pass of the network over one update's rows (meta-batch x rows per task).\n\n" + table
        )
    table, records["out_of_the_box"] = out_of_the_box(args.repeats, not args.skip_example)
    sections.append(
        "### Out of the box\n\nEach run a fresh process; settings interleaved; median and range of "
        f'{args.repeats} runs. *defaults*: nothing set (the package picks its threads, `n_threads="auto"`); '
        "*OMP_NUM_THREADS=1*: the environment variable set for the process; *n_threads=None*: torch's own "
        "threads (all cores), the behaviour before `n_threads`. The fit's time is `fit` alone; the README "
        "example's is the whole script (imports, four fits, baselines, the figure). The busy machine runs "
        "one `while True: pass` process beside each run.\n\n" + table
    )
    command = "python benchmarks/out_of_the_box.py " + " ".join(sys.argv[1:])
    text = (
        "## Out-of-the-box speed: threads\n\n"
        f"Command: `{command.strip()}` ({time.perf_counter() - start:.0f} s)\n\n"
        f"Machine: {machine_line(threads=False)}\n\n" + "\n\n".join(sections) + "\n"
    )
    path = write_result(args.output, text)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(records, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
