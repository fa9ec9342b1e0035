"""MetaRegressor: meta-training, few-shot adaptation, prediction and the few-shot score."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import r2_score
from skorch.history import History

from sklearn_meta import MetaRegressor
from sklearn_meta.heads import GradientHead

from .conftest import FAST


def _meta_params(est):
    return {k: v.clone() for k, v in est.module_.named_parameters()}


def test_fit_sets_fitted_attributes(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST)
    assert est.fit(X, y, groups=groups) is est
    assert est.n_iter_ == 10 and len(est.loss_curve_) == 10
    assert isinstance(est.history_, History) and est.history_[:, "train_loss"] == est.loss_curve_
    assert est.n_features_in_ == 1 and est.n_outputs_ == 1
    assert (est.n_support_, est.n_query_) == (10, 10)
    assert est.adapted_params_ is None


def test_meta_training_lowers_the_meta_loss(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(hidden_layer_sizes=(32, 32), max_iter=150, meta_lr=3e-3, random_state=0)
    curve = est.fit(X, y, groups=groups).loss_curve_
    assert np.mean(curve[-30:]) < 0.8 * np.mean(curve[:30])


def test_same_random_state_gives_identical_models(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    a = MetaRegressor(**FAST).fit(X, y, groups=groups)
    b = MetaRegressor(**FAST).fit(X, y, groups=groups)
    c = MetaRegressor(**{**FAST, "random_state": 1}).fit(X, y, groups=groups)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
    assert not np.allclose(a.predict(X_test), c.predict(X_test))


def test_group_labels_and_row_order_do_not_matter(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    # Tasks are numbered in order of first appearance and keep their rows in order, so a fit
    # depends on the labels and the row order only through those two orders.
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    reference = est.predict(X_test)
    relabelled = [
        np.array([f"store-{59 - g}" for g in groups], dtype=object),  # strings, sorting in another order
        np.array([g if g % 2 else f"s{g}" for g in groups], dtype=object),  # mixed, unorderable types
        -0.5 * groups,  # floats, sorting in reverse
    ]
    for names in relabelled:
        twin = MetaRegressor(**FAST).fit(X, y, groups=names)
        np.testing.assert_allclose(twin.predict(X_test), reference, rtol=1e-6, atol=1e-7)
    interleaved = np.lexsort((groups, np.arange(len(X)) % 20))  # row 0 of every task, then row 1, ...
    twin = MetaRegressor(**FAST).fit(X[interleaved], y[interleaved], groups=groups[interleaved])
    np.testing.assert_allclose(twin.predict(X_test), reference, rtol=1e-6, atol=1e-7)
    # A full shuffle reorders the tasks and the rows within them, which changes the seeded draws
    # as another random_state would; gathering its rows back into whole tasks changes nothing more.
    perm = np.random.RandomState(0).permutation(len(X))
    shuffled = MetaRegressor(**FAST).fit(X[perm], y[perm], groups=groups[perm])
    _, first = np.unique(groups[perm], return_index=True)
    rank = np.argsort(np.argsort(first))  # of each task, by first appearance in the shuffle
    gathered = perm[np.argsort(rank[groups[perm]], kind="stable")]
    twin = MetaRegressor(**FAST).fit(X[gathered], y[gathered], groups=groups[gathered])
    np.testing.assert_allclose(twin.predict(X_test), shuffled.predict(X_test), rtol=1e-6, atol=1e-7)

    # The few-shot score adapts each held-out task on its first n_support rows: it does not depend
    # on the task labels, the order of the tasks, or how their rows are interleaved...
    expected = est.score(X_test, y_test, groups=groups_test)
    task_order = np.random.RandomState(1).permutation(10)
    names = np.array([f"t{7 * g}" for g in groups_test], dtype=object)
    by_task = np.concatenate([np.flatnonzero(groups_test == g) for g in task_order])
    assert est.score(X_test[by_task], y_test[by_task], groups=names[by_task]) == pytest.approx(expected, rel=1e-5)
    mixed = np.lexsort((np.argsort(task_order)[groups_test], np.arange(len(X_test)) % 20))
    assert est.score(X_test[mixed], y_test[mixed], groups=names[mixed]) == pytest.approx(expected, rel=1e-5)
    # ...while the order of the rows within a task picks its support rows.
    reversed_rows = np.concatenate([np.flatnonzero(groups_test == g)[::-1] for g in range(10)])
    score = est.score(X_test[reversed_rows], y_test[reversed_rows], groups=groups_test[reversed_rows])
    assert abs(score - expected) > 0.01


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam", "meta-sgd"])
@pytest.mark.parametrize("first_order", [False, True])
def test_each_algorithm_trains_and_adapts(sinusoids, inner_optimizer, first_order):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(
        head=GradientHead(inner_optimizer=inner_optimizer, first_order=first_order), **{**FAST, "max_iter": 3}
    )
    est.fit(X, y, groups=groups)
    before = est.predict(X_test[10:20])
    est.partial_adapt(X_test[:10], y_test[:10])
    assert not np.allclose(before, est.predict(X_test[10:20]))


def test_meta_sgd_learns_and_keeps_its_learning_rates(sinusoids):
    X, y, groups, *_ = sinusoids
    head = GradientHead(inner_optimizer="meta-sgd", inner_lr=0.05)
    est = MetaRegressor(**FAST, head=head, meta_lr=1e-2).fit(X, y, groups=groups)
    rates = est.module_.head_meta()
    assert set(rates) == {name for name, _ in est.module_.network.named_parameters()}
    assert not torch.allclose(rates["body.0.weight"], torch.full_like(rates["body.0.weight"], 0.05))


def test_partial_adapt_never_changes_the_meta_learned_parameters(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    meta = _meta_params(est)
    assert est.partial_adapt(X_test[:10], y_test[:10]) is est
    for name, value in est.module_.named_parameters():
        assert torch.equal(value, meta[name])
    assert est.adapted_params_ is not None


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_partial_adapt_continues_where_it_left_off(sinusoids, inner_optimizer):
    # Two calls of one step equal one call of two steps: the adapted parameters and
    # the inner optimizer's state (Adam's moments) are carried between calls.
    X, y, groups, X_test, y_test, _ = sinusoids
    head = GradientHead(inner_optimizer=inner_optimizer, inner_lr=0.05)
    est = MetaRegressor(**FAST, head=head).fit(X, y, groups=groups)
    twice = clone(est)
    twice.__setstate__(est.__getstate__())
    twice.head_ = clone(est.head_).set_params(adapt_steps=1)
    twice.partial_adapt(X_test[:10], y_test[:10]).partial_adapt(X_test[:10], y_test[:10])
    est.head_.set_params(adapt_steps=2)
    est.partial_adapt(X_test[:10], y_test[:10])
    np.testing.assert_allclose(twice.predict(X_test[10:]), est.predict(X_test[10:]), rtol=1e-5, atol=1e-6)


def test_adaptation_fits_the_support_rows(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(head=GradientHead(adapt_steps=50, inner_lr=0.02), **FAST).fit(X, y, groups=groups)
    error_before = np.mean((est.predict(X_test[:10]) - y_test[:10]) ** 2)
    est.partial_adapt(X_test[:10], y_test[:10])
    assert np.mean((est.predict(X_test[:10]) - y_test[:10]) ** 2) < 0.5 * error_before


def test_reset_adaptation_returns_to_the_meta_learned_model(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    meta_prediction = est.predict(X_test)
    est.partial_adapt(X_test[:10], y_test[:10])
    assert not np.allclose(meta_prediction, est.predict(X_test))
    assert est.reset_adaptation() is est
    np.testing.assert_array_equal(meta_prediction, est.predict(X_test))
    assert est.adapted_params_ is None and est.adaptation_state_ is None


def test_refit_discards_the_previous_adaptation(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    est.fit(X, y, groups=groups)
    assert est.adapted_params_ is None


def test_predict_before_adaptation_is_the_meta_learned_network(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    with torch.no_grad():
        expected = est.module_(torch.tensor(X_test, dtype=torch.float32)).numpy().ravel()
    np.testing.assert_allclose(est.predict(X_test), expected, rtol=1e-6)


def test_few_shot_score_equals_adapting_each_task_separately(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(head=GradientHead(adapt_steps=3), **FAST).fit(X, y, groups=groups)
    residual, total = 0.0, 0.0
    for g in np.unique(groups_test):
        rows = np.flatnonzero(groups_test == g)
        support, query = rows[:10], rows[10:]
        task = clone(est)
        task.__setstate__(est.__getstate__())
        prediction = task.partial_adapt(X_test[support], y_test[support]).predict(X_test[query])
        residual += np.sum((y_test[query] - prediction) ** 2)
        total += np.sum((y_test[query] - y_test[query].mean()) ** 2)
    score = est.score(X_test, y_test, groups=groups_test)
    assert score == pytest.approx(1 - residual / total, rel=1e-4)
    assert est.adapted_params_ is None  # score adapts copies


def test_score_handles_tasks_of_different_sizes_in_any_row_order(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    keep = ~((groups_test == 3) & (np.arange(len(groups_test)) % 20 >= 14))  # task 3 has 14 rows
    Xk, yk, gk = X_test[keep], y_test[keep], groups_test[keep]
    score = est.score(Xk, yk, groups=gk)
    # Interleaving rows of different tasks keeps each task's row order, so the same score.
    rank_in_task = np.concatenate([np.arange(np.sum(gk == g)) for g in np.unique(gk)])
    order = np.lexsort((gk, rank_in_task))  # row 0 of every task, then row 1, ...
    assert not np.array_equal(order, np.arange(len(gk)))
    assert est.score(Xk[order], yk[order], groups=gk[order]) == pytest.approx(score, rel=1e-5)


def test_weighted_few_shot_score_ignores_rows_of_zero_weight(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    weight = (groups_test != 0).astype(float)
    rest = groups_test != 0
    expected = est.score(X_test[rest], y_test[rest], groups=groups_test[rest])
    assert est.score(X_test, y_test, sample_weight=weight, groups=groups_test) == pytest.approx(expected, rel=1e-6)


def test_score_without_groups_is_r2_of_the_current_model(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    assert est.score(X_test, y_test) == pytest.approx(r2_score(y_test, est.predict(X_test)))


def test_fractional_n_support(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, n_support=0.25).fit(X, y, groups=groups)
    assert (est.n_support_, est.n_query_) == (5, 15)
    assert np.isfinite(est.score(X_test, y_test, groups=groups_test))


def test_multi_output_targets(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    Y = np.column_stack([y, -2 * y])
    est = MetaRegressor(**FAST).fit(X, Y, groups=groups)
    assert est.predict(X_test).shape == (len(X_test), 2)
    est.partial_adapt(X_test[:10], np.column_stack([y_test[:10], y_test[:10]]))
    assert np.isfinite(est.score(X_test, np.column_stack([y_test, y_test]), groups=groups_test))
    with pytest.raises(ValueError, match="1 outputs but the model was fitted with 2"):
        est.partial_adapt(X_test[:10], y_test[:10])


class TinyLinear(torch.nn.Module):
    """A user module that takes its input width from the estimator: a body of 3 features."""

    def __init__(self, n_features_in, scale=1.0):
        super().__init__()
        self.linear = torch.nn.Linear(n_features_in, 3)
        self.scale = scale

    def forward(self, x):
        return self.scale * self.linear(x)


def test_user_module_class(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    settings = {k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}
    est = MetaRegressor(module=TinyLinear, module_kwargs={"scale": 2.0}, head="gradient", **settings)
    est.fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    assert isinstance(est.module_.network.body, TinyLinear) and est.module_.network.body.scale == 2.0
    assert est.predict(X_test).shape == (len(X_test),)


def test_device_auto_resolves_and_missing_cuda_is_a_clear_error(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST, device="auto").fit(X, y, groups=groups)
    assert est.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            MetaRegressor(**FAST, device="cuda").fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="not a torch device"):
        MetaRegressor(**FAST, device="gpu-please").fit(X, y, groups=groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    cpu = MetaRegressor(**FAST).fit(X, y, groups=groups)
    gpu = MetaRegressor(**FAST, device="cuda").fit(X, y, groups=groups)
    np.testing.assert_allclose(cpu.loss_curve_, gpu.loss_curve_, rtol=1e-3)
    gpu.partial_adapt(X_test[:10], y_test[:10])
    assert gpu.predict(X_test).shape == (len(X_test),)


def test_fractional_n_support_is_the_same_rule_in_fit_and_score(sinusoids):
    # A fraction of each task's own rows, in fit and in score (it was once the smallest task's in fit).
    X, y, groups, X_test, y_test, groups_test = sinusoids
    keep = np.ones(len(X), dtype=bool)
    keep[np.flatnonzero(groups == 0)[10:]] = False  # training task 0: 10 rows; the others: 20
    est = MetaRegressor(**FAST, n_support=0.5).fit(X[keep], y[keep], groups=groups[keep])
    assert (est.n_support_, est.n_query_) == (10, 10)  # half of a 20-row task; task 0 adapts on 5 rows
    keep = np.ones(len(X_test), dtype=bool)
    keep[np.flatnonzero(groups_test == 0)[10:]] = False  # held-out task 0: 10 rows (5 support rows)
    others = groups_test != 0
    fractional = est.score(X_test[keep], y_test[keep], groups=groups_test[keep])
    assert fractional != est.set_params(n_support=5).score(X_test[keep], y_test[keep], groups=groups_test[keep])
    halves = est.set_params(n_support=0.5).score(X_test[others], y_test[others], groups=groups_test[others])
    assert halves == est.set_params(n_support=10).score(X_test[others], y_test[others], groups=groups_test[others])


class RecordingRegressor(MetaRegressor):
    """Records every value of the estimator's one metric."""

    def _score_outputs(self, outputs, y_encoded, codes, sample_weight=None):
        value = super()._score_outputs(outputs, y_encoded, codes, sample_weight)
        self.__dict__.setdefault("scores", []).append(value)
        return value


