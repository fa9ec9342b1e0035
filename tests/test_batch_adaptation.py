"""predict(X, groups=..., y_support=..., support=...): adapt to many new tasks in one call.

Every test compares with what a user writes today, one task at a time:
``reset_adaptation().partial_adapt(X_support, y_support).predict(X_task)``.
"""

import numpy as np
import pytest
import sklearn
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import EpisodicClassifier, MetaClassifier, MetaRegressor
from sklearn_meta.estimators import _serving
from sklearn_meta.heads import GradientHead

from .conftest import FAST

GRADIENT = dict(FAST, head=GradientHead(inner_steps=2))  # two steps: a second step must see the first one's update


def _new_tasks(X, groups, seed=0, sizes=(3, 5, 5, 0, 10, 3, 1, 6)):
    """Support masks of unequal sizes (one task without support rows), rows shuffled, string task ids."""
    rng = np.random.RandomState(seed)
    support = np.zeros(len(X), dtype=bool)
    for task, size in zip(np.unique(groups), sizes):
        support[rng.choice(np.flatnonzero(groups == task), size, replace=False)] = True
    order = rng.permutation(len(X))
    labels = np.array([f"store {g}" for g in groups], dtype=object)
    return order, labels[order], support[order]


def _loop(est, X, y, groups, support, method="predict"):
    """The per-task loop the batch call replaces; the estimator is reset afterwards."""
    predict = getattr(est, method) if isinstance(method, str) else method
    out = None
    for task in np.unique(groups):
        rows, rows_support = groups == task, (groups == task) & support
        est.reset_adaptation()
        if rows_support.any():
            est.partial_adapt(X[rows_support], y[rows_support])
        result = predict(X[rows])
        if out is None:
            out = np.zeros((len(X),) + np.shape(result)[1:], dtype=np.asarray(result).dtype)
        out[rows] = result
    est.reset_adaptation()
    return out


@pytest.fixture(scope="module")
def new_sinusoids():
    from sklearn_meta.datasets import make_sinusoid_tasks

    X, y, groups = make_sinusoid_tasks(n_tasks=60, n_samples_per_task=20, random_state=0)
    X_new, y_new, groups_new = make_sinusoid_tasks(n_tasks=8, n_samples_per_task=12, random_state=1)
    order, labels, support = _new_tasks(X_new, groups_new)
    return X, y, groups, X_new[order], y_new[order], labels, support


@pytest.fixture(scope="module")
def regressors(new_sinusoids):
    X, y, groups, *_ = new_sinusoids
    return {
        head: MetaRegressor(**kwargs).fit(X, y, groups=groups)
        for head, kwargs in [("gradient", GRADIENT), ("ridge", FAST)]
    }


@pytest.mark.parametrize("head", ["gradient", "ridge"])
def test_regressor_equals_the_per_task_loop(regressors, new_sinusoids, head):
    est = regressors[head]
    *_, X_new, y_new, groups, support = new_sinusoids
    y_known = np.where(support, y_new, np.nan)  # only the support rows' targets are known
    batch = est.predict(X_new, groups=groups, y_support=y_known, support=support)
    assert batch.shape == (len(X_new),)
    np.testing.assert_allclose(batch, _loop(est, X_new, y_new, groups, support), rtol=1e-5, atol=1e-5)
    # adapting matters: the tasks with support rows differ from the meta-learned model's predictions
    adapted = np.isin(groups, np.unique(groups[support]))
    assert not np.allclose(batch[adapted], est.predict(X_new)[adapted])
    np.testing.assert_allclose(batch[~adapted], est.predict(X_new)[~adapted], rtol=1e-6)  # no support rows


def test_regressor_return_std_equals_the_per_task_loop(regressors, new_sinusoids):
    est = regressors["ridge"]
    *_, X_new, y_new, groups, support = new_sinusoids
    mean, std = est.predict(X_new, return_std=True, groups=groups, y_support=y_new, support=support)
    expected = _loop(est, X_new, y_new, groups, support, lambda X_task: est.predict(X_task, return_std=True)[1])
    np.testing.assert_allclose(std, expected, rtol=1e-5)
    np.testing.assert_allclose(mean, est.predict(X_new, groups=groups, y_support=y_new, support=support))


