"""Concurrency and resources: threads, parallel grid search, long adaptation sessions."""

import resource
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_meta import MetaRegressor

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
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            MetaRegressor(**{**FAST, "max_iter": 3}), {"inner_steps": [1, 2]}, cv=GroupKFold(2), n_jobs=2
        ).fit(X, y, groups=groups)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_adaptation_cycles_do_not_grow_memory(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST, inner_optimizer="adam").fit(X, y, groups=groups)

    def cycles(n):
        for _ in range(n):
            est.partial_adapt(X_test[:10], y_test[:10]).reset_adaptation()

    cycles(500)  # warm up allocators
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycles(3000)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20_000, f"resident memory grew by {grown_kib} KiB over 3000 cycles"
