"""
Meta-training on several processes with torch.distributed
=========================================================

``fit`` called inside an initialised ``torch.distributed`` process group of
several processes meta-trains *one* model together:

- every rank draws the same meta-batch from the same seeded generator and
  computes the meta-gradient of its own slice of it;
- the meta-loss and meta-gradients are averaged in one ``all_reduce``, and
  every rank takes the same optimizer step, starting from rank 0's
  parameters;
- only rank 0 prints (``verbose``); rank 0 saves.

Each rank may hold different tasks (its shard of the data, as data-parallel
jobs load them): the ranks still end with identical parameters. With the
same data on every rank the result equals a single-process fit with the same
``random_state``.

The usual launch is ``torchrun``::

    torchrun --standalone --nproc-per-node=2 examples/distributed_meta_training.py

(``--nnodes``/``--rdzv-endpoint`` across machines; backend ``gloo`` on CPU,
``nccl`` with one GPU per rank and ``device="cuda"``). Run plainly,
``python examples/distributed_meta_training.py``, the script starts that
command on itself and prints what rank 0 printed.

On a 2-core machine two processes show the cost of the exchange rather than
a speed-up; ``benchmarks/distributed.py`` measures both. Set
``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"


def script_path() -> Path:
    if "__file__" in globals():
        return Path(__file__).resolve()
    # sphinx-gallery runs the example with no __file__, from the examples folder
    name = "distributed_meta_training.py"
    for candidate in (Path.cwd() / name, Path.cwd() / "examples" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("run this script from the repository root or the examples/ folder")


# %%
# What every rank runs
# --------------------
# Plain scikit-learn code: initialise the process group, load this rank's
# tasks, ``fit``. Nothing in the estimator's arguments says "distributed".
def rank_main():
    import joblib
    import numpy as np
    import torch
    import torch.distributed as dist

    from sklearn_meta import MetaRegressor
    from sklearn_meta.datasets import make_sinusoid_tasks

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()

    # Each rank loads only its shard of the tasks (every world-th task).
    X, y, groups = make_sinusoid_tasks(n_tasks=400 if FAST else 2000, n_samples_per_task=20, random_state=0)
    mine = np.isin(groups, np.unique(groups)[rank::world])
    est = MetaRegressor(max_iter=20 if FAST else 500, meta_batch_size=32, random_state=0, verbose=0)
    start = time.perf_counter()
    est.fit(X[mine], y[mine], groups=groups[mine])
    seconds = time.perf_counter() - start

    # The ranks hold identical parameters: compare a checksum across them.
    checksum = torch.stack([p.double().sum() for p in est.module_.parameters()]).sum().reshape(1)
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(sums, checksum)
    if rank == 0:
        print(f"{world} ranks, {est.n_iter_} updates of {est.meta_batch_size} tasks in {seconds:.1f} s")
        print(f"each rank trained on its own {len(np.unique(groups[mine]))} tasks")
        print(f"ranks hold identical parameters: {all(bool(s == sums[0]) for s in sums)}")
        X_new, y_new, g_new = make_sinusoid_tasks(n_tasks=100, n_samples_per_task=20, random_state=1)
        print(f"few-shot R² on 100 new tasks (rank 0's model): {est.score(X_new, y_new, groups=g_new):.3f}")
        path = Path(os.environ["SKLEARN_META_SAVE_TO"]) / "model.joblib"
        joblib.dump(est, path)  # only rank 0 saves
        print(f"rank 0 saved the model to {path.name}")
        save_curve(est, world)
    dist.destroy_process_group()


def save_curve(est, world):
    """Rank 0's meta-loss per update (every rank's is the same: it is the averaged one)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure.")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, est.n_iter_ + 1), est.loss_curve_)
    ax.set(xlabel="outer update", ylabel="meta-loss (averaged over the ranks)", yscale="log",
           title=f"Meta-training on {world} processes")  # fmt: skip
    fig.tight_layout()
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    out = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or here / "_output")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "distributed_meta_training.png"
    fig.savefig(path, dpi=120)
    print(f"Figure saved to {path}")


# %%
# Launching
# ---------
# ``torchrun`` sets the environment every rank reads; run without it, the
# script launches itself with two processes on this machine.
if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    rank_main()
else:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                   str(script_path())]  # fmt: skip
        print("$ torchrun --standalone --nproc-per-node=2", script_path().name)
        env = {**os.environ, "SKLEARN_META_SAVE_TO": folder, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        print(done.stdout.rstrip())
        if done.returncode:
            sys.exit(f"torchrun failed:\n{done.stderr[-3000:]}")
