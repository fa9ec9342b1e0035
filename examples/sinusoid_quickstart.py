"""
Quick start: few-shot sinusoid regression
=========================================

The benchmark of the MAML paper (Finn et al., 2017). Every task is a sine wave
``y = A sin(x - phi)`` with its own amplitude and phase. A
:class:`~sklearn_meta.MetaRegressor` is meta-trained on 2,000 such tasks, rows
grouped into tasks by ``groups``. Given 10 points of a new sine wave, one
``partial_adapt`` call turns the meta-learned network into a good model of
that wave. With its defaults (``head="ridge"``) the network's body is
meta-learned as features and its last layer is fitted to the 10 points in
closed form, as Bayesian linear regression with a meta-learned prior, so
``predict(X, return_std=True)`` also gives error bars. Meta-SGD (one learned
gradient step, ``head=GradientHead(inner_optimizer="meta-sgd")``), the best
gradient-based method on this benchmark, is shown beside it.

The script compares the adapted model with two ordinary baselines: an
``MLPRegressor`` trained on the rows of all tasks pooled together (it can
only learn the average wave, which is close to zero), also fine-tuned on the
10 points, and an ``MLPRegressor`` fitted on the 10 points alone. It also
prints the built-in few-shot score, ``score(X, y, groups=...)``, on held-out
tasks before and after meta-training.

Set ``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run (the numbers
are then meaningless). With matplotlib installed, the figure is saved to
``$SKLEARN_META_EXAMPLES_OUT`` or to ``examples/_output/``.
"""

import copy
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mean_squared_error
from sklearn.neural_network import MLPRegressor
from skorch.callbacks import GradientNormClipping
from threadpoolctl import threadpool_limits

from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import GradientHead

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # sphinx-gallery sets no __file__
OUT = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or HERE / "_output")

N_SUPPORT = 10  # labelled points of a new task
N_TRAIN_TASKS = 200 if FAST else 2000
N_TEST_TASKS = 10 if FAST else 100
MAX_ITER = 50 if FAST else 1000  # the default

# %%
# Data: training tasks, held-out tasks, and one new task to look at
# -----------------------------------------------------------------
# ``groups`` holds the task id of every row. Held-out tasks have 20 rows:
# ``score`` adapts on the first 10 and scores the other 10.
X, y, groups = make_sinusoid_tasks(n_tasks=N_TRAIN_TASKS, n_samples_per_task=20, random_state=0)
X_test, y_test, groups_test = make_sinusoid_tasks(n_tasks=N_TEST_TASKS, n_samples_per_task=20, random_state=1)
X_new, y_new, _, amplitude, phase = make_sinusoid_tasks(
    n_tasks=1, n_samples_per_task=N_SUPPORT + 100, return_params=True, random_state=2
)
X_support, y_support = X_new[:N_SUPPORT], y_new[:N_SUPPORT]
X_query, y_query = X_new[N_SUPPORT:], y_new[N_SUPPORT:]

# %%
# Meta-training
# -------------
# The defaults: a (40, 40) MLP body and a Bayesian ridge head. Meta-SGD learns
# a step size for every weight along with the initialisation, so a single
# inner step adapts well; clipping the meta-gradient keeps those learned step
# sizes from blowing up late in training.
meta = MetaRegressor(n_support=N_SUPPORT, max_iter=MAX_ITER, random_state=0)
meta_sgd = MetaRegressor(
    head=GradientHead(inner_optimizer="meta-sgd"), n_support=N_SUPPORT, max_iter=MAX_ITER,
    callbacks=[GradientNormClipping(gradient_clip_value=1.0)], random_state=0,
)  # fmt: skip
untrained = clone(meta).set_params(max_iter=0)  # the same network, not meta-trained

for name, model in [("the defaults (ridge head)", meta), ("Meta-SGD, 1 inner step", meta_sgd)]:
    print(f"Meta-training MetaRegressor with {name} on {N_TRAIN_TASKS} sinusoid tasks ...")
    start = time.perf_counter()
    model.fit(X, y, groups=groups)
    print(f"  {model.n_iter_} outer updates in {time.perf_counter() - start:.1f} s")
untrained.fit(X, y, groups=groups)

# %%
# Few-shot score on held-out tasks
# --------------------------------
# With ``groups``, ``score`` adapts a copy of the model to each task on its
# first ``n_support`` rows and returns the pooled R² on the remaining rows.
print(f"\nFew-shot R² on {N_TEST_TASKS} held-out tasks ({N_SUPPORT} rows to adapt, 10 to score)")
print(f"  {'before meta-training (max_iter=0)':<36}{untrained.score(X_test, y_test, groups=groups_test):>8.3f}")
print(f"  {'after meta-training (defaults)':<36}{meta.score(X_test, y_test, groups=groups_test):>8.3f}")
print(f"  {'after meta-training (Meta-SGD)':<36}{meta_sgd.score(X_test, y_test, groups=groups_test):>8.3f}")

