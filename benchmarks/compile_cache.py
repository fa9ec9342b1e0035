"""What torch's compile caches save on a second fit with the same shapes, and when compiling pays.

Each configuration runs three fresh processes with the same
``TORCHINDUCTOR_CACHE_DIR`` (a new, empty folder per configuration):

1. ``compile=False``: the eager time per update;
2. ``compile=True``, caches cold: the first update's extra time is the
   compilation;
3. ``compile=True`` again, caches warm (inductor's FX graph cache and
   AOTAutograd's cache, on by default): what is left of the compilation.

From these it prints the number of updates after which compiling pays back,
cold and warm: the numbers behind ``compile="auto"``.

Usage: ``python benchmarks/compile_cache.py [--iterations 200]``
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

from _common import RESULTS, fmt, machine_line, markdown_table, write_result

ROOT = Path(__file__).resolve().parents[1]

# name: estimator arguments, as JSON for the child process; a dict "head" is GradientHead's arguments
CONFIGS = {
    "MAML, 5 steps, second order": {"head": {"inner_steps": 5}},
    "Meta-SGD, 1 step": {"head": {"inner_optimizer": "meta-sgd"}},
    "default (ridge head)": {},
}

CHILD = r"""
import json, statistics, sys, time, warnings
import torch
torch.set_num_threads(1)
from skorch.callbacks import Callback
from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead
params, compile_, iters = json.loads(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
if isinstance(params.get("head"), dict):  # GradientHead's arguments
    params["head"] = GradientHead(**params["head"])
X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
stamps = []
class Stamp(Callback):
    def on_train_begin(self, net, **kwargs):
        stamps.append(time.perf_counter())
    def on_epoch_end(self, net, **kwargs):
        stamps.append(time.perf_counter())
est = MetaRegressor(hidden_layer_sizes=(40, 40), max_iter=iters, compile=compile_, random_state=0,
                    callbacks=[Stamp()], **params)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    est.fit(X, y, groups=g)
durations = [b - a for a, b in zip(stamps, stamps[1:])]
failed = [str(w.message)[:200] for w in caught if "torch.compile failed" in str(w.message)]
print(json.dumps({"first": durations[0], "median": statistics.median(durations[5:]), "failed": failed}))
"""


def run(params: dict, compile_: bool, iters: int, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, json.dumps(params), "1" if compile_ else "0", str(iters)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", default="compile_cache")
    args = parser.parse_args()
    start = time.perf_counter()
    rows, records = [], []
    for name in args.configs:
        with tempfile.TemporaryDirectory() as cache:
            eager = run(CONFIGS[name], False, args.iterations, cache)
            cold = run(CONFIGS[name], True, args.iterations, cache)
            warm = run(CONFIGS[name], True, args.iterations, cache)
        record = {"config": name, "eager": eager, "cold": cold, "warm": warm}
        records.append(record)
        if cold["failed"]:
            rows.append([name, fmt(eager["median"] * 1e3), "compile failed", "", "", "", "", ""])
            print(name, "compile failed:", cold["failed"][0], flush=True)
            continue
        saved = eager["median"] - cold["median"]  # seconds saved per update once compiled
        cold_cost, warm_cost = cold["first"] - eager["median"], warm["first"] - eager["median"]
        payback = [f"{c / saved:,.0f}" if saved > 0 else "never" for c in (cold_cost, warm_cost)]
        rows.append([
            name, fmt(eager["median"] * 1e3), fmt(cold["median"] * 1e3), f"{eager['median'] / cold['median']:.2f}",
            f"{cold_cost:.1f}", f"{warm_cost:.1f}", *payback,
        ])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    header = [
        "configuration",
        "eager (ms/update)",
        "compiled (ms/update)",
        "speed-up",
        "compilation, cold caches (s)",
        "compilation, warm caches (s)",
        "pays back after (updates), cold",
        "pays back after (updates), warm",
    ]
    text = (
        "## torch.compile: cold and warm caches\n\n"
        f"Command: `python benchmarks/compile_cache.py --iterations {args.iterations}` "
        f"({time.perf_counter() - start:.0f} s)\n\n"
        f"Machine: {machine_line(threads=False)}; 1 intra-op thread.\n\n"
        "MetaRegressor, MLP 40-40, sinusoid tasks, meta-batch 25, each run a fresh process sharing one "
        "`TORCHINDUCTOR_CACHE_DIR` per configuration (empty before the cold run). Compilation: the first "
        "update's time minus an eager update's. Pays back after: compilation / (eager - compiled time per "
        "update).\n\n" + markdown_table(header, rows) + "\n"
    )
    path = write_result(args.output, text)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(records, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
