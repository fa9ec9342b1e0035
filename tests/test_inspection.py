"""The meta-training and adaptation curve displays."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.metrics import accuracy_score

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.inspection import AdaptationCurveDisplay, MetaTrainingCurveDisplay

from .conftest import FAST


def test_training_curve_reads_the_history(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST, early_stopping=True, n_iter_no_change=100).fit(X, y, groups=groups)
    display = MetaTrainingCurveDisplay.from_estimator(est, plot=False)
    np.testing.assert_array_equal(display.train_loss, est.loss_curve_)
    np.testing.assert_array_equal(display.valid_loss, est.history_[:, "valid_loss"])
    smooth = MetaTrainingCurveDisplay.from_estimator(est, smoothing=3, plot=False)
    assert np.isnan(smooth.train_loss[:2]).all()
    assert smooth.train_loss[2] == pytest.approx(np.mean(est.loss_curve_[:3]))


def test_adaptation_curve_measures_query_error_per_step(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, head="gradient").fit(X, y, groups=groups)
    baseline = DummyRegressor().fit(X, y)
    display = AdaptationCurveDisplay.from_estimator(
        est, X_test, y_test, groups_test, steps=[0, 2], baseline=baseline, plot=False
    )
    query = np.arange(len(y_test)) % 20 >= 10  # each test task: 10 support rows, then 10 query rows
    # zero steps: the meta-learned network itself
    assert display.errors[0] == pytest.approx(np.mean((est.predict(X_test[query]) - y_test[query]) ** 2), rel=1e-5)
    # two steps: the same as adapting each task by hand for two steps
    squared = []
    for g in np.unique(groups_test):
        rows = np.flatnonzero(groups_test == g)
        twin = clone(est)
        twin.__setstate__(est.__getstate__())
        twin.head_ = clone(est.head_).set_params(adapt_steps=2)  # the twin's own head: est's stays as it is
        twin.partial_adapt(X_test[rows[:10]], y_test[rows[:10]])
        squared.append((twin.predict(X_test[rows[10:]]) - y_test[rows[10:]]) ** 2)
    assert display.errors[1] == pytest.approx(np.mean(squared), rel=1e-4)
    assert display.baseline_error == pytest.approx(np.mean((y.mean() - y_test[query]) ** 2))
    assert est.adapted_params_ is None and est.head_.adapt_steps is None  # the estimator is untouched


def test_adaptation_curve_of_a_closed_form_head_is_flat_after_zero_steps(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, head="ridge").fit(X, y, groups=groups)
    display = AdaptationCurveDisplay.from_estimator(est, X_test, y_test, groups_test, steps=[0, 1, 3], plot=False)
    query = np.arange(len(y_test)) % 20 >= 10
    assert display.errors[0] == pytest.approx(np.mean((est.predict(X_test[query]) - y_test[query]) ** 2), rel=1e-5)
    # one solve on the support rows, whatever the number of steps (and zero steps: none)
    assert display.errors[1] == pytest.approx(display.errors[2], rel=1e-6)
    assert display.errors[1] != pytest.approx(display.errors[0], rel=1e-3)


def test_adaptation_curve_leaves_out_small_tasks_and_says_so_once(sinusoids):
    import warnings

    from sklearn_meta.exceptions import SmallTaskWarning

    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    rows = np.arange(41)  # tasks of 20, 20 and 1 row: the last cannot be adapted to and scored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        display = AdaptationCurveDisplay.from_estimator(
            est, X_test[rows], y_test[rows], groups_test[rows], steps=[0, 1, 3], plot=False
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, SmallTaskWarning)]
    assert len(messages) == 1 and messages[0].startswith("AdaptationCurveDisplay adapts each task")
    full = AdaptationCurveDisplay.from_estimator(est, X_test[:40], y_test[:40], groups_test[:40], steps=[0, 1, 3],
                                                 plot=False)  # fmt: skip
    np.testing.assert_allclose(display.errors, full.errors)


def test_classifier_curve_is_an_error_rate(class_tasks):
    X, y, groups, X_test, y_test, groups_test = class_tasks
    clf = MetaClassifier(**FAST, head="gradient").fit(X, y, groups=groups)
    baseline = DummyClassifier().fit(X, y)
    display = AdaptationCurveDisplay.from_estimator(
        clf, X_test, y_test, groups_test, steps=[0, 1, 3], baseline=baseline, plot=False
    )
    assert display.metric_name == "error rate"
    assert clf.adapted_params_ is None and clf.head_.adapt_steps is None  # the estimator is untouched
    # Each test task: 10 support rows, then 20 query rows whose labels are predicted.
    tasks = [np.flatnonzero(groups_test == g) for g in np.unique(groups_test)]
    query = np.concatenate([rows[10:] for rows in tasks])
    # zero steps: the meta-learned network itself
    assert display.errors[0] == pytest.approx(1 - accuracy_score(y_test[query], clf.predict(X_test[query])))
    for n_steps, error in zip([1, 3], display.errors[1:]):
        predicted = []
        for rows in tasks:  # adapt to each task by hand, from the meta-learned initialisation
            clf.head_.set_params(adapt_steps=n_steps)
            clf.reset_adaptation().partial_adapt(X_test[rows[:10]], y_test[rows[:10]])
            predicted.append(clf.predict(X_test[rows[10:]]))
        assert error == pytest.approx(1 - accuracy_score(y_test[query], np.concatenate(predicted)))
    clf.head_.set_params(adapt_steps=None)
    assert display.errors[2] < display.errors[0] - 0.1  # three steps of adaptation help
    assert display.baseline_error == pytest.approx(1 - accuracy_score(y_test[query], baseline.predict(X_test[query])))


def test_plots_draw_lines(sinusoids):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, early_stopping=True).fit(X, y, groups=groups)
    training = MetaTrainingCurveDisplay.from_estimator(est)
    assert len(training.lines_) == 2 and training.ax_.get_xlabel() == "outer update"
    curve = AdaptationCurveDisplay.from_estimator(
        est, X_test, y_test, groups_test, steps=[0, 1], baseline=DummyRegressor().fit(X, y)
    )
    assert len(curve.lines_) == 2 and curve.figure_ is curve.ax_.figure
