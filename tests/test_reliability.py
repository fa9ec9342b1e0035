"""Concurrency and resources: threads, parallel grid search, long adaptation sessions."""

import resource
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_meta import MetaRegressor
from sklearn_meta.heads import GradientHead

from .conftest import FAST


def test_predicting_from_several_threads_gives_the_same_answers(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    expected = est.predict(X_test)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: est.predict(X_test), range(32)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_grid_search_in_two_processes(sinusoids):
    X, y, groups, *_ = sinusoids
    searches = {}
    for n_jobs in (1, 2):
        with sklearn.config_context(enable_metadata_routing=True):
            searches[n_jobs] = GridSearchCV(
                MetaRegressor(head=GradientHead(), **{**FAST, "max_iter": 3}),
                {"head__inner_steps": [1, 2]},
                cv=GroupKFold(2),
                n_jobs=n_jobs,
            ).fit(X, y, groups=groups)
    # Worker processes fit and score the same seeded models as the main process does.
    serial, parallel = searches[1].cv_results_, searches[2].cv_results_
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(parallel[key], serial[key], rtol=1e-6, atol=1e-9)
    assert searches[2].best_params_ == searches[1].best_params_
    np.testing.assert_allclose(searches[2].predict(X[:20]), searches[1].predict(X[:20]), rtol=1e-6, atol=1e-7)


def test_adaptation_cycles_do_not_grow_memory(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(head=GradientHead(inner_optimizer="adam"), **FAST).fit(X, y, groups=groups)

    def cycles(n):
        for _ in range(n):
            est.partial_adapt(X_test[:10], y_test[:10]).reset_adaptation()

    cycles(500)  # warm up allocators
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycles(10_000)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20_000, f"resident memory grew by {grown_kib} KiB over 10,000 cycles"


def test_predict_on_a_million_rows_runs_in_bounded_memory(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "hidden_layer_sizes": (64, 64)}).fit(X, y, groups=groups)
    X_big = np.linspace(-5, 5, 1_000_000)[:, None]
    est.predict(X_big[:70_000])  # warm up: one full chunk and a partial one
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prediction = est.predict(X_big)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert prediction.shape == (1_000_000,) and np.isfinite(prediction).all()
    # Unchunked, the two 64-wide hidden layers alone would need 2 x 256 MB.
    assert grown_mib < 150, f"predict grew resident memory by {grown_mib:.0f} MiB"
