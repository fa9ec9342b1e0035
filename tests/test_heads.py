"""Closed-form heads: against scikit-learn's Bayesian ridge and ridge, task-by-task gradients, estimators."""

import io
import pickle

import numpy as np
import pytest
import torch
from sklearn.linear_model import BayesianRidge, Ridge
from torch import nn

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta._engine import Learner, TaskBatch, adapt, meta_gradient
from sklearn_meta._heads import BayesianRidgeHead, PrototypeHead
from sklearn_meta._network import HeadedNetwork
from sklearn_meta.optim import sgd

from .conftest import FAST


def _ridge_network(n_features=3, width=5, n_outputs=1, seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(n_features, width), nn.Tanh())
    net = HeadedNetwork(body, nn.Linear(width, n_outputs), BayesianRidgeHead.meta_parameter_names).double()
    return net, {k: v.detach().clone() for k, v in net.named_parameters()}


def _design(features):
    return np.c_[features, np.ones(len(features))]


def test_bayesian_ridge_head_equals_sklearn_bayesian_ridge():
    rng = np.random.RandomState(0)
    features = rng.normal(size=(30, 4))
    y = features @ rng.normal(size=4) + 0.5 + 0.3 * rng.normal(size=30)
    reference = BayesianRidge(fit_intercept=False).fit(_design(features), y)
    params = {
        "head.weight": torch.zeros(1, 4, dtype=torch.float64),  # prior mean 0, as BayesianRidge's
        "head.bias": torch.zeros(1, dtype=torch.float64),
        "log_prior_precision": torch.tensor(np.log(reference.lambda_)),
        "log_noise_precision": torch.tensor(np.log(reference.alpha_)),
    }
    head = BayesianRidgeHead()
    state = head.observe(head.init(params), torch.tensor(features), torch.tensor(y)[:, None], params)
    solved = head.solve(state, params)
    coef = np.r_[solved["head.weight"].numpy().ravel(), solved["head.bias"].numpy()]
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-8)
    new = rng.normal(size=(7, 4))
    mean, std = reference.predict(_design(new), return_std=True)
    variance = head.predictive_variance(state, params, torch.tensor(new)).numpy()
    np.testing.assert_allclose(np.sqrt(variance), std, rtol=1e-8)
    np.testing.assert_allclose(new @ coef[:4] + coef[4], mean, rtol=1e-8)


def test_posterior_mean_is_ridge_around_the_meta_learned_head():
    rng = np.random.RandomState(1)
    features, y = rng.normal(size=(6, 8)), rng.normal(size=(6, 2))  # fewer rows than features, two outputs
    prior = rng.normal(size=(9, 2))
    alpha, beta = 0.7, 3.0
    params = {
        "head.weight": torch.tensor(prior[:8].T),
        "head.bias": torch.tensor(prior[8]),
        "log_prior_precision": torch.tensor(np.log(alpha)),
        "log_noise_precision": torch.tensor(np.log(beta)),
    }
    head = BayesianRidgeHead()
    solved = head.solve(head.observe(head.init(params), torch.tensor(features), torch.tensor(y), params), params)
    design = _design(features)
    ridge = Ridge(alpha=alpha / beta, fit_intercept=False).fit(design, y - design @ prior)
    np.testing.assert_allclose(solved["head.weight"].numpy(), ridge.coef_[:, :8] + prior[:8].T, rtol=1e-7)
    np.testing.assert_allclose(solved["head.bias"].numpy(), ridge.coef_[:, 8] + prior[8], rtol=1e-7)


def test_observing_rows_in_several_calls_equals_observing_them_at_once():
    net, params = _ridge_network()
    learner = Learner(net, {}, torch.nn.functional.mse_loss, sgd(), head=BayesianRidgeHead())
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    once, state_once = adapt(learner, params, {}, learner.init_state(params), x, y, 1, serving=True)
    half, state = adapt(learner, params, {}, learner.init_state(params), x[:5], y[:5], 1, serving=True)
    twice, state = adapt(learner, half, {}, state, x[5:], y[5:], 1, serving=True)
    for name in once:
        torch.testing.assert_close(twice[name], once[name])
    torch.testing.assert_close(state.precision, state_once.precision)


def _reference_ridge_meta_gradient(net, params, batch):
    """The Gaussian NLL of the query rows, task by task, with explicit inverses (not Cholesky)."""
    leaves = list(params.values())
    total = 0.0
    for t in range(len(batch.x_support)):
        phi = torch.cat([net.body(batch.x_support[t]), torch.ones(len(batch.x_support[t]), 1, dtype=torch.float64)], 1)
        alpha, beta = params["log_prior_precision"].exp(), params["log_noise_precision"].exp()
        prior = torch.cat([params["head.weight"].T, params["head.bias"][None]], 0)
        covariance = torch.linalg.inv(alpha * torch.eye(phi.shape[1], dtype=torch.float64) + beta * phi.T @ phi)
        mean = covariance @ (alpha * prior + beta * phi.T @ batch.y_support[t])
        phi_q = torch.cat([net.body(batch.x_query[t]), torch.ones(len(batch.x_query[t]), 1, dtype=torch.float64)], 1)
        mu = phi_q @ mean
        var = 1 / beta + ((phi_q @ covariance) * phi_q).sum(1, keepdim=True)
        nll = 0.5 * (torch.log(2 * torch.pi * var) + (batch.y_query[t] - mu) ** 2 / var)
        total = total + nll.mean() / len(batch.x_support)
    return total, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("width", [5, 12], ids=["rows>=features", "woodbury"])
