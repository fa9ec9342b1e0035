"""GridSearchCV, cross_validate and Pipeline with task-aware splits and metadata routing."""

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.exceptions import SingleTaskWarning, SmallTaskWarning
from sklearn_meta.heads import GradientHead

from .conftest import FAST

CALLS = []


class RecordingRegressor(MetaRegressor):
    """Records which tasks reach fit and score."""

    def fit(self, X, y, groups=None):
        CALLS.append(("fit", None if groups is None else frozenset(groups)))
        return super().fit(X, y, groups=groups)

    def score(self, X, y, groups=None):
        CALLS.append(("score", None if groups is None else frozenset(groups)))
        return super().score(X, y, groups=groups)


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def test_estimators_request_groups_by_default():
    for est in (MetaRegressor(), MetaClassifier()):
        routing = est.get_metadata_routing()
        assert routing.fit.requests == {"groups": True}
        assert routing.score.requests["groups"] is True


def test_grid_search_routes_training_tasks_to_fit_and_held_out_tasks_to_score(sinusoids, routing):
    X, y, groups, *_ = sinusoids
    CALLS.clear()
    search = GridSearchCV(
        RecordingRegressor(**FAST, head=GradientHead()),
        {"head__inner_optimizer": ["sgd", "meta-sgd"]},
        cv=GroupKFold(3),
        refit=True,
    )
    search.fit(X, y, groups=groups)
    fits = [g for kind, g in CALLS if kind == "fit"]
    scores = [g for kind, g in CALLS if kind == "score"]
    assert len(fits) == 2 * 3 + 1 and len(scores) == 2 * 3
    everything = frozenset(groups)
    for fitted, scored in zip(fits, scores):
        assert fitted and scored and not fitted & scored  # held-out tasks only
        assert fitted | scored == everything
    assert fits[-1] == everything  # the refit sees every task
    assert search.best_params_["head__inner_optimizer"] in {"sgd", "meta-sgd"}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_grid_search_without_routing_warns_that_groups_were_dropped(sinusoids):
    X, y, groups, *_ = sinusoids
    search = GridSearchCV(
        MetaRegressor(head=GradientHead(), **{**FAST, "max_iter": 2}), {"head__inner_lr": [0.01]}, cv=GroupKFold(2)
    )
    with pytest.warns(SingleTaskWarning, match="enable_metadata_routing"):
        search.fit(X, y, groups=groups)


def test_cross_validate_with_routed_groups(class_tasks, routing):
    X, y, groups, *_ = class_tasks
    result = cross_validate(MetaClassifier(**FAST), X, y, cv=GroupKFold(3), params={"groups": groups})
    assert len(result["test_score"]) == 3
    assert all(0 <= s <= 1 for s in result["test_score"])


def test_pipeline_with_a_scaler(sinusoids, routing):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    pipe = make_pipeline(StandardScaler(), MetaRegressor(**FAST)).fit(X * 100, y, groups=groups)
    assert np.isfinite(pipe.score(X_test * 100, y_test, groups=groups_test))
    scaler, est = pipe[0], pipe[-1]
    before = pipe.predict(X_test * 100)
    est.partial_adapt(scaler.transform(X_test[:10] * 100), y_test[:10])
    assert not np.allclose(before, pipe.predict(X_test * 100))


def test_pipeline_predicts_with_return_std_under_routing(sinusoids, routing):
    # Bug: Pipeline.predict(X, return_std=True) raised UnsetMetadataPassedError with routing on.
    X, y, groups, X_test, *_ = sinusoids
    pipe = make_pipeline(StandardScaler(), MetaRegressor(**FAST)).fit(X, y, groups=groups)
    mean, std = pipe.predict(X_test, return_std=True)
    np.testing.assert_array_equal(mean, pipe.predict(X_test))
    assert std.shape == mean.shape and (std > 0).all()


def test_get_params_set_params_and_clone():
    est = MetaRegressor(head=GradientHead(inner_optimizer="adam", inner_steps=5), n_support=0.5, callbacks=[])
    params = est.get_params()
    assert params["head__inner_optimizer"] == "adam" and params["n_support"] == 0.5
    twin = clone(est)
    assert twin.get_params(deep=False).keys() == params.keys() - {k for k in params if k.startswith("head__")}
    assert repr(twin) == repr(est) and twin is not est and twin.head is not est.head
    assert est.set_params(head__first_order=True, meta_lr=0.1) is est
    assert est.head.first_order is True and est.meta_lr == 0.1
    # both estimators take the same arguments (a marginal likelihood: the Bayesian ridge and logistic heads')
    episodic = {"n_way", "k_shot", "n_score_episodes"}  # deprecated: EpisodicClassifier's
    assert set(MetaClassifier().get_params()) == set(MetaRegressor().get_params()) | episodic


def test_grid_search_on_a_dask_cluster_gives_the_n_jobs_1_results(sinusoids, routing):
    # joblib's dask backend sends each (candidate, split) fit to a worker process of the cluster;
    # metadata routing and GroupKFold must reach them, and every score must be what one process gets.
    distributed = pytest.importorskip("distributed")
    import joblib

    X, y, groups, *_ = sinusoids
    search = GridSearchCV(
        MetaRegressor(**FAST),
        {"head": ["gradient", "ridge"], "hidden_layer_sizes": [(8,), (16,)]},
        cv=GroupKFold(2),
    )
    local = clone(search).fit(X, y, groups=groups)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client, joblib.parallel_backend("dask"):
            with distributed.get_task_stream(client) as stream:
                remote = clone(search).set_params(n_jobs=-1).fit(X, y, groups=groups)
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2  # the fits ran in both worker processes, not here
    assert remote.cv_results_["params"] == local.cv_results_["params"]
    for key in ("split0_test_score", "split1_test_score", "mean_test_score", "rank_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-6)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.predict(X[:20]), local.predict(X[:20]), rtol=1e-6)


def test_grid_search_on_ray_gives_the_n_jobs_1_results(sinusoids, routing):
    # Ray's joblib backend, where Ray installs (pip install "sklearn-meta[ray]").
    ray = pytest.importorskip("ray")
    import joblib
    from ray.util.joblib import register_ray

    X, y, groups, *_ = sinusoids
    search = GridSearchCV(MetaRegressor(**FAST), {"head": ["gradient", "ridge"]}, cv=GroupKFold(2))
    local = clone(search).fit(X, y, groups=groups)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            remote = clone(search).set_params(n_jobs=-1).fit(X, y, groups=groups)
    finally:
        ray.shutdown()
    assert remote.cv_results_["params"] == local.cv_results_["params"]
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-6)


def test_cross_validation_of_data_with_groups_too_small_to_score(routing):
    # Real grouped data has groups of a few rows (radon: 46 of 85 counties have at most 5 homes). The
    # marginal likelihood trains on them; score() used to raise on them, so every split scored NaN.
    X, y, groups = make_sinusoid_tasks(n_tasks=30, n_samples_per_task=12, random_state=0)
    keep = (groups % 2 == 0) | (np.arange(len(groups)) % 12 < 1)  # every other task keeps 1 row
    est = MetaRegressor(**FAST, n_support=5)
    with pytest.warns(SmallTaskWarning, match="left out of the score"):
        result = cross_validate(est, X[keep], y[keep], params={"groups": groups[keep]}, cv=GroupKFold(3),
                                error_score="raise")  # fmt: skip
    assert np.isfinite(result["test_score"]).all()
