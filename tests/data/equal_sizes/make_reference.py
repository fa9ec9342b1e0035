"""Write reference.npz: meta-training trajectories on tasks of equal sizes, before tasks could be ragged.

Run with sklearn-meta at commit 9e50a5b (before padded, masked batches) from the repository root::

    git worktree add /tmp/before 9e50a5b
    cd /tmp/before && python /path/to/tests/data/equal_sizes/make_reference.py /path/to/tests/data/equal_sizes

The test (tests/test_tasks.py) refits the same configurations with this version and requires the same
loss curves and predictions: tasks of equal sizes take no masks, so nothing changes (bit for bit on the
machine that wrote the file; to float32 rounding on a CPU with another instruction set).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks
from sklearn_meta.heads import GradientHead

torch.set_num_threads(1)
FAST = dict(hidden_layer_sizes=(16,), max_iter=10, meta_batch_size=5, random_state=0)

CONFIGS = {
    "regressor_ridge": (MetaRegressor, {}),
    "regressor_ridge_fraction": (MetaRegressor, {"n_support": 0.25, "n_query": 5}),
    "regressor_maml": (MetaRegressor, {"head": GradientHead(inner_steps=2)}),
    "regressor_recompute": (MetaRegressor, {"head": GradientHead(inner_steps=3, recompute_inner=True)}),
    "regressor_marginal": (MetaRegressor, {"meta_objective": "marginal_likelihood"}),
    "regressor_early_stopping": (MetaRegressor, {"early_stopping": True, "max_iter": 20}),
    # MetaClassifier's defaults when the reference was written (head="logistic", meta_lr=3e-3 since):
    "classifier_ridge": (MetaClassifier, {"head": "ridge", "meta_lr": 1e-3}),
    "classifier_prototypes": (MetaClassifier, {"head": "prototypes", "meta_lr": 1e-3}),
    "classifier_gradient": (MetaClassifier, {"head": "gradient", "meta_lr": 1e-3}),
}


def trajectories():
    X, y, groups = make_sinusoid_tasks(n_tasks=60, n_samples_per_task=20, random_state=0)
    Xc, yc, gc = make_classification_tasks(n_tasks=40, n_samples_per_task=30, random_state=0)
    out = {}
    for name, (cls, kwargs) in CONFIGS.items():
        data = (X, y, groups) if cls is MetaRegressor else (Xc, yc, gc)
        est = cls(**{**FAST, **kwargs}).fit(data[0], data[1], groups=data[2])
        out[f"{name}__loss"] = np.asarray(est.loss_curve_)
        out[f"{name}__score"] = np.asarray(est.score(data[0][:200], data[1][:200], groups=data[2][:200]))
        est.partial_adapt(data[0][:10], data[1][:10])
        out[f"{name}__predict"] = (
            est.predict_proba(data[0][10:20]) if cls is MetaClassifier else est.predict(data[0][10:20])
        )
    return out


if __name__ == "__main__":
    np.savez(Path(sys.argv[1]) / "reference.npz", **trajectories())
