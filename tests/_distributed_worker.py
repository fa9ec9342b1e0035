"""One rank of the distributed-fit tests, launched by ``tests/test_distributed.py`` through ``torchrun``.

Every rank runs every scenario in order (the collectives of a scenario must
end before the next begins) and writes what it saw to ``<out>/rank<r>.json``
and the fitted parameters to ``<out>/<scenario>_rank<r>.pt``. The test
process compares them with each other and with single-process fits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings

import numpy as np
from skorch.callbacks import Callback

import sklearn_meta  # noqa: F401 - imported before init_process_group, as in a user's script
from sklearn_meta.heads import GradientHead

# Small models and few updates: the whole launch must stay a few seconds on 2 cores.
COMMON = {"hidden_layer_sizes": (16,), "max_iter": 6, "n_support": 5, "random_state": 0}

# Scenarios whose distributed fit must equal the single-process fit of the same estimator.
EQUIVALENT = {
    "maml_second_order": {"head": GradientHead(inner_optimizer="sgd", first_order=False)},
    "maml_first_order": {"head": GradientHead(inner_optimizer="sgd", first_order=True)},
    "meta_sgd_second_order": {"head": GradientHead(inner_optimizer="meta-sgd", first_order=False)},
    "meta_sgd_first_order": {"head": GradientHead(inner_optimizer="meta-sgd", first_order=True)},
    # 7 tasks per update: the ranks hold 4 and 3 of them, weighted accordingly
    "ridge_uneven_shards": {"meta_batch_size": 7},
}
# Whole groups of different sizes (1 to 12 rows), 7 per update: the ranks hold 4 and 3 groups and
# different numbers of rows, and must still take the single-process step (a per-row mean).
MARGINAL_LIKELIHOOD = {"meta_objective": "marginal_likelihood", "meta_batch_size": 7}


def data():
    from sklearn_meta.datasets import make_sinusoid_tasks

    return make_sinusoid_tasks(n_tasks=40, n_samples_per_task=12, random_state=0)


def estimator(**params):
    from sklearn_meta import MetaRegressor

    return MetaRegressor(**{**COMMON, "meta_batch_size": 8, **params})


def ragged():
    """:func:`data` with rows dropped so that group ``g`` keeps ``1 + g % 12`` of its 12 rows."""
    X, y, groups = data()
    keep = np.concatenate([np.arange(12) < 1 + g % 12 for g in range(40)])
    return X[keep], y[keep], groups[keep]


def own_tasks(X, y, groups, rank, size):
    """The rows of every ``size``-th task, as a data-parallel job loads its own shard."""
    keep = np.isin(groups, np.unique(groups)[rank::size])
    return X[keep], y[keep], groups[keep]


class RankHook(Callback):
    """Runs ``action(net, kwargs)`` in ``hook`` of update ``epoch``, on rank ``rank`` only (this one is ``me``)."""

    def __init__(self, me, rank, epoch, action, hook="on_epoch_end"):
        self.me, self.rank, self.epoch, self.action, self.hook = me, rank, epoch, action, hook

    def _maybe(self, hook, net, kwargs):
        if hook == self.hook and self.me == self.rank and len(net.history) == self.epoch:
            self.action(net, kwargs)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            self._maybe("on_batch_begin", net, kwargs)

    def on_epoch_end(self, net, **kwargs):
        self._maybe("on_epoch_end", net, kwargs)


class ShardSizes(Callback):
    """Records how many tasks of each meta-batch this rank computed."""

    def __init__(self):
        self.sizes = []

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.sizes.append(len(batch[0]))


def _poison(net, kwargs):
    kwargs["batch"].x_support.fill_(float("nan"))


def _fail(net, kwargs):
    raise RuntimeError("a callback failed on this rank")


def _stop(net, kwargs):
    raise KeyboardInterrupt


def _ctrl_c(net, kwargs):
    os.kill(os.getpid(), signal.SIGINT)


def scenarios(rank, size):
    """Name -> (estimator, X, y, groups) for this rank."""
    X, y, groups = data()
    mine = own_tasks(X, y, groups, rank, size)
    out = {name: (estimator(**params, callbacks=[ShardSizes()]), X, y, groups) for name, params in EQUIVALENT.items()}
    out["marginal_likelihood_ragged"] = (estimator(**MARGINAL_LIKELIHOOD, callbacks=[ShardSizes()]), *ragged())
    # one whole group per update cannot be shared by two ranks (episodes draw tasks with replacement)
    out["marginal_likelihood_one_group"] = (estimator(**MARGINAL_LIKELIHOOD), X, y, np.zeros(len(y)))
    # each rank its own tasks, and no random_state: rank 0's seeds and parameters must win
    out["own_tasks"] = (estimator(random_state=None), *mine)
    out["own_tasks_early_stopping"] = (
        estimator(random_state=None, early_stopping=True, validation_fraction=0.25, n_iter_no_change=2, tol=10.0,
                  max_iter=30),
        *mine,
    )  # fmt: skip

    def hooked(action, epoch, hook="on_epoch_end"):
        return estimator(callbacks=[RankHook(rank, 1, epoch, action, hook)])

    out["non_finite_on_rank_1"] = (hooked(_poison, 3, "on_batch_begin"), X, y, groups)
    out["error_on_rank_1"] = (hooked(_fail, 2), X, y, groups)
    out["stop_on_rank_1"] = (hooked(_stop, 2), X, y, groups)
    out["ctrl_c_on_rank_1"] = (hooked(_ctrl_c, 2), X, y, groups)
    bad_y = y.copy()
    if rank == 1:
        bad_y[0] = np.nan
    out["bad_input_on_rank_1"] = (estimator(), X, bad_y, groups)
    wide = np.hstack([X, X]) if rank == 1 else X
    out["different_features"] = (estimator(), wide, y, groups)
    return out


def main(out_dir):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    report = {}
    for name, (est, X, y, groups) in scenarios(rank, size).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                est.fit(X, y, groups=groups)
                error = None
            except BaseException as exc:  # noqa: BLE001 - the test checks which
                error = {"type": type(exc).__name__, "message": str(exc)}
        fitted = hasattr(est, "module_")
        shards = [c for c in est.callbacks or [] if isinstance(c, ShardSizes)]
        report[name] = {
            "error": error,
            "fitted": fitted,
            "n_iter": getattr(est, "n_iter_", None),
            "shard_sizes": shards[0].sizes if shards else None,
            "batch_sizes": [row["batches"][0]["train_batch_size"] for row in est.history_] if fitted else None,
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        }
        if fitted:
            torch.save(est.module_.state_dict(), os.path.join(out_dir, f"{name}_rank{rank}.pt"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}_teardown.json"), "w") as f:
        json.dump({"threads": native_threads()}, f)


def native_threads():
    """This process's threads by name (Linux), or None where /proc does not list them."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return None
    names = []
    for tid in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, tid, "comm")) as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


if __name__ == "__main__":
    main(sys.argv[1])
