"""Property-based tests: any input either works or gets a clear error, and errors change nothing."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks

pd = pytest.importorskip("pandas")

PROFILE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)
DTYPES = ["float16", "float32", "float64", "int32", "bool", "object"]
CONTAINERS = ["array", "list", "frame", "sparse", "reversed"]
ERRORS = (ValueError, TypeError)


@pytest.fixture(scope="module")
def regressor():
    X, y, groups = make_sinusoid_tasks(n_tasks=30, n_samples_per_task=12, random_state=0)
    est = MetaRegressor(hidden_layer_sizes=(8,), max_iter=3, n_support=5, random_state=0)
    return est.fit(X, y, groups=groups)


@st.composite
def tables(draw, n_features=None):
    n = draw(st.integers(0, 24))
    f = n_features if n_features is not None else draw(st.integers(1, 3))
    values = draw(
        st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=n * f, max_size=n * f).map(
            lambda v: np.array(v, dtype=np.float64).reshape(n, f)
        )
    )
    if n and draw(st.booleans()):
        values[draw(st.integers(0, n - 1)), draw(st.integers(0, f - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    with np.errstate(invalid="ignore"):  # NaN cast to int or bool is what a user might do too
        values = values.astype(draw(st.sampled_from(DTYPES)))
    return values, draw(st.sampled_from(CONTAINERS))


def _wrap(values, container):
    if container == "list":
        return values.tolist()
    if container == "frame":
        return pd.DataFrame(values)
    if container == "sparse":
        return sp.csr_matrix(values.astype(np.float64)) if values.ndim == 2 else values
    if container == "reversed":
        return values[::-1]
    return values


def _clear(error):
    message = str(error)
    return len(message) > 15 and "Traceback" not in message


@PROFILE
@given(data=tables(), y_nan=st.booleans(), container=st.sampled_from(CONTAINERS))
def test_partial_adapt_works_or_fails_cleanly_and_changes_nothing(regressor, data, y_nan, container):
    (values, x_container) = data
    X_probe = np.linspace(-5, 5, 7)[:, None]
    expected = regressor.reset_adaptation().predict(X_probe)
    y = np.linspace(-1, 1, len(values))
    if y_nan and len(y):
        y[0] = np.nan
    try:
        regressor.partial_adapt(_wrap(values, x_container), _wrap(y, container))
    except ERRORS as error:
        assert _clear(error), error
        np.testing.assert_array_equal(regressor.predict(X_probe), expected)
        return
    assert values.shape[1] == 1 and len(values) > 0
    assert np.isfinite(values.astype(np.float64)).all() and not y_nan and x_container != "sparse"
    assert np.isfinite(regressor.predict(X_probe)).all()


@PROFILE
@given(
    data=tables(n_features=2),
    labels=st.sampled_from(["int", "str", "mixed", "float", "nan"]),
    n_tasks=st.integers(1, 4),
)
def test_fit_works_or_fails_cleanly(data, labels, n_tasks):
    values, container = data
    n = len(values)
    codes = np.arange(n) % n_tasks
    groups = {
        "int": codes,
        "str": np.array([f"task-{c}" for c in codes], dtype=object),
        "mixed": np.array([c if c % 2 else str(c) for c in codes], dtype=object),
        "float": codes.astype(float),
        "nan": np.where(codes == 0, np.nan, codes.astype(float)),
    }[labels]
    y = np.sin(np.arange(n, dtype=float))
    est = MetaRegressor(hidden_layer_sizes=(4,), max_iter=2, n_support=2, meta_batch_size=2, random_state=0)
    try:
        est.fit(_wrap(values, container), y, groups=groups)
    except ERRORS as error:
        assert _clear(error), error
        return
    assert np.isfinite(est.predict(np.zeros((3, 2)))).all()
    assert labels != "nan" or n == 0 or not (codes == 0).any()


@PROFILE
@given(data=tables(n_features=1), unseen=st.booleans())
def test_classifier_adaptation_with_unseen_labels(data, unseen):
    values, container = data
    X, y, groups = make_sinusoid_tasks(n_tasks=10, n_samples_per_task=12, random_state=0)
    clf = MetaClassifier(hidden_layer_sizes=(4,), max_iter=2, n_support=4, random_state=0)
    clf.fit(X, (y > 0).astype(int), groups=groups)
    expected = clf.predict(X[:5])
    labels = np.arange(len(values)) % 2 + (5 if unseen else 0)
    try:
        clf.partial_adapt(_wrap(values, container), labels)
    except ERRORS as error:
        assert _clear(error), error
        np.testing.assert_array_equal(clf.predict(X[:5]), expected)
        return
    assert not unseen
