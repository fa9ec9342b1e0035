"""Bad input gets a clear error and changes nothing; odd but valid input works."""

import copy

import numpy as np
import pytest
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.exceptions import SingleTaskWarning, SmallTaskWarning

from .conftest import FAST


@pytest.fixture
def fitted(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    return est, est.predict(X_test), X_test


def _unchanged(est, expected, X_test):
    np.testing.assert_array_equal(est.predict(X_test), expected)


@pytest.mark.parametrize("where", ["X", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_training_data(sinusoids, fitted, where, value):
    X, y, groups, *_ = sinusoids
    est, expected, X_test = fitted
    X, y = X.copy(), y.copy()
    (X if where == "X" else y)[5] = value
    with pytest.raises(ValueError, match=f"Input {where} contains (NaN|infinity)"):
        est.fit(X, y, groups=groups)
    _unchanged(est, expected, X_test)


def test_non_finite_adaptation_and_score_data(fitted, sinusoids):
    est, expected, X_test = fitted
    *_, y_test, groups_test = sinusoids
    bad = X_test[:10].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.partial_adapt(bad, y_test[:10])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(bad)
    with pytest.raises(ValueError, match="Input y contains infinity"):
        est.score(X_test, np.where(groups_test == 2, np.inf, y_test), groups=groups_test)
    _unchanged(est, expected, X_test)


def test_a_one_row_task_is_left_out_of_fit_and_named(sinusoids):
    # Every group counts: a task of 6 rows adapts on 5 of them (n_support=10); only a task of one row,
    # which cannot be both adapted to and predicted, is left out, with a warning naming it.
    X, y, groups, *_ = sinusoids
    keep = ~((groups == 7) & (np.arange(len(groups)) % 20 >= 6)) & ~((groups == 9) & (np.arange(len(groups)) % 20 >= 1))
    with pytest.warns(SmallTaskWarning, match=r"1 of 60 tasks have a single row.*task ids 9\)"):
        est = MetaRegressor(**FAST).fit(X[keep], y[keep], groups=groups[keep])
    assert (est.n_support_, est.n_query_) == (10, 10)  # the widest task's support and query rows


def test_every_task_of_one_row_is_a_clear_error_and_keeps_the_model(sinusoids, fitted):
    X, y, groups, *_ = sinusoids
    est, expected, X_test = fitted
    first = np.arange(len(groups)) % 20 == 0
    with pytest.raises(ValueError, match="every task has a single row"):
        est.fit(X[first], y[first], groups=groups[first])
    _unchanged(est, expected, X_test)


def test_n_query_beyond_what_tasks_leave_takes_what_they_leave(sinusoids):
    X, y, groups, *_ = sinusoids
    capped = MetaRegressor(**FAST, n_query=15).fit(X, y, groups=groups)
    assert capped.n_query_ == 10  # 20 rows, 10 support rows: 10 left in every task
    default = MetaRegressor(**FAST).fit(X, y, groups=groups)
    assert capped.loss_curve_ == default.loss_curve_


def test_score_adapts_small_tasks_on_what_they_have_and_leaves_out_one_row_tasks(fitted, sinusoids):
    # Every group counts: a held-out task of 5 rows (n_support=10) adapts on its first 4 rows and scores
    # the fifth, as partial_adapt on those rows would; a task of one row is left out, with a warning.
    est, expected, X_test = fitted
    *_, y_test, groups_test = sinusoids
    rows = np.concatenate([np.arange(20), np.arange(20, 25), np.arange(40, 60), [60]])  # 20, 5, 20 and 1 rows
    X_s, y_s, g_s = X_test[rows], y_test[rows], groups_test[rows]
    with pytest.warns(SmallTaskWarning, match=r"1 of 4 tasks have a single row.*left out of the score \(task ids 3\)"):
        score = est.score(X_s, y_s, groups=g_s)
    y_true, y_pred, means = [], [], []
    for g in np.unique(g_s)[:3]:
        task = np.flatnonzero(g_s == g)
        k = min(10, len(task) - 1)
        pred = copy.deepcopy(est).reset_adaptation().partial_adapt(X_s[task[:k]], y_s[task[:k]]).predict(X_s[task[k:]])
        y_true.append(y_s[task[k:]]), y_pred.append(pred), means.append(np.full(len(task) - k, y_s[task[k:]].mean()))
    y_true, y_pred, means = map(np.concatenate, (y_true, y_pred, means))
    assert score == pytest.approx(r2_score(y_true - means, y_pred - means), rel=1e-5)  # the pooled few-shot R²
    with pytest.raises(ValueError, match="every task has a single row"):
        est.score(X_test[[0, 20, 40]], y_test[[0, 20, 40]], groups=groups_test[[0, 20, 40]])
    _unchanged(est, expected, X_test)


def test_a_left_out_one_row_task_does_not_shrink_a_fractional_support(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, n_support=0.5).fit(X, y, groups=groups)
    rows = np.concatenate([np.arange(60), [60]])  # three tasks of 20 rows and one of 1 row
    with pytest.warns(SmallTaskWarning, match=r"\(n_support=0.5\).*1 of 4 tasks have a single row"):
        score = est.score(X_test[rows], y_test[rows], groups=groups_test[rows])
    assert score == est.score(X_test[:60], y_test[:60], groups=groups_test[:60])


def test_partial_adapt_with_another_number_of_features(fitted):
    est, expected, X_test = fitted
    with pytest.raises(ValueError, match="X has 2 features, but MetaRegressor is expecting 1 features"):
        est.partial_adapt(np.ones((10, 2)), np.ones(10))
    _unchanged(est, expected, X_test)


@pytest.mark.parametrize(
    "groups, message",
    [
        (np.arange(5), "groups has 5 entries but X has 1200 rows"),
        (np.full(1200, np.nan), "groups contains NaN"),
        (np.ones((1200, 2)), "groups must be 1-dimensional"),
        (np.array([None] * 1200, dtype=object), "groups contains None"),
    ],
)
def test_bad_groups(sinusoids, fitted, groups, message):
    X, y, *_ = sinusoids
    est, expected, X_test = fitted
    with pytest.raises(ValueError, match=message):
        est.fit(X, y, groups=groups)
    _unchanged(est, expected, X_test)


def test_diverging_adaptation_is_refused_and_keeps_the_model(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST, head="gradient").fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    expected = est.predict(X_test)
    est.head_.set_params(inner_lr=1e30)  # the fitted head: how this model adapts
    with pytest.raises(ValueError, match="non-finite parameters; the model is left as it was"):
        est.partial_adapt(X_test[:10], y_test[:10] * 1e10)
    _unchanged(est, expected, X_test)


@pytest.mark.parametrize(
    "params",
    [
        {"head": "prototypes"},  # the classifier's
        {"n_support": 1.5},
        {"meta_optimizer": "lbfgs-ish"},
        {"activation": "gelu"},
        {"callbacks": "PrintLog"},
    ],
)
def test_invalid_constructor_arguments(sinusoids, params):
    X, y, groups, *_ = sinusoids
    with pytest.raises(InvalidParameterError, match=list(params)[0]):
        MetaRegressor(**params).fit(X, y, groups=groups)


def test_no_groups_warns_and_caps_the_support_set():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(12, 3)), rng.normal(size=12)
    with pytest.warns(SingleTaskWarning, match="no groups: all 12 rows are treated as one task"):
        est = MetaRegressor(**FAST).fit(X, y)
    assert (est.n_support_, est.n_query_) == (6, 6)
    with pytest.raises(ValueError, match="n_samples = 1"):
        MetaRegressor(**FAST).fit(X[:1], y[:1])


def test_arrays_lists_and_dataframes_are_accepted(sinusoids):
    pd = pytest.importorskip("pandas")
    X, y, groups, X_test, *_ = sinusoids
    reference = MetaRegressor(**FAST).fit(X, y, groups=groups).predict(X_test)
    reversed_rows = MetaRegressor(**FAST).fit(X[::-1], y[::-1], groups=groups[::-1])
    assert np.isfinite(reversed_rows.predict(X_test[::-1])).all()
    # float32 views with negative strides are not copied by np.asarray; torch refuses them (bug)
    X32, y32, test32 = X.astype(np.float32), y.astype(np.float32), X_test.astype(np.float32)
    est = MetaRegressor(**FAST).fit(X32[::-1], y32[::-1], groups=groups[::-1])
    est.partial_adapt(test32[::-1][:10], y32[:10])
    np.testing.assert_array_equal(est.predict(test32[::-1]), est.predict(np.ascontiguousarray(test32[::-1])))
    from_lists = MetaRegressor(**FAST).fit(X.tolist(), y.tolist(), groups=groups.tolist())
    np.testing.assert_array_equal(from_lists.predict(X_test.tolist()), reference)
    frame = pd.DataFrame(X, columns=["x"])
    from_pandas = MetaRegressor(**FAST).fit(frame, pd.Series(y), groups=pd.Series(groups))
    assert from_pandas.feature_names_in_.tolist() == ["x"]
    np.testing.assert_array_equal(from_pandas.predict(pd.DataFrame(X_test, columns=["x"])), reference)
    fortran = np.asfortranarray(np.column_stack([X, X]))[:, ::2]
    np.testing.assert_array_equal(MetaRegressor(**FAST).fit(fortran, y, groups=groups).predict(X_test), reference)


def test_classifier_rejects_continuous_targets(class_tasks):
    X, y, groups, *_ = class_tasks
    with pytest.raises(ValueError, match="Unknown label type"):
        MetaClassifier(**FAST).fit(X, y + 0.5, groups=groups)


def test_score_refuses_to_return_nan_when_adaptation_diverges(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, head="gradient").fit(X, y, groups=groups)
    est.head_.set_params(inner_lr=1e30)
    with pytest.raises(ValueError, match="non-finite predictions: the inner loop diverges"):
        est.score(X_test, y_test * 1e10, groups=groups_test)