def test_validation_and_score_use_one_metric_for_multi_output_targets(sinusoids):
    # Bug: valid_score pooled R² over outputs, score() averaged per output.
    X, y, groups, X_test, y_test, groups_test = sinusoids
    Y, Y_test = np.c_[y, 100 * y + 3], np.c_[y_test, 100 * y_test + 3]  # outputs of very different scales
    est = RecordingRegressor(**FAST, early_stopping=True, n_iter_no_change=100).fit(X, Y, groups=groups)
    assert est.history_[:, "valid_score"] == est.scores  # validation goes through the metric
    score = est.score(X_test, Y_test, groups=groups_test)
    # the metric itself: r2_score on targets centred on each task's mean, averaged over outputs
    outputs, is_query, codes, y_true = est._few_shot_outputs(X_test, Y_test, groups_test)
    mask = is_query.numpy()
    pred, y_true, codes = outputs.numpy()[mask].astype(np.float64), y_true[mask].astype(np.float64), codes[mask]
    means = np.stack([np.bincount(codes, weights=c) / np.bincount(codes) for c in y_true.T], axis=1)[codes]
    expected = np.mean([r2_score(y_true[:, j] - means[:, j], pred[:, j] - means[:, j]) for j in range(2)])
    assert score == pytest.approx(expected, rel=1e-6) and est.scores[-1] == score
