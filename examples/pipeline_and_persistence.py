"""
Pipelines with groups, and saving an adapted model
==================================================

A :class:`~sklearn_meta.MetaRegressor` is an ordinary scikit-learn estimator,
so it goes at the end of a ``Pipeline``. Here the inputs are sine-wave tasks
whose ``x`` is recorded in milliseconds around an offset (``1000 x + 5000``),
a scale on which a network's features saturate and meta-training learns
little (the closed-form head still solves in float64 and stays finite, but
inner gradient steps, ``head="gradient"``, diverge outright); a
``StandardScaler`` in front fixes it.

With metadata routing enabled, ``Pipeline.fit(X, y, groups=...)`` sends
``groups`` to the meta-learner (the scaler does not ask for it) and
``Pipeline.score(X, y, groups=...)`` scores few-shot on held-out tasks.

A ``Pipeline`` has no ``partial_adapt`` method; the function
:func:`sklearn_meta.partial_adapt` adapts a fitted pipeline in one call (the
support rows go through the fitted scaler, which is not refitted, into the
meta-learner's ``partial_adapt``). The adapted pipeline is saved with
``joblib.dump`` and loaded back with identical predictions and the same
adaptation state.

Set ``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run. Files (the
saved model and, with matplotlib, a figure) go to
``$SKLEARN_META_EXAMPLES_OUT`` or to ``examples/_output/``.
"""

import os
import time
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.metrics import mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import MetaRegressor, partial_adapt, reset_adaptation
from sklearn_meta.datasets import make_sinusoid_tasks

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # sphinx-gallery sets no __file__
OUT = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or HERE / "_output")


def in_milliseconds(X):
    return 1000.0 * X + 5000.0


X, y, groups = make_sinusoid_tasks(n_tasks=200 if FAST else 1000, n_samples_per_task=20, random_state=0)
X_test, y_test, groups_test = make_sinusoid_tasks(n_tasks=100, n_samples_per_task=20, random_state=1)
X, X_test = in_milliseconds(X), in_milliseconds(X_test)


def make_meta_regressor():
    return MetaRegressor(max_iter=20 if FAST else 1000, random_state=0)


# %%
# Fit and score with groups, through the pipeline
# -----------------------------------------------
pipe = make_pipeline(StandardScaler(), make_meta_regressor())
bare = make_meta_regressor()
start = time.perf_counter()
with sklearn.config_context(enable_metadata_routing=True):
    pipe.fit(X, y, groups=groups)
    pipe_score = pipe.score(X_test, y_test, groups=groups_test)
bare.fit(X, y, groups=groups)  # routing is only needed by meta-estimators such as Pipeline
bare_score = bare.score(X_test, y_test, groups=groups_test)
print(f"Meta-trained a pipeline and a bare MetaRegressor in {time.perf_counter() - start:.1f} s")
print("\nFew-shot R² on 100 held-out tasks (x in milliseconds)")
print(f"  {'StandardScaler + MetaRegressor':<34}{pipe_score:>12.3f}")
print(f"  {'MetaRegressor on the raw inputs':<34}{bare_score:>12.3g}")

# %%
# Adapt the pipeline to one new task
# ----------------------------------
X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, n_samples_per_task=110, random_state=2)
X_new = in_milliseconds(X_new)
X_support, y_support, X_query, y_query = X_new[:10], y_new[:10], X_new[10:], y_new[10:]

mse_before = mean_squared_error(y_query, pipe.predict(X_query))
partial_adapt(pipe, X_support, y_support)  # same as pipe[-1].partial_adapt(pipe[:-1].transform(X), y)
predictions = pipe.predict(X_query)
mse_after = mean_squared_error(y_query, predictions)
print(f"\nNew task, MSE on 100 query points: {mse_before:.3f} before partial_adapt, {mse_after:.3f} after")

# %%
# Save and load the adapted pipeline
# ----------------------------------
# The fitted state is stored as numpy arrays, so a model fitted on a GPU
# loads on a machine without one.
OUT.mkdir(parents=True, exist_ok=True)
path = OUT / "adapted_pipeline.joblib"
joblib.dump(pipe, path)
loaded = joblib.load(path)
same = np.array_equal(loaded.predict(X_query), predictions)
print(f"\nSaved with joblib.dump to {path} ({path.stat().st_size / 1024:.0f} KiB)")
print(f"  loaded pipeline gives identical predictions: {same}")
print(f"  loaded model is still adapted: {loaded[-1].adapted_params_ is not None}")
reset_adaptation(loaded)
reset_adaptation(pipe)
reset_same = np.array_equal(loaded.predict(X_query), pipe.predict(X_query))
print(f"  after reset_adaptation() on both, identical again: {reset_same}")
if not same:
    raise SystemExit("joblib round trip changed the predictions")

# %%
# skops: a format for files you do not trust
# ------------------------------------------
try:
    import skops.io as sio
except ImportError:
    print("\nskops is not installed: skipping the skops.io round trip.")
else:
    skops_path = OUT / "pipeline.skops"
    sio.dump(pipe, skops_path)
    untrusted = sio.get_untrusted_types(file=skops_path)
    print(f"\nskops.io: types to review before loading: {untrusted}")
    restored = sio.load(skops_path, trusted=untrusted)
    same = np.array_equal(restored.predict(X_query), pipe.predict(X_query))
    print(f"  identical predictions after skops.io.load: {same}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\nmatplotlib is not installed: no figure.")
else:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(pipe[-1].loss_curve_, label="StandardScaler + MetaRegressor", alpha=0.8)
    ax.semilogy(bare.loss_curve_, label="MetaRegressor on the raw inputs", alpha=0.8)
    ax.set_xlabel("outer update")
    ax.set_ylabel("meta-loss (query MSE after adaptation)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    figure = OUT / "pipeline_and_persistence.png"
    fig.savefig(figure, dpi=120)
    print(f"\nFigure saved to {figure}")
