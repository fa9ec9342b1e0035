"""EpisodicClassifier: N-way K-shot episodes with task-local labels."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_meta import EpisodicClassifier
from sklearn_meta.exceptions import NotAdaptedError
from sklearn_meta.heads import GradientHead

from .conftest import FAST


@pytest.fixture
def episodic(digits_pool):
    X, y = digits_pool
    train = y < 50  # classes 0..40 for meta-training, 50..70 are novel
    clf = EpisodicClassifier(head=GradientHead(inner_lr=0.1), **FAST, n_way=3, k_shot=2, n_query=5)
    clf = clf.fit(X[train], y[train])
    return clf, X[~train], y[~train]


def test_episodic_fit_has_no_classes_until_adapted(episodic):
    clf, X_new, y_new = episodic
    assert not hasattr(clf, "classes_")
    assert clf.n_outputs_ == 3 and (clf.n_support_, clf.n_query_) == (6, 15)
    with pytest.raises(NotAdaptedError, match="partial_adapt"):
        clf.predict(X_new)


def test_episodic_partial_adapt_sets_classes_from_novel_labels(episodic):
    clf, X_new, y_new = episodic
    support = np.concatenate([np.flatnonzero(y_new == c)[:2] for c in (50, 60, 70)])
    clf.partial_adapt(X_new[support], y_new[support])
    assert clf.classes_.tolist() == [50, 60, 70]
    assert set(clf.predict(X_new)) <= {50, 60, 70}
    assert clf.predict_proba(X_new).shape == (len(X_new), 3)


def test_episodic_task_with_fewer_classes_than_n_way(episodic):
    clf, X_new, y_new = episodic
    support = np.concatenate([np.flatnonzero(y_new == c)[:2] for c in (50, 70)])
    proba = clf.partial_adapt(X_new[support], y_new[support]).predict_proba(X_new)
    assert proba.shape == (len(X_new), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


def test_episodic_labels_beyond_n_way_or_outside_classes_are_clear_errors(episodic, digits_pool):
    clf, X_new, y_new = episodic
    X, y = digits_pool
    four = np.concatenate([np.flatnonzero(y == c)[:1] for c in (0, 10, 20, 30)])
    with pytest.raises(ValueError, match="3-way tasks but y has 4 classes"):
        clf.partial_adapt(X[four], y[four])
    assert not hasattr(clf, "classes_")  # the failed call changed nothing
    first = np.concatenate([np.flatnonzero(y_new == c)[:2] for c in (50, 60)])
    clf.partial_adapt(X_new[first], y_new[first])
    later = np.flatnonzero(y_new == 70)[:2]
    with pytest.raises(ValueError, match="reset_adaptation"):
        clf.partial_adapt(X_new[later], y_new[later])
    assert clf.classes_.tolist() == [50, 60]
    clf.reset_adaptation()
    assert not hasattr(clf, "classes_")
    assert clf.partial_adapt(X_new[later], y_new[later]).classes_.tolist() == [70]


def test_episodic_score_draws_seeded_episodes_from_the_classes_given(episodic):
    clf, X_new, y_new = episodic
    score = clf.score(X_new, y_new)
    assert 0 <= score <= 1
    assert clf.score(X_new, y_new) == score  # seeded by random_state
    assert clf.score(X_new, y_new, groups=np.zeros(len(y_new))) == score  # groups not used
    with pytest.raises(ValueError, match="need at least 3 classes"):
        clf.score(X_new[y_new != 70], y_new[y_new != 70])


def test_episodic_classes_with_too_few_rows_are_named(digits_pool):
    X, y = digits_pool
    keep = ~((y == 10) & (np.arange(len(y)) % 30 >= 4))  # class 10 keeps 4 rows
    with pytest.raises(ValueError, match=r"k_shot \+ n_query = 7 rows"):
        EpisodicClassifier(**FAST, n_way=3, k_shot=2, n_query=5).fit(X[keep], y[keep])


def test_episodic_adaptation_improves_on_novel_classes(digits_pool):
    X, y = digits_pool
    clf = EpisodicClassifier(
        hidden_layer_sizes=(32,),
        head=GradientHead(inner_lr=0.3, inner_steps=2),
        n_way=3,
        k_shot=2,
        n_query=5,
        max_iter=60,
        meta_lr=1e-2,
        random_state=0,
    ).fit(X[y < 50], y[y < 50])
    # the fitted head decides how a fitted model adapts: set other steps on it, no refit
    adapted = clf.score(X[y >= 50], y[y >= 50])
    clf.head_.set_params(adapt_steps=0)
    assert adapted > clf.score(X[y >= 50], y[y >= 50])


# ---------------------------------------------------------------- the default network


@pytest.mark.parametrize("head", ["ridge", "prototypes", "gradient"])
def test_the_default_network_is_one_linear_layer_that_every_head_adapts(digits_pool, head):
    # hidden_layer_sizes=() is the classifier's default (chosen on novel digits): the network is the
    # head alone, a linear layer on the inputs, which each head fits to novel classes and which survives a
    # save and load; with no body, adapting "the head only" adapts all there is.
    X, y = digits_pool
    train = y < 50
    settings = {key: value for key, value in FAST.items() if key != "hidden_layer_sizes"}
    head = GradientHead(inner_lr=0.1) if head == "gradient" else head
    clf = EpisodicClassifier(n_way=3, k_shot=2, n_query=5, head=head, **settings).fit(X[train], y[train])
    assert clf.hidden_layer_sizes == ()
    matrices = [tuple(p.shape) for p in clf.module_.network.parameters() if p.ndim == 2]
    assert matrices == [(3, X.shape[1])]

    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in (50, 60, 70)])
    query = np.setdiff1d(np.flatnonzero(~train), support)
    proba = clf.partial_adapt(X[support], y[support]).predict_proba(X[query])
    accuracy = np.mean(clf.classes_[proba.argmax(axis=1)] == y[query])
    assert accuracy >= (0.5 if isinstance(head, GradientHead) else 0.9)  # chance: 1/3
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X[query]), proba)
    if isinstance(head, GradientHead):
        head_only = clone(clf).set_params(head__adapt_params="head").fit(X[train], y[train])
        np.testing.assert_allclose(head_only.partial_adapt(X[support], y[support]).predict_proba(X[query]), proba)
