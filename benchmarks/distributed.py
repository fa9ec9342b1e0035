"""Meta-training throughput on 1 and 2 processes (torch.distributed, gloo), and the all-reduce's share.

Each configuration is one ``torchrun --standalone --nproc-per-node=N`` launch
(N = 1 is the plain single-process fit: a group of one is not distributed).
Every rank uses one intra-op thread. Inside each rank the script times every
outer update (a skorch callback) and every exchange of the meta-gradient
(``Ranks.exchange``: the one ``all_reduce``, including the wait for the
slower rank), then times the ``all_reduce`` of a buffer of the same size on
its own, back to back, which is the communication cost without the wait.

Usage: ``python benchmarks/distributed.py [--iterations 150] [--meta-batch 32 128]``
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

CONFIGS = {
    # name: estimator arguments
    "default (ridge head)": {},
    "MAML, 1 step, second order": {"head": "gradient", "inner_steps": 1},
    "MAML, 5 steps, second order": {"head": "gradient", "inner_steps": 5},
}

RANK = r"""
import json, os, statistics, sys, time
import torch, torch.distributed as dist
torch.set_num_threads(1)
from skorch.callbacks import Callback
from sklearn_meta import MetaRegressor
from sklearn_meta import _distributed
from sklearn_meta.datasets import make_sinusoid_tasks

params, batch, iterations, out = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if dist.is_initialized() else 0
world = dist.get_world_size() if dist.is_initialized() else 1

exchange_seconds = []
plain = _distributed.Ranks.exchange
def timed_exchange(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return plain(self, *args, **kwargs)
    finally:
        exchange_seconds.append(time.perf_counter() - start)
_distributed.Ranks.exchange = timed_exchange

class Stamps(Callback):
    def initialize(self):
        self.times = []
        return self
    def on_epoch_end(self, net, **kwargs):
        self.times.append(time.perf_counter())

X, y, g = make_sinusoid_tasks(n_tasks=2000, n_samples_per_task=20, random_state=0)
stamps = Stamps()
est = MetaRegressor(hidden_layer_sizes=(40, 40), meta_batch_size=batch, max_iter=iterations, compile=False,
                    random_state=0, callbacks=[stamps], **params)
est.fit(X, y, groups=g)
durations = [b - a for a, b in zip(stamps.times, stamps.times[1:])][5:]  # warm-up left out
result = {"update_s": statistics.median(durations), "world": world}
if exchange_seconds:
    result["exchange_s"] = statistics.median(exchange_seconds[5:])
    n = 1 + sum(p.numel() for p in est.module_.parameters())
    buffer = torch.zeros(n + 3)
    for _ in range(20):
        dist.all_reduce(buffer)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(200):
        dist.all_reduce(buffer)
    result["allreduce_s"] = (time.perf_counter() - start) / 200
    result["numbers"] = n
if rank == 0:
    with open(out, "w") as f:
        json.dump(result, f)
if dist.is_initialized():
    dist.destroy_process_group()
"""


def launch(processes: int, params: dict, batch: int, iterations: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        script, out = Path(folder) / "rank.py", Path(folder) / "result.json"
        script.write_text(RANK)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   str(script), json.dumps(params), str(batch), str(iterations), str(out)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", default="distributed")
    args = parser.parse_args()
    start = time.perf_counter()
    rows, records = [], []
    for name in args.configs:
        for batch in args.meta_batch:
            single = launch(1, CONFIGS[name], batch, args.iterations)
            double = launch(2, CONFIGS[name], batch, args.iterations)
            t1, t2 = single["update_s"], double["update_s"]
            record = {"config": name, "meta_batch": batch, "one": single, "two": double}
            records.append(record)
            rows.append([
                name, batch, fmt(t1 * 1e3), fmt(t2 * 1e3), fmt(batch / t1, 4), fmt(batch / t2, 4), f"{t1 / t2:.2f}",
                f"{100 * double['exchange_s'] / t2:.0f}%", fmt(double["allreduce_s"] * 1e6), double["numbers"],
            ])  # fmt: skip
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    header = [
        "configuration",
        "meta-batch",
        "1 process (ms/update)",
        "2 processes (ms/update)",
        "1 process (tasks/s)",
        "2 processes (tasks/s)",
        "speed-up",
        "exchange share of an update (2 processes)",
        "all-reduce alone (µs)",
        "numbers exchanged",
    ]
    command = f"python benchmarks/distributed.py --iterations {args.iterations} --meta-batch " + " ".join(
        map(str, args.meta_batch)
    )
    text = (
        "## Distributed meta-training: 1 and 2 processes\n\n"
        f"Command: `{command}` ({time.perf_counter() - start:.0f} s)\n\n"
        f"Machine: {machine_line(threads=False)}; every rank uses 1 intra-op thread; backend gloo over localhost.\n\n"
        "MetaRegressor, MLP 40-40, sinusoid tasks (2,000 tasks, K = 10 + 10 rows), the same global meta-batch "
        f"in both columns (2 processes: half each), {args.iterations} updates, median update after 5 warm-up "
        "updates. Exchange share: median time inside the one all-reduce of the meta-gradient (including the "
        "wait for the slower rank) over the median update. All-reduce alone: the same buffer reduced back to "
        "back, 200 times, after a barrier.\n\n" + markdown_table(header, rows) + "\n"
    )
    path = write_result(args.output, text)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(records, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