def test_multi_output_regression(new_sinusoids):
    X, y, groups, X_new, y_new, groups_new, support = new_sinusoids
    est = MetaRegressor(**FAST).fit(X, np.column_stack([y, -y]), groups=groups)
    y_new2 = np.column_stack([y_new, 2 * y_new])
    batch = est.predict(X_new, groups=groups_new, y_support=y_new2, support=support)
    assert batch.shape == (len(X_new), 2)
    np.testing.assert_allclose(batch, _loop(est, X_new, y_new2, groups_new, support), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="y_support has 1 outputs but the model was fitted with 2"):
        est.predict(X_new, groups=groups_new, y_support=y_new, support=support)


def test_chunks_of_bounded_size_give_the_same_predictions(regressors, new_sinusoids, monkeypatch):
    est = regressors["gradient"]
    *_, X_new, y_new, groups, support = new_sinusoids
    whole = est.predict(X_new, groups=groups, y_support=y_new, support=support)
    monkeypatch.setattr(_serving, "_PREDICT_CHUNK", 30)  # a few tasks per vectorised call
    np.testing.assert_allclose(est.predict(X_new, groups=groups, y_support=y_new, support=support), whole, atol=1e-6)
    monkeypatch.setattr(_serving, "_TASK_PARAMETER_CHUNK", 1)  # one task per call
    np.testing.assert_allclose(est.predict(X_new, groups=groups, y_support=y_new, support=support), whole, atol=1e-6)


@pytest.fixture(scope="module")
def new_class_tasks(class_tasks_module):
    X, y, groups, X_new, y_new, groups_new = class_tasks_module
    order, labels, support = _new_tasks(X_new, groups_new, seed=1, sizes=(4, 7, 7, 0, 12, 4, 9, 2))
    return X, y, groups, X_new[order], y_new[order], labels, support


@pytest.fixture(scope="module")
def class_tasks_module():
    from sklearn_meta.datasets import make_classification_tasks

    X, y, groups = make_classification_tasks(n_tasks=40, n_samples_per_task=30, random_state=0)
    return (X, y, groups, *make_classification_tasks(n_tasks=8, n_samples_per_task=30, random_state=1))


@pytest.mark.parametrize("kwargs", [GRADIENT, FAST], ids=["gradient", "ridge"])
def test_classifier_equals_the_per_task_loop(new_class_tasks, kwargs):
    X, y, groups, X_new, y_new, groups_new, support = new_class_tasks
    clf = MetaClassifier(**kwargs).fit(X, y, groups=groups)
    proba = clf.predict_proba(X_new, groups=groups_new, y_support=y_new, support=support)
    np.testing.assert_allclose(proba, _loop(clf, X_new, y_new, groups_new, support, "predict_proba"), atol=1e-6)
    labels = clf.predict(X_new, groups=groups_new, y_support=y_new, support=support)
    np.testing.assert_array_equal(labels, _loop(clf, X_new, y_new, groups_new, support))
    np.testing.assert_array_equal(labels, clf.classes_[proba.argmax(axis=1)])


