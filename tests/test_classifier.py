"""MetaClassifier: grouped tasks with global labels."""

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_meta import MetaClassifier
from sklearn_meta.heads import GradientHead

from .conftest import FAST


def _copy(est):
    twin = clone(est)
    twin.__setstate__(est.__getstate__())
    return twin


# ---------------------------------------------------------------- grouped tasks


def test_grouped_tasks_keep_global_string_labels(class_tasks):
    X, y, groups, X_test, y_test, _ = class_tasks
    names = np.array(["cat", "dog", "eel"])
    clf = MetaClassifier(**FAST).fit(X, names[y], groups=groups)
    assert clf.classes_.tolist() == ["cat", "dog", "eel"] and clf.n_outputs_ == 3
    assert set(clf.predict(X_test)) <= set(names)
    proba = clf.partial_adapt(X_test[:10], names[y_test[:10]]).predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X_test))


def test_grouped_partial_adapt_rejects_labels_not_seen_in_fit(class_tasks):
    X, y, groups, X_test, y_test, _ = class_tasks
    clf = MetaClassifier(**FAST).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match=r"labels outside classes_ \[0, 1, 2\]: 7"):
        clf.partial_adapt(X_test[:3], [0, 1, 7])


def test_grouped_few_shot_accuracy_equals_adapting_each_task(class_tasks):
    X, y, groups, X_test, y_test, groups_test = class_tasks
    clf = MetaClassifier(head=GradientHead(adapt_steps=2, inner_lr=0.1), **FAST).fit(X, y, groups=groups)
    correct = total = 0
    for g in np.unique(groups_test):
        rows = np.flatnonzero(groups_test == g)
        task = _copy(clf).partial_adapt(X_test[rows[:10]], y_test[rows[:10]])
        correct += np.sum(task.predict(X_test[rows[10:]]) == y_test[rows[10:]])
        total += len(rows) - 10
    assert clf.score(X_test, y_test, groups=groups_test) == pytest.approx(correct / total)
