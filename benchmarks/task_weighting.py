"""How to weigh ragged tasks in the meta-loss: by their query rows or equally? Measured on ragged real data.

In a batch of tasks of different sizes, each task's episode loss is a mean over
its query rows. The batch's meta-loss can then be

* ``rows`` (the default): the tasks' losses weighted by their query rows, i.e.
  the mean loss per query row of the batch, so that a row counts the same in a
  county with 2 homes and in one with 116, as in a mixed model's likelihood;
* ``tasks``: the plain mean over tasks, so that a small group counts as much as
  a large one (MAML's usual episode average).

Protocol: that of ``benchmarks/real_data.py`` (70% / 30% split of the groups,
standardised on the training rows, K revealed rows per new group with at least
K + 1 rows), on its ragged data sets (radon: 1-116 homes per county;
MathAchieve: 14-67 students per school; Milk: 12-19 weeks per cow), with the
default ``MetaRegressor`` (hidden layers (40, 40), ``n_support=K``), fitted
twice per seed and K, once with each weighting, on the same training groups.
Reported: the query MSE of each (standardised units, mean over seeds ± 95%
interval) and their difference paired by seed with a 95% t interval.

``tasks`` is not an option of the estimators; this script replaces
``sklearn_meta.engine._meta.task_weights`` for its fits, and nothing else.

Usage::

    python benchmarks/task_weighting.py            # 5 seeds, K = 3 5 10: ~6 minutes on 2 cores
    python benchmarks/task_weighting.py --seeds 2 --shots 3
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from _common import machine_line, markdown_table, t_half_width, write_result
from joblib import Parallel, delayed
from real_data import COMMON_META, DATASETS, ci, meta_predictions, reveal, score, standardised_split
from threadpoolctl import threadpool_limits

import sklearn_meta.engine._meta as engine_meta
from sklearn_meta import MetaRegressor

WEIGHTINGS = {
    "rows": engine_meta.task_weights,
    "tasks": lambda batch: None if batch.query_mask is None else torch.ones(len(batch.query_mask)),
}
RAGGED = ["radon", "MathAchieve", "Milk"]


def run_unit(name, X_raw, y_raw, groups, seed, shots, max_iter):
    torch.set_num_threads(1)
    records = []
    with threadpool_limits(1):
        train_labels, new_labels, train, X, y = standardised_split(X_raw, y_raw, groups, seed)
        for k in shots:
            tasks = reveal(groups, new_labels, k, seed)
            for weighting, weights in WEIGHTINGS.items():
                engine_meta.task_weights = weights
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est = MetaRegressor(**COMMON_META, n_support=k, max_iter=max_iter, random_state=seed)
                        est.fit(X[train], y[train], groups=groups[train])
                finally:
                    engine_meta.task_weights = WEIGHTINGS["rows"]
                outputs, _ = meta_predictions(est, tasks, X, y)
                records.append(
                    {"dataset": name, "seed": seed, "k": k, "weighting": weighting, **score(outputs, tasks, y)}
                )
    return records


def table(records) -> str:
    rows = []
    for name in dict.fromkeys(r["dataset"] for r in records):
        for k in sorted({r["k"] for r in records if r["dataset"] == name}):
            mse = {
                w: np.array([r["mse"] for r in records if (r["dataset"], r["k"], r["weighting"]) == (name, k, w)])
                for w in WEIGHTINGS
            }
            diff = mse["tasks"] - mse["rows"]
            half = t_half_width(diff)
            verdict = (
                "rows lower" if diff.mean() - half > 0 else "tasks lower" if diff.mean() + half < 0 else "no difference"
            )
            rows.append([name, k, ci(mse["rows"]), ci(mse["tasks"]), f"{diff.mean():+.4f} ± {half:.4f} ({verdict})"])
    return markdown_table(["data set", "K", "rows (default)", "tasks", "tasks − rows, paired"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--datasets", nargs="+", default=RAGGED, choices=list(DATASETS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    loaded = {name: DATASETS[name].load() for name in args.datasets}
    units = [(name, seed) for name in loaded for seed in range(args.seeds)]
    results = Parallel(n_jobs=args.jobs, verbose=5)(
        delayed(run_unit)(name, *loaded[name], seed, args.shots, args.max_iter) for name, seed in units
    )
    records = [r for unit in results for r in unit]
    command = "python benchmarks/task_weighting.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        "## Ragged tasks in the meta-loss: weighted by query rows or equally\n\n"
        f"Command: `{command.strip()}` ({time.perf_counter() - started:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n"
        f"Default MetaRegressor (hidden layers (40, 40), n_support=K, max_iter {args.max_iter}), seeds "
        f"0-{args.seeds - 1}, the protocol of `benchmarks/real_data.py`. Query MSE in standardised units, mean over "
        "seeds ± 95% interval; the paired difference with its 95% t interval.\n\n" + table(records) + "\n"
    )
    path = write_result("task_weighting", text)
    print(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