@pytest.fixture
def episodes(digits_pool):
    """Three new tasks over classes of the pool: 3-way, 2-way (fewer than n_way) and 3-way, rows shuffled."""
    X, y = digits_pool
    rows, tasks = [], []
    for task, classes in [("a", (0, 10, 20)), ("b", (30, 40)), ("c", (70, 50, 60))]:
        for label in classes:
            rows += list(np.flatnonzero(y == label)[:8])
            tasks += [task] * 8
    support = np.tile(np.arange(8) < 3, len(rows) // 8)  # 3 shots per class
    order = np.random.RandomState(0).permutation(len(rows))
    rows, tasks, support = np.array(rows)[order], np.array(tasks)[order], support[order]
    return X, y, X[rows], y[rows], tasks, support


@pytest.mark.parametrize("kwargs", [GRADIENT, FAST], ids=["gradient", "ridge"])
def test_episodic_classifier_takes_each_tasks_classes_from_its_support_rows(episodes, kwargs):
    X, y, X_new, y_new, groups, support = episodes
    clf = EpisodicClassifier(n_way=3, k_shot=3, n_query=5, **kwargs).fit(X, y)
    labels = clf.predict(X_new, groups=groups, y_support=y_new, support=support)
    np.testing.assert_array_equal(labels, _loop(clf, X_new, y_new, groups, support))
    proba = clf.predict_proba(X_new, groups=groups, y_support=y_new, support=support)
    columns = np.unique(y_new[support])  # every task's labels, sorted; zero outside a row's task
    assert proba.shape == (len(X_new), len(columns))
    expected = np.zeros_like(proba)
    for task in np.unique(groups):
        rows = groups == task
        clf.reset_adaptation().partial_adapt(X_new[rows & support], y_new[rows & support])
        expected[np.ix_(rows, np.searchsorted(columns, clf.classes_))] = clf.predict_proba(X_new[rows])
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(labels, columns[proba.argmax(axis=1)])


def _snapshot(est):
    return dict(est.__dict__)


def _assert_unchanged(est, snapshot):
    assert est.__dict__.keys() == snapshot.keys()
    for name, value in snapshot.items():
        assert est.__dict__[name] is value, name


def test_the_estimators_adaptation_is_left_untouched(regressors, new_sinusoids):
    est = regressors["gradient"]
    *_, X_new, y_new, groups, support = new_sinusoids
    est.partial_adapt(X_new[:5], y_new[:5])
    before, snapshot = est.predict(X_new), _snapshot(est)
    est.predict(X_new, groups=groups, y_support=y_new, support=support)
    _assert_unchanged(est, snapshot)
    np.testing.assert_array_equal(est.predict(X_new), before)
    # and the batch call does not start from the current adaptation
    batch = est.predict(X_new, groups=groups, y_support=y_new, support=support)
    np.testing.assert_allclose(batch, _loop(est, X_new, y_new, groups, support), atol=1e-5)


@pytest.mark.parametrize("routing", [False, True])
def test_through_a_pipeline(new_sinusoids, routing):
    pd = pytest.importorskip("pandas")
    X, y, groups, X_new, y_new, groups_new, support = new_sinusoids
    with sklearn.config_context(enable_metadata_routing=routing):
        pipe = make_pipeline(StandardScaler(), MetaRegressor(**FAST))
        pipe.fit(X, y, **({"groups": groups} if routing else {"metaregressor__groups": groups}))
        frame = pd.DataFrame({"y": np.where(support, y_new, np.nan), "support": support, "store": groups_new})
        batch = pipe.predict(X_new, groups=frame["store"], y_support=frame["y"], support=frame["support"])
    # the support rows went through the scaler too: the same as the last step on transformed rows
    est, X_scaled = pipe[-1], pipe[0].transform(X_new)
    np.testing.assert_array_equal(batch, est.predict(X_scaled, groups=groups_new, y_support=y_new, support=support))
    np.testing.assert_allclose(batch, _loop(est, X_scaled, y_new, groups_new, support), rtol=1e-5, atol=1e-5)


def test_predict_requests_the_batch_arguments_by_default():
    for est, methods in [(MetaRegressor(), ["predict"]), (MetaClassifier(), ["predict", "predict_proba"])]:
        routing = est.get_metadata_routing()
        for method in methods:
            requests = getattr(routing, method).requests
            assert {name: requests[name] for name in ("groups", "y_support", "support")} == dict.fromkeys(
                ("groups", "y_support", "support"), True
            )
    assert hasattr(MetaRegressor(), "set_predict_request")


def _bad_regressor_inputs(X, y, groups, support):
    n = len(X)
    nan_at_support = y.copy()
    nan_at_support[np.flatnonzero(support)[0]] = np.nan
    return [
        (dict(groups=groups), "y_support, support are missing"),
        (dict(groups=groups, y_support=y), "support is missing"),
        (dict(y_support=y, support=support), "groups is missing"),
        (dict(groups=groups, y_support=y[:-1], support=support), f"X has {n} rows but y_support has {n - 1}"),
        (dict(groups=groups, y_support=y, support=support[:-1]), f"X has {n} rows but y_support has {n} and support"),
        (dict(groups=groups[:-1], y_support=y, support=support), f"groups has {n - 1} entries but X has {n} rows"),
        (dict(groups=groups, y_support=y, support=support.astype(int)), "support must be a boolean mask"),
        (dict(groups=groups, y_support=nan_at_support, support=support), "y_support is NaN, infinite or None at 1"),
        (dict(groups=groups, y_support=y.astype(str), support=support), "y_support must hold numeric targets"),
    ]


def test_bad_input_gets_a_clear_error_and_changes_nothing(regressors, new_sinusoids):
    est = regressors["ridge"]
    *_, X_new, y_new, groups, support = new_sinusoids
    est.partial_adapt(X_new[:5], y_new[:5])
    try:
        before, snapshot = est.predict(X_new), _snapshot(est)
        for kwargs, message in _bad_regressor_inputs(X_new, y_new, groups, support):
            with pytest.raises(ValueError, match=message):
                est.predict(X_new, **kwargs)
            _assert_unchanged(est, snapshot)
        bad_X = X_new.copy()
        bad_X[0, 0] = np.inf
        with pytest.raises(ValueError, match="Input X contains infinity"):
            est.predict(bad_X, groups=groups, y_support=y_new, support=support)
        with pytest.raises(ValueError, match="X has 2 features"):
            est.predict(np.column_stack([X_new, X_new]), groups=groups, y_support=y_new, support=support)
        with pytest.raises(ValueError, match="return_std=True needs a head with predictive_variance"):
            regressors["gradient"].predict(X_new, return_std=True, groups=groups, y_support=y_new, support=support)
        _assert_unchanged(est, snapshot)
        np.testing.assert_array_equal(est.predict(X_new), before)
    finally:
        est.reset_adaptation()


def test_classifier_bad_labels(new_class_tasks, episodes):
    X, y, groups, X_new, y_new, groups_new, support = new_class_tasks
    clf = MetaClassifier(**FAST).fit(X, y, groups=groups)
    snapshot = _snapshot(clf)
    with pytest.raises(ValueError, match=r"y_support has labels outside classes_ \[0, 1, 2\]: 7"):
        clf.predict(X_new, groups=groups_new, y_support=np.where(support, 7, y_new), support=support)
    nan_label = np.where(support & (groups_new == groups_new[support][0]), np.nan, y_new.astype(float))
    with pytest.raises(ValueError, match=r"y_support is NaN, infinite or None .* \(task ids 'store"):
        clf.predict_proba(X_new, groups=groups_new, y_support=nan_label, support=support)
    # NaN at rows outside the support set is fine
    query_nan = np.where(support, y_new, np.nan)
    np.testing.assert_array_equal(
        clf.predict(X_new, groups=groups_new, y_support=query_nan, support=support),
        clf.predict(X_new, groups=groups_new, y_support=y_new, support=support),
    )
    _assert_unchanged(clf, snapshot)

    X, y, X_new, y_new, groups, support = episodes
    episodic = EpisodicClassifier(n_way=2, k_shot=3, n_query=5, **FAST).fit(X, y)
    snapshot = _snapshot(episodic)
    with pytest.raises(ValueError, match=r"adapts to 2-way tasks but task\(s\) '[ac]', '[ac]' have up to 3 classes"):
        episodic.predict(X_new, groups=groups, y_support=y_new, support=support)
    two_way = ~np.isin(y_new, [20, 70])
    no_support = support & (groups != "b")
    with pytest.raises(ValueError, match=r"task\(s\) 'b' have no support rows"):
        episodic.predict(X_new[two_way], groups=groups[two_way], y_support=y_new[two_way], support=no_support[two_way])
    _assert_unchanged(episodic, snapshot)
    assert not hasattr(episodic, "classes_")  # no adaptation happened


def test_serving_cache_follows_refits_and_pickling(new_sinusoids):
    import pickle

    X, y, groups, X_new, *_ = new_sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    first = est.predict(X_new)
    est.set_params(random_state=1).fit(X, y, groups=groups)
    refitted = MetaRegressor(**dict(FAST, random_state=1)).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_new), refitted.predict(X_new))
    assert not np.array_equal(est.predict(X_new), first)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X_new), est.predict(X_new))
    assert not any(isinstance(v, _serving._Serving) for v in vars(est).values())


