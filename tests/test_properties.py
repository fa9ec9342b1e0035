"""Property-based tests: any input either works or gets a clear error, and errors change nothing."""

import re

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
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


# How an error message must name each problem an input can have.
NAMES = {
    "no rows": r"\b0 sample",
    "1-D": r"Expected 2D array, got 1D",  # an empty list has lost its columns
    "feature count": r"\bX has \d+ features?\b.*\bexpecting \d+ features?\b",
    "NaN in X": r"\bX contains NaN\b",
    "infinity in X": r"\bX contains infinity\b",
    "NaN in y": r"\by contains NaN\b",
    "sparse": r"\bSparse data was passed for X\b.*\bdense\b",
    "too few rows per task": r"\bat least 2 (samples|rows)\b",
    "NaN group": r"\bgroups contains NaN\b",
    "unseen labels": r"\blabels outside classes_\b",
    "huge values": r"\b(not finite|non-finite)\b.*\bscale the inputs\b",
    "not numbers": r"\bcould not convert string to float\b",
}
# Problems that only sometimes make the network overflow.
MAY_WORK = {"huge values"}


def _problems_of_X(values, container, n_features):
    problems = set()
    if len(values) == 0:
        problems.add("1-D" if container == "list" else "no rows")
    if values.shape[1] != n_features and not (len(values) == 0 and container == "list"):
        problems.add("feature count")
    if container == "sparse":
        problems.add("sparse")
    try:
        as_float = values.astype(np.float64)
    except ValueError:
        return problems | {"not numbers"}
    if np.isnan(as_float).any():
        problems.add("NaN in X")
    if np.isinf(as_float).any():
        problems.add("infinity in X")
    if (np.abs(as_float[np.isfinite(as_float)]) > 1e6).any():
        problems.add("huge values")  # NaN or infinity cast to int32 is -2**31
    return problems


def _assert_names_a_problem(error, problems):
    """The error was raised for a bad input and its message says what is wrong with it."""
    message = str(error)
    assert problems, f"an input with nothing wrong with it was refused: {message}"
    assert any(re.search(NAMES[p], message, re.S) for p in problems), f"{message!r} names none of {sorted(problems)}"


def _rows(*rows, dtype=np.float64):
    return np.array(rows, dtype=dtype)


# Every kind of bad input, every run: (X, its container), then the other arguments.
@PROFILE
@given(data=tables(), y_nan=st.booleans(), container=st.sampled_from(CONTAINERS))
@example(data=(_rows([0.5], [np.nan], [1.0]), "array"), y_nan=False, container="array")
@example(data=(_rows([0.5], [np.inf], [1.0]), "frame"), y_nan=False, container="array")
@example(data=(_rows([0.5], [2.0], [1.0]), "array"), y_nan=True, container="list")
@example(data=(_rows([0.5, 1.0], [2.0, 3.0]), "array"), y_nan=False, container="array")
@example(data=(np.zeros((0, 1)), "array"), y_nan=False, container="array")
@example(data=(np.zeros((0, 1)), "list"), y_nan=False, container="list")
@example(data=(_rows([0.5], [2.0], [1.0]), "sparse"), y_nan=False, container="array")
@example(data=(_rows(["a"], ["b"], ["c"], dtype=object), "array"), y_nan=False, container="array")
@example(data=(_rows([0.5], [2.0], [1.0], dtype=object), "reversed"), y_nan=False, container="frame")  # works
def test_partial_adapt_works_or_fails_cleanly_and_changes_nothing(regressor, data, y_nan, container):
    (values, x_container) = data
    X_probe = np.linspace(-5, 5, 7)[:, None]
    expected = regressor.reset_adaptation().predict(X_probe)
    y = np.linspace(-1, 1, len(values))
    problems = _problems_of_X(values, x_container, n_features=1)
    if y_nan and len(y):
        y[0] = np.nan
        problems.add("NaN in y")
    try:
        regressor.partial_adapt(_wrap(values, x_container), _wrap(y, container))
    except ERRORS as error:
        _assert_names_a_problem(error, problems)
        np.testing.assert_array_equal(regressor.predict(X_probe), expected)
        return
    assert not problems - MAY_WORK
    assert np.isfinite(regressor.predict(X_probe)).all()


@PROFILE
@given(
    data=tables(n_features=2),
    labels=st.sampled_from(["int", "str", "mixed", "float", "nan"]),
    n_tasks=st.integers(1, 4),
)
@example(data=(np.ones((4, 2)), "array"), labels="int", n_tasks=2)  # 2 rows a task, n_support=2
@example(data=(np.ones((1, 2)), "array"), labels="int", n_tasks=1)  # 1 row in all
@example(data=(np.ones((8, 2)), "array"), labels="nan", n_tasks=2)
@example(data=(_rows(*[[0.5, np.nan]] * 8), "array"), labels="str", n_tasks=2)
@example(data=(_rows(*[[0.5, np.inf]] * 8), "list"), labels="int", n_tasks=2)
@example(data=(np.ones((8, 2)), "sparse"), labels="int", n_tasks=2)
@example(data=(np.ones((9, 2)), "frame"), labels="mixed", n_tasks=3)  # works
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
    problems = _problems_of_X(values, container, n_features=2)
    if labels == "nan" and n:
        problems.add("NaN group")
    sizes = np.bincount(codes)
    if n and (sizes.max() < 2 if len(sizes) > 1 else n < 2):  # some task of 2 rows, or 2 rows in all
        problems.add("too few rows per task")
    try:
        est.fit(_wrap(values, container), y, groups=groups)
    except ERRORS as error:
        _assert_names_a_problem(error, problems)
        return
    assert not problems - MAY_WORK
    assert np.isfinite(est.predict(np.zeros((3, 2)))).all()


@PROFILE
@given(data=tables(n_features=1), unseen=st.booleans())
@example(data=(np.ones((4, 1)), "array"), unseen=True)
@example(data=(np.ones((4, 1)), "array"), unseen=False)  # works
def test_classifier_adaptation_with_unseen_labels(data, unseen):
    values, container = data
    X, y, groups = make_sinusoid_tasks(n_tasks=10, n_samples_per_task=12, random_state=0)
    clf = MetaClassifier(hidden_layer_sizes=(4,), max_iter=2, n_support=4, random_state=0)
    clf.fit(X, (y > 0).astype(int), groups=groups)
    expected = clf.predict(X[:5])
    labels = np.arange(len(values)) % 2 + (5 if unseen else 0)
    problems = _problems_of_X(values, container, n_features=1)
    if unseen and len(values):
        problems.add("unseen labels")
    try:
        clf.partial_adapt(_wrap(values, container), labels)
    except ERRORS as error:
        _assert_names_a_problem(error, problems)
        np.testing.assert_array_equal(clf.predict(X[:5]), expected)
        return
    assert not problems - MAY_WORK