# %%
# Baselines
# ---------
# The baselines are small networks too: numpy's BLAS threads slow them down as torch's threads slow
# small meta-learners. ``MetaRegressor`` picks its own threads (``n_threads="auto"``); scikit-learn
# leaves BLAS at one thread per core, so the script limits it with threadpoolctl (a scikit-learn
# dependency) while the baselines run: measured, this takes a quarter off the script's time.
print("\nFitting the baselines ...")
blas_one_thread = threadpool_limits(limits=1, user_api="blas")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    pooled = MLPRegressor(hidden_layer_sizes=(40, 40), max_iter=5 if FAST else 30, random_state=0).fit(X, y)


def fine_tuned(X_s, y_s):
    """The pooled MLP, fine-tuned on a task's support points."""
    model = copy.deepcopy(pooled).set_params(learning_rate_init=0.01)
    for _ in range(20):
        model.partial_fit(X_s, y_s)
    return model


def from_scratch(X_s, y_s):
    """An MLP fitted on a task's support points alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPRegressor(hidden_layer_sizes=(40, 40), solver="lbfgs", max_iter=1000, random_state=0).fit(X_s, y_s)


def meta_adapted(X_s, y_s):
    """The meta-learned network after partial_adapt on the support points (its last layer fitted to them)."""
    return meta.reset_adaptation().partial_adapt(X_s, y_s)


METHODS = {
    "MetaRegressor, before adaptation": lambda X_s, y_s: meta.reset_adaptation(),
    "MetaRegressor, after partial_adapt": meta_adapted,
    "MetaRegressor (Meta-SGD), after partial_adapt": lambda X_s, y_s: meta_sgd.reset_adaptation().partial_adapt(
        X_s, y_s
    ),
    "MLPRegressor on all tasks pooled": lambda X_s, y_s: pooled,
    "  ... fine-tuned on the support points": fine_tuned,
    "MLPRegressor on the support points only": from_scratch,
}


def query_mse(method, X_s, y_s, X_q, y_q):
    return mean_squared_error(y_q, METHODS[method](X_s, y_s).predict(X_q))


# %%
# Mean squared error on the query points
# --------------------------------------
# First on the new task, then averaged over the held-out tasks.
mse_new = {name: query_mse(name, X_support, y_support, X_query, y_query) for name in METHODS}
mse_held_out = {name: [] for name in METHODS}
for task in np.unique(groups_test):
    rows = np.flatnonzero(groups_test == task)
    support, query = rows[:N_SUPPORT], rows[N_SUPPORT:]
    for name in METHODS:
        mse_held_out[name].append(query_mse(name, X_test[support], y_test[support], X_test[query], y_test[query]))

blas_one_thread.restore_original_limits()

print(f"\nQuery MSE, new task y = {amplitude[0]:.2f} sin(x - {phase[0]:.2f}) and {N_TEST_TASKS} held-out tasks")
print(f"(every method sees the same {N_SUPPORT} support points of each task; lower is better)")
print(f"  {'method':<48}{'new task':>10}{'held-out mean':>15}")
for name in METHODS:
    print(f"  {name:<48}{mse_new[name]:>10.3f}{np.mean(mse_held_out[name]):>15.3f}")

# %%
# Predictions on the new task
# ---------------------------
grid = np.linspace(-5, 5, 200).reshape(-1, 1)
before = meta.reset_adaptation().predict(grid)
after, after_std = meta.partial_adapt(X_support, y_support).predict(grid, return_std=True)
inside = np.abs(meta.predict(X_query) - y_query) <= 1.96 * meta.predict(X_query, return_std=True)[1]
print(f"\nNew task: {inside.mean():.0%} of the {len(y_query)} query points lie inside the 95% predictive interval")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\nmatplotlib is not installed: no figure.")
else:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, amplitude[0] * np.sin(grid - phase[0]), "k-", label="true function")
    ax.plot(grid, before, "--", color="tab:gray", label="meta-learned init, before adaptation")
    ax.plot(grid, after, "-", color="tab:red", label="after partial_adapt")
    ax.fill_between(grid.ravel(), after - 1.96 * after_std, after + 1.96 * after_std, color="tab:red", alpha=0.15,
                    label="95% predictive interval")  # fmt: skip
    ax.plot(grid, pooled.predict(grid), ":", color="tab:blue", label="MLPRegressor on all tasks pooled")
    ax.plot(X_support, y_support, "o", color="tab:red", label=f"{N_SUPPORT} support points")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("Adapting to a new sine wave from 10 points")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "sinusoid_quickstart.png"
    fig.savefig(path, dpi=120)
    print(f"\nFigure saved to {path}")
