"""
Grid search on a Dask (or Ray) cluster
======================================

``GridSearchCV`` runs its (candidate, split) fits through joblib, so the
same search runs on a cluster by choosing joblib's backend: nothing changes
in the estimator, the grid, ``GroupKFold`` or metadata routing. Each fit
runs in a worker process of the cluster; ``cv_results_`` is the same as with
``n_jobs=1`` (the script checks it).

Here the cluster is a ``dask.distributed.LocalCluster`` of two worker
processes on this machine; on a real cluster pass the scheduler's address
to ``Client`` instead. Needs ``pip install "sklearn-meta[dask]"``; with
``pip install "sklearn-meta[ray]"`` the script also runs the search on a
local Ray cluster through Ray's joblib backend.

Each worker runs one fit at a time with one torch thread: joblib's workers
limit threads the same way, so a search never oversubscribes the cores.
On 2 cores the cluster is not faster than ``n_jobs=2`` on one machine; the
point is that the code is the same when the workers are many machines. Set
``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run.
"""

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"


def same_results(a, b) -> bool:
    return a.cv_results_["params"] == b.cv_results_["params"] and np.allclose(
        a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"], rtol=1e-6
    )


# %%
# On a Dask cluster
# -----------------
# ``joblib.parallel_backend("dask")`` sends every fit to the cluster the
# current ``Client`` is connected to.
def on_dask(search, X, y, groups):
    import joblib
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(lambda: __import__("sklearn_meta"))  # warm the workers: imports are not part of the search
            start = time.perf_counter()
            with joblib.parallel_backend("dask"):
                fitted = clone(search).set_params(n_jobs=-1).fit(X, y, groups=groups)
            return fitted, time.perf_counter() - start


# %%
# On a Ray cluster
# ----------------
# ``ray.util.joblib.register_ray()`` adds the ``"ray"`` backend; on a
# running cluster ``ray.init(address="auto")`` connects to it.
def on_ray(search, X, y, groups):
    import joblib
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()
        start = time.perf_counter()
        with joblib.parallel_backend("ray"):
            fitted = clone(search).set_params(n_jobs=-1).fit(X, y, groups=groups)
        return fitted, time.perf_counter() - start
    finally:
        ray.shutdown()


# %%
# The search, in one process and on each cluster
# ----------------------------------------------
# The worker processes import this script's module: the search runs under
# ``if __name__ == "__main__"``, as multiprocessing requires.
def main():
    sklearn.set_config(enable_metadata_routing=True)  # groups reach fit and score
    X, y, groups = make_sinusoid_tasks(n_tasks=100 if FAST else 400, n_samples_per_task=20, random_state=0)
    search = GridSearchCV(
        MetaRegressor(max_iter=10 if FAST else 200, random_state=0),
        {"head": ["gradient", "ridge"], "hidden_layer_sizes": [(20,), (40, 40)]},
        cv=GroupKFold(n_splits=3),
    )
    start = time.perf_counter()
    local = clone(search).fit(X, y, groups=groups)
    print(f"n_jobs=1: {time.perf_counter() - start:.1f} s, best_params_ = {local.best_params_}")
    searches = {"n_jobs=1": local}
    for name, run, extra in [("Dask", on_dask, "distributed"), ("Ray", on_ray, "ray")]:
        if importlib.util.find_spec(extra) is None:
            print(f'{name}: not installed (pip install "sklearn-meta[{name.lower()}]")')
            continue
        fitted, seconds = run(search, X, y, groups)
        searches[name] = fitted
        print(f"{name}, 2 worker processes: {seconds:.1f} s, best_params_ = {fitted.best_params_}")
        print(f"{name}: same cv_results_ as n_jobs=1: {same_results(fitted, local)}")
    save_figure(searches)


def save_figure(searches):
    """The mean few-shot R² of every candidate, as each engine computed it: the bars match."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure.")
        return
    params = searches["n_jobs=1"].cv_results_["params"]
    labels = [f"{p['head']}\n{p['hidden_layer_sizes']}" for p in params]
    width = 0.8 / len(searches)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for i, (name, fitted) in enumerate(searches.items()):
        positions = np.arange(len(labels)) + (i - (len(searches) - 1) / 2) * width
        ax.bar(positions, fitted.cv_results_["mean_test_score"], width, label=name)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set(ylabel="few-shot R² (3-fold GroupKFold)", title="The same search on each engine")
    ax.legend()
    fig.tight_layout()
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    out = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or here / "_output")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grid_search_on_a_cluster.png"
    fig.savefig(path, dpi=120)
    print(f"Figure saved to {path}")


if __name__ == "__main__":
    main()