def test_serving_fast_path_keeps_every_check(regressors, new_sinusoids, class_tasks_module):
    """predict and partial_adapt skip scikit-learn's validation only for input it would pass unchanged."""
    pd = pytest.importorskip("pandas")
    X, y, groups, X_new, y_new, *_ = new_sinusoids
    est = regressors["ridge"]
    snapshot = _snapshot(est)
    for dtype in (np.float64, np.float32):
        rows = X_new[:10].astype(dtype)
        for value, word in [(np.nan, "NaN"), (np.inf, "infinity")]:
            bad = rows.copy()
            bad[3, 0] = value
            with pytest.raises(ValueError, match=f"Input X contains {word}"):
                est.predict(bad)
            with pytest.raises(ValueError, match=f"Input X contains {word}"):
                est.partial_adapt(bad, y_new[:10])
            with pytest.raises(ValueError, match=f"Input y contains {word}"):
                est.partial_adapt(rows, np.where(np.arange(10) == 3, value, y_new[:10]).astype(dtype))
        with pytest.raises(ValueError, match="X has 2 features, but MetaRegressor is expecting 1"):
            est.predict(np.column_stack([rows, rows]))
        with pytest.raises(ValueError, match="inconsistent numbers of samples"):
            est.partial_adapt(rows, y_new[:9].astype(dtype))
        with pytest.raises(ValueError, match="y has 2 outputs"):
            est.partial_adapt(rows, np.column_stack([y_new[:10], y_new[:10]]).astype(dtype))
        with pytest.raises(ValueError, match="minimum of 1 is required"):
            est.predict(rows[:0])
    _assert_unchanged(est, snapshot)
    # a plain array, a reversed view, float32 and a list all give the same predictions
    expected = est.predict(X_new)
    np.testing.assert_allclose(est.predict(X_new[::-1].copy())[::-1], expected)
    np.testing.assert_allclose(est.predict(X_new.astype(np.float32)), expected, rtol=1e-6)
    np.testing.assert_array_equal(est.predict(X_new.tolist()), expected)
    # a model fitted with feature names still warns about a plain array
    named = MetaRegressor(**FAST).fit(pd.DataFrame(X, columns=["x"]), y, groups=groups)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.predict(X_new)

    X, y, groups, X_clf, y_clf, _ = class_tasks_module
    clf = MetaClassifier(**FAST).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match=r"y has labels outside classes_ \[0, 1, 2\]: 5"):
        clf.partial_adapt(X_clf[:10], np.full(10, 5))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.partial_adapt(X_clf[:10], y_clf[:9])
    assert clf.adapted_params_ is None


def test_classifier_predict_proba_through_a_routed_pipeline(new_class_tasks):
    X, y, groups, X_new, y_new, groups_new, support = new_class_tasks
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(StandardScaler(), MetaClassifier(**FAST)).fit(X, y, groups=groups)
        proba = pipe.predict_proba(X_new, groups=groups_new, y_support=y_new, support=support)
        labels = pipe.predict(X_new, groups=groups_new, y_support=y_new, support=support)
    clf, X_scaled = pipe[-1], pipe[0].transform(X_new)
    np.testing.assert_allclose(proba, _loop(clf, X_scaled, y_new, groups_new, support, "predict_proba"), atol=1e-6)
    np.testing.assert_array_equal(labels, clf.classes_[proba.argmax(axis=1)])
