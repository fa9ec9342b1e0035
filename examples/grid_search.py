"""
Grid search over meta-hyperparameters with GroupKFold
=====================================================

Gradient steps or a closed-form head, and how deep a body? ``GridSearchCV``
answers it the scikit-learn way. Two things make cross-validation sound for
meta-learning:

- ``cv=GroupKFold(...)`` splits on *tasks*, so every validation fold holds
  tasks that meta-training never saw.
- With metadata routing enabled, ``groups`` reaches ``fit`` (the training
  tasks) and ``score`` (the held-out tasks, scored few-shot: adapt on each
  task's first ``n_support`` rows, score the rest). The estimators request
  ``groups`` by default, so no ``set_fit_request`` call is needed.

Without routing scikit-learn drops ``groups`` before it reaches the
estimator; the last part of the script shows the warning you then get.

Set ``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run. With
matplotlib installed, a bar chart is saved to ``$SKLEARN_META_EXAMPLES_OUT``
or to ``examples/_output/``.
"""

import os
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold
from skorch.callbacks import GradientNormClipping

from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.exceptions import SingleTaskWarning
from sklearn_meta.heads import GradientHead

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # sphinx-gallery sets no __file__
OUT = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or HERE / "_output")

X, y, groups = make_sinusoid_tasks(n_tasks=150 if FAST else 600, n_samples_per_task=20, random_state=0)
X_test, y_test, groups_test = make_sinusoid_tasks(n_tasks=100, n_samples_per_task=20, random_state=1)

# %%
# The search
# ----------
# Every candidate is meta-trained on the tasks of two folds and scored
# few-shot on the tasks of the third.
estimator = MetaRegressor(
    max_iter=10 if FAST else 300, callbacks=[GradientNormClipping(gradient_clip_value=1.0)], random_state=0
)
param_grid = {"head": ["gradient", "ridge"], "hidden_layer_sizes": [(40,), (40, 40)]}
search = GridSearchCV(estimator, param_grid, cv=GroupKFold(n_splits=3))

start = time.perf_counter()
with sklearn.config_context(enable_metadata_routing=True):
    search.fit(X, y, groups=groups)
    test_score = search.score(X_test, y_test, groups=groups_test)
print(f"GridSearchCV: {len(search.cv_results_['params'])} candidates x 3 folds in {time.perf_counter() - start:.1f} s")

# %%
# Results
# -------
results = search.cv_results_
print("\ncv_results_ (few-shot R² on the held-out tasks of each fold)")
print(f"  {'rank':>4}  {'head':<10}{'hidden_layer_sizes':>19}{'mean R²':>10}{'std':>8}{'fit time (s)':>14}")
for i in np.argsort(results["rank_test_score"], kind="stable"):
    print(
        f"  {results['rank_test_score'][i]:>4}  {results['param_head'][i]:<10}"
        f"{str(results['param_hidden_layer_sizes'][i]):>19}{results['mean_test_score'][i]:>10.3f}"
        f"{results['std_test_score'][i]:>8.3f}{results['mean_fit_time'][i]:>14.2f}"
    )
print(f"\nbest_params_: {search.best_params_}")
print(f"best_score_ (cross-validated few-shot R²): {search.best_score_:.3f}")
print(f"refitted best model, few-shot R² on 100 new tasks: {test_score:.3f}")

# %%
# Without metadata routing
# ------------------------
# ``GroupKFold`` still gets ``groups`` (it is the splitter), but the
# estimator does not: it meta-trains on one big "task" and says so.
with sklearn.config_context(enable_metadata_routing=False), warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    one_update = clone(estimator).set_params(head=GradientHead(), max_iter=1)
    GridSearchCV(one_update, {"head__inner_steps": [1]}, cv=GroupKFold(n_splits=3)).fit(X, y, groups=groups)
single_task = [w for w in caught if issubclass(w.category, SingleTaskWarning)]
print(f"\nWithout metadata routing: {len(single_task)} SingleTaskWarning(s), e.g.")
print(f"  {str(single_task[0].message)[:100]}...")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\nmatplotlib is not installed: no figure.")
else:
    labels = [f"{p['head']}\n{p['hidden_layer_sizes']}" for p in results["params"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, results["mean_test_score"], yerr=results["std_test_score"], capsize=4, color="tab:blue")
    ax.set_ylabel("few-shot R² (3-fold GroupKFold)")
    ax.set_title("Grid search over the head and the body")
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "grid_search.png"
    fig.savefig(path, dpi=120)
    print(f"\nFigure saved to {path}")