def test_ridge_head_meta_gradient_matches_task_by_task_reference(width):
    net, params = _ridge_network(width=width)
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    batch = TaskBatch(*(torch.randn(4, n, d, dtype=torch.float64) for n, d in ((6, 3), (6, 1), (7, 3), (7, 1))))
    learner = Learner(net, {}, torch.nn.functional.mse_loss, sgd(), head=BayesianRidgeHead())
    # the reference calls the body module directly: load the same parameters into it
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])
    loss, grads, _ = meta_gradient(learner, params, {}, batch, 1)
    ref_loss, ref_grads = _reference_ridge_meta_gradient(net, dict(net.named_parameters()), batch)
    torch.testing.assert_close(loss, ref_loss.detach())
    for (name, got), expected in zip(grads.items(), ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10, msg=name)
        assert got.abs().sum() > 0 or name == "head.bias", name  # everything is meta-learned


def test_woodbury_path_equals_the_natural_parameter_path():
    net, params = _ridge_network(width=12)  # 13 features with the bias, 6 support rows
    learner = Learner(net, {}, torch.nn.functional.mse_loss, sgd(), head=BayesianRidgeHead())
    xs, ys = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    xq, yq = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64)
    params["log_prior_precision"] = torch.tensor(0.3, dtype=torch.float64)
    params["log_noise_precision"] = torch.tensor(1.2, dtype=torch.float64)
    adapted, state = adapt(learner, params, {}, learner.init_state(params), xs, ys, 1)
    natural = learner.query_loss(adapted, state, xq, yq)
    torch.testing.assert_close(BayesianRidgeHead().fresh_query_loss(learner, params, xs, ys, xq, yq), natural)


def test_prototype_head_scores_negative_squared_distances():
    features = torch.randn(9, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    params = {
        "head.weight": torch.zeros(4, 4, dtype=torch.float64),  # 4 classes: class 3 has no support rows
        "head.bias": torch.full((4,), -7.0, dtype=torch.float64),
        "log_scale": torch.tensor(np.log(0.5), dtype=torch.float64),
    }
    head = PrototypeHead()
    solved = head.solve(head.observe(head.init(params), features, y, params), params)
    query = torch.randn(5, 4, dtype=torch.float64)
    logits = query @ solved["head.weight"].T + solved["head.bias"]
    prototypes = torch.stack([features[y == k].mean(0) for k in range(3)])
    expected = -0.5 * torch.cdist(query, prototypes) ** 2
    torch.testing.assert_close(torch.softmax(logits[:, :3], 1), torch.softmax(expected, 1))
    assert solved["head.bias"][3] == -7.0  # an unseen class keeps the meta-learned head


# --- estimators -------------------------------------------------------------------------------------


def test_regressor_with_ridge_head_end_to_end(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**FAST, head="ridge").fit(X, y, groups=groups)
    before, prior_std = est.predict(X_test[10:20], return_std=True)
    np.testing.assert_array_equal(before, est.predict(X_test[10:20]))
    est.partial_adapt(X_test[:10], y_test[:10])
    mean, std = est.predict(X_test[10:20], return_std=True)
    assert std.shape == (10,) and (std > 0).all() and (std < prior_std).all()  # the support rows inform
    # two calls add up to one call on all rows
    twice = MetaRegressor(**FAST, head="ridge").fit(X, y, groups=groups)
    twice.partial_adapt(X_test[:4], y_test[:4]).partial_adapt(X_test[4:10], y_test[4:10])
    np.testing.assert_allclose(twice.predict(X_test[10:20]), mean, rtol=1e-4, atol=1e-5)
    assert np.isfinite(est.score(X_test, y_test, groups=groups_test))
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X_test[10:20], return_std=True)[1], std)
    with pytest.raises(ValueError, match="return_std=True needs head='ridge'"):
        MetaRegressor(**FAST).fit(X, y, groups=groups).predict(X_test, return_std=True)


def test_closed_form_head_needs_a_network_ending_in_a_linear_layer(sinusoids):
    X, y, groups, *_ = sinusoids

    class NotSequential(nn.Module):
        def __init__(self, n_features_in, n_outputs):
            super().__init__()
            self.linear = nn.Linear(n_features_in, n_outputs)

        def forward(self, x):
            return self.linear(x)

    with pytest.raises(ValueError, match="must be a torch.nn.Sequential ending in torch.nn.Linear"):
        MetaRegressor(**FAST, head="ridge", module=NotSequential).fit(X, y, groups=groups)


@pytest.mark.parametrize("adapt_params, adapted", [("head", {"2.weight", "2.bias"}), (["0.bias"], {"0.bias"})])
def test_adapt_params_selects_what_adapts(sinusoids, adapt_params, adapted):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST, adapt_params=adapt_params, inner_lr=0.1).fit(X, y, groups=groups)
    meta = est.module_.meta_params()
    est.partial_adapt(X_test[:10], y_test[:10])
    changed = {name for name, value in est.adapted_params_.items() if not torch.equal(value, meta[name])}
    assert changed == adapted


def test_classifier_with_prototype_head_in_episodes(digits_pool):
    X, y = digits_pool
    train = y < 50
    clf = MetaClassifier(**FAST, n_way=3, k_shot=2, head="prototypes").fit(X[train], y[train])
    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in (50, 60, 70)])
    query = np.concatenate([np.flatnonzero(y == c)[2:] for c in (50, 60, 70)])
    clf.partial_adapt(X[support], y[support])
    assert clf.classes_.tolist() == [50, 60, 70]
    proba = clf.predict_proba(X[query])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert (clf.predict(X[query]) == y[query]).mean() > 0.9  # well-separated clusters: prototypes nail them
    assert 0 <= clf.score(X[~train], y[~train]) <= 1
    buffer = io.BytesIO()
    pickle.dump(clf, buffer)
    np.testing.assert_array_equal(pickle.loads(buffer.getvalue()).predict_proba(X[query]), proba)
