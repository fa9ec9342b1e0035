"""Padded, masked batches of tasks of different sizes: every head against an unpadded float64 reference."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.engine import TaskBatch, adapt_tasks, batch_size, meta_gradient, meta_loss
from sklearn_meta.exceptions import SmallTaskWarning
from sklearn_meta.heads import (
    BayesianLogisticHead,
    BayesianRidgeHead,
    FunctionalNetwork,
    GradientHead,
    Head,
    HeadedNetwork,
    PrototypeHead,
    RidgeClassifierHead,
    masked_mean,
    takes_masks,
)
from sklearn_meta.optim import newton

from .conftest import FAST


def _mse(output, target, mask=None):
    if mask is None:
        return nn.functional.mse_loss(output, target)
    return masked_mean(nn.functional.mse_loss(output, target, reduction="none").mean(dim=-1), mask)


def _cross_entropy(output, target, mask=None):
    if mask is None:
        return nn.functional.cross_entropy(output, target)
    return masked_mean(nn.functional.cross_entropy(output, target, reduction="none"), mask)


HEADS = {
    "bayesian ridge": (BayesianRidgeHead(), "regression"),
    "ridge classifier": (RidgeClassifierHead(), "classification"),
    "ridge classifier, to zero": (RidgeClassifierHead(shrink_to_head=False), "classification"),
    "prototypes": (PrototypeHead(), "classification"),
    "bayesian logistic": (BayesianLogisticHead(), "classification"),
    "MAML": (GradientHead(inner_steps=2, inner_lr=0.3), "regression"),
    "first-order MAML": (GradientHead(inner_steps=2, inner_lr=0.3, first_order=True), "regression"),
    "recomputed MAML": (GradientHead(inner_steps=3, inner_lr=0.3, recompute_inner=True), "regression"),
    "Meta-SGD": (GradientHead(inner_optimizer="meta-sgd", inner_lr=0.3), "classification"),
    "Newton ANIL": (GradientHead(inner_optimizer=newton(), adapt_params="head"), "regression"),
}


def _problem(head, task_type, support, query, width, seed=0):
    """A float64 network, its parameters and the head's meta-parameters, and tasks of the given sizes.

    Returns the ragged batch (padding rows hold other tasks' rows, as the samplers' do) and the tasks unpadded.
    """
    torch.manual_seed(seed)
    n_out = 1 if task_type == "regression" else 3
    net = HeadedNetwork(nn.Sequential(nn.Linear(2, width), nn.Tanh()), nn.Linear(width, n_out)).double()
    network = FunctionalNetwork(net, {}, _mse if task_type == "regression" else _cross_entropy)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    meta = {k: v.double().requires_grad_(True) for k, v in head.meta_parameters(params).items()}

    def rows(n):
        x = torch.randn(n, 2, dtype=torch.float64)
        y = torch.randn(n, 1, dtype=torch.float64) if task_type == "regression" else torch.randint(n_out, (n,))
        return x, y

    tasks = [(*rows(s), *rows(q)) for s, q in zip(support, query)]
    S, Q = max(support), max(query)

    def pad(part, width):
        filler = rows(width)[part % 2]  # real-looking rows: a padding row is a copy of a real row
        return torch.stack([torch.cat([t[part], filler[len(t[part]) :]]) for t in tasks])

    masks = [torch.tensor([[float(j < n) for j in range(w)] for n in sizes], dtype=torch.float64)
             for sizes, w in ((support, S), (query, Q))]  # fmt: skip
    batch = TaskBatch(pad(0, S), pad(1, S), pad(2, Q), pad(3, Q), *masks)
    return network, params, meta, batch, tasks


def _reference(head, network, params, meta, tasks):
    """Each task unpadded, one at a time; the mean loss per query row, differentiated by autograd."""
    losses = [head.episode_loss(network, params, meta, *task) for task in tasks]
    weights = torch.tensor([len(task[2]) for task in tasks], dtype=torch.float64)
    total = (torch.stack(losses) * weights).sum() / weights.sum()
    tensors = list(params.values()) + list(meta.values())
    grads = torch.autograd.grad(total, tensors, allow_unused=True, materialize_grads=True)
    return total, grads


@pytest.mark.parametrize("width", [3, 12])  # fewer and more features than support rows: both closed forms
@pytest.mark.parametrize("name", list(HEADS))
def test_a_ragged_batch_equals_its_tasks_one_by_one(name, width):
    head, task_type = HEADS[name]
    support, query = [1, 4, 6, 2], [1, 9, 3, 5]
    network, params, meta, batch, tasks = _problem(head, task_type, support, query, width)
    expected, expected_grads = _reference(head, network, params, meta, tasks)
    loss, param_grads, meta_grads = meta_gradient(network, head, params, meta, batch)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-9, atol=1e-12)
    for got, want in zip([*param_grads.values(), *meta_grads.values()], expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)
    assert batch_size(batch) == sum(query)  # a distributed rank's weight: its query rows


@pytest.mark.parametrize("name", ["bayesian ridge", "prototypes", "MAML", "bayesian logistic"])
def test_ragged_batch_adaptation_equals_adapting_each_task_alone(name):
    head, task_type = HEADS[name]
    network, params, meta, batch, tasks = _problem(head, task_type, [1, 4, 6], [2, 2, 2], 5)
    adapted = adapt_tasks(network, head, params, meta, batch.x_support, batch.y_support, mask=batch.support_mask)
    for t, (xs, ys, *_) in enumerate(tasks):
        alone, _ = head.adapt(network, params, meta, head.init(params, meta), xs, ys)
        for key in alone:
            torch.testing.assert_close(adapted[key][t], alone[key].detach(), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=5),
    name=st.sampled_from(["bayesian ridge", "ridge classifier", "MAML"]),
    seed=st.integers(0, 1000),
)
def test_any_padding_of_any_sizes_gives_the_unpadded_loss_and_gradient(sizes, name, seed):
    head, task_type = HEADS[name]
    support, query = [s for s, _ in sizes], [q for _, q in sizes]
    network, params, meta, batch, tasks = _problem(head, task_type, support, query, 4, seed)
    expected, expected_grads = _reference(head, network, params, meta, tasks)
    loss, param_grads, _ = meta_gradient(network, head, params, meta, batch)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-8, atol=1e-10)
    for got, want in zip(param_grads.values(), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_masks_make_the_padding_rows_irrelevant_whatever_they_hold():
    head, task_type = HEADS["bayesian ridge"]
    network, params, meta, batch, _ = _problem(head, task_type, [2, 5], [3, 1], 4)
    loss = meta_loss(network, head, params, meta, batch)
    garbage = {name: torch.where(mask[..., None].bool(), value, value * 1e3 + 7) for name, value, mask in [
        ("x_support", batch.x_support, batch.support_mask), ("x_query", batch.x_query, batch.query_mask)]}  # fmt: skip
    shifted = batch._replace(
        **garbage, y_support=torch.where(batch.support_mask[..., None].bool(), batch.y_support, 5.0)
    )
    torch.testing.assert_close(meta_loss(network, head, params, meta, shifted), loss, rtol=1e-10, atol=0)


# --- the estimators -------------------------------------------------------------------------------------------


def _groups_of(sizes, seed=0):
    """Sinusoid-like tasks with the given numbers of rows."""
    rng = np.random.RandomState(seed)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    amplitude, phase = rng.uniform(0.5, 2, len(sizes)), rng.uniform(0, np.pi, len(sizes))
    X = rng.uniform(-5, 5, (len(groups), 1))
    y = amplitude[groups] * np.sin(X[:, 0] + phase[groups])
    return X, y, groups


@pytest.mark.parametrize("head", ["ridge", "gradient"])
def test_groups_of_2_to_500_rows_all_meta_train_adapt_and_score(head):
    sizes = [2, 3, 500, 4, 17, 2, 60, 5, 9, 250]
    X, y, groups = _groups_of(sizes)
    est = MetaRegressor(**{**FAST, "n_support": 5}, head=head).fit(X, y, groups=groups)
    assert (est.n_support_, est.n_query_) == (5, 495)  # the widest task: 5 support rows and 495 queries
    assert np.isfinite(est.loss_curve_).all()
    assert np.isfinite(est.score(X, y, groups=groups))
    capped = MetaRegressor(**{**FAST, "n_support": 5, "n_query": 20}, head=head).fit(X, y, groups=groups)
    assert capped.n_query_ == 20
    assert np.isfinite(capped.predict(X[:3])).all()


def test_a_classifier_meta_trains_on_ragged_groups():
    rng = np.random.RandomState(0)
    sizes = [2, 40, 3, 25, 6, 80, 2, 12]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(len(groups), 2)) + groups[:, None] % 3
    y = (X[:, 0] + rng.normal(size=len(groups)) > 1).astype(int)
    clf = MetaClassifier(**{**FAST, "n_support": 4}).fit(X, y, groups=groups)
    assert (clf.n_support_, clf.n_query_) == (4, 76) and np.isfinite(clf.loss_curve_).all()
    assert 0 <= clf.score(X, y, groups=groups) <= 1


def test_early_stopping_validates_on_ragged_groups():
    X, y, groups = _groups_of([2, 3, 30, 4, 17, 2, 60, 5, 9, 25, 3, 40])
    est = MetaRegressor(**{**FAST, "max_iter": 15}, early_stopping=True, validation_fraction=0.3).fit(
        X, y, groups=groups
    )
    assert np.isfinite(est.history_[:, "valid_loss"]).all()


class _NoMaskHead(Head):
    """A 0.3-style user head: its adapt takes no mask."""

    task_types = ("regression",)

    def init(self, params, meta):
        return ()

    def adapt(self, net, params, meta, state, x, y):
        shift = (y - net.forward(params, x)).mean(dim=0)
        return {**params, "head.bias": params["head.bias"] + shift}, state


def test_a_head_without_masks_works_on_equal_sizes_and_is_refused_clearly_on_ragged_groups():
    assert not takes_masks(_NoMaskHead()) and all(takes_masks(head) for head, _ in HEADS.values())
    X, y, groups = _groups_of([20] * 8)
    est = MetaRegressor(**FAST, head=_NoMaskHead()).fit(X, y, groups=groups)
    before = est.predict(X[:5])
    X, y, groups = _groups_of([20] * 7 + [6])
    with pytest.raises(ValueError, match=r"_NoMaskHead's adapt\(\) and loss\(\) take no mask argument"):
        est.fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X[:5]), before)  # a failed fit keeps the fitted model
    with pytest.warns(SmallTaskWarning):  # a one-row group is left out; the others are equal: no masks
        est.fit(*(a[: 7 * 20 + 1] for a in _groups_of([20] * 7 + [1])))
