"""Closed-form heads: against scikit-learn's Bayesian ridge and ridge, task-by-task gradients, estimators."""

import io
import pickle
import types

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import BayesianRidge, Ridge
from skorch.callbacks import Callback
from torch import nn

from sklearn_meta import EpisodicClassifier, MetaClassifier, MetaRegressor
from sklearn_meta.engine import GroupBatch, TaskBatch, adapt_one_task, evidence_loss, meta_gradient
from sklearn_meta.heads import (
    BayesianRidgeHead,
    FunctionalNetwork,
    GradientHead,
    HeadedNetwork,
    PrototypeHead,
    RidgeClassifierHead,
)

from .conftest import FAST


def _ridge_network(n_features=3, width=5, n_outputs=1, seed=0):
    """A body and last layer in float64, their parameters, and the Bayesian ridge head's meta-parameters."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(n_features, width), nn.Tanh())
    net = HeadedNetwork(body, nn.Linear(width, n_outputs)).double()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    meta = {k: v.double() for k, v in BayesianRidgeHead().meta_parameters(params).items()}
    return net, params, meta


def _functional(net, loss=torch.nn.functional.mse_loss):
    return FunctionalNetwork(net, {}, loss)


def _design(features):
    return np.c_[features, np.ones(len(features))]


def _head_params(prior, scale, shape=0.0, noise_scale=0.0):
    """The last layer at the prior mean (features + 1, outputs), and the meta-parameters: prior scale, log noise."""
    params = {"head.weight": torch.tensor(prior[:-1].T), "head.bias": torch.tensor(prior[-1])}
    meta = {
        "prior_scale": torch.tensor(scale),
        "log_noise_shape": torch.tensor(float(shape), dtype=torch.float64),
        "log_noise_scale": torch.tensor(float(noise_scale), dtype=torch.float64),
    }
    return params, meta


def _nig_reference(design, y, prior, scale, a0, b0, new_design):
    """Textbook normal-inverse-gamma posterior predictive (Murphy 2007, sec. 7.6), in the weights' own space."""
    prior_precision = np.linalg.inv(scale @ scale.T)
    precision = prior_precision + design.T @ design
    mean = np.linalg.solve(precision, prior_precision @ prior + design.T @ y)
    a_n = a0 + y.size / 2
    b_n = b0 + 0.5 * (np.sum(y * y) + np.sum(prior * (prior_precision @ prior)) - np.sum(mean * (precision @ mean)))
    scale2 = b_n / a_n * (1 + np.sum(new_design * np.linalg.solve(precision, new_design.T).T, axis=1))
    return mean, 2 * a_n, scale2


def test_posterior_mean_equals_sklearn_bayesian_ridge_with_the_same_penalty():
    rng = np.random.RandomState(0)
    features = rng.normal(size=(30, 4))
    y = features @ rng.normal(size=4) + 0.5 + 0.3 * rng.normal(size=30)
    reference = BayesianRidge(fit_intercept=False).fit(_design(features), y)
    # prior mean 0 as BayesianRidge's; prior covariance s2 S S^T with S = c I: penalty 1 / c^2 = lambda / alpha
    scale = np.sqrt(reference.alpha_ / reference.lambda_) * np.eye(5)
    params, meta = _head_params(np.zeros((5, 1)), scale)
    head = BayesianRidgeHead()
    state = head.observe(head.init(params, meta), torch.tensor(features), torch.tensor(y)[:, None])
    solved = head.solve(state, params, meta)
    coef = np.r_[solved["head.weight"].numpy().ravel(), solved["head.bias"].numpy()]
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-8)


def test_predictive_distribution_is_the_normal_inverse_gamma_posterior_predictive():
    rng = np.random.RandomState(3)
    features, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    prior, scale = rng.normal(size=(4, 2)), np.eye(4) + 0.3 * rng.normal(size=(4, 4))
    params, meta = _head_params(prior, scale, shape=0.4, noise_scale=-0.7)
    a0, b0 = 1 + np.exp(0.4), np.exp(-0.7)
    head = BayesianRidgeHead()
    state = head.observe(head.init(params, meta), torch.tensor(features), torch.tensor(y))
    solved = head.solve(state, params, meta)
    new = rng.normal(size=(5, 3))
    mean, dof, scale2 = _nig_reference(_design(features), y, prior, scale, a0, b0, _design(new))
    np.testing.assert_allclose(solved["head.weight"].numpy(), mean[:-1].T, rtol=1e-8)
    np.testing.assert_allclose(solved["head.bias"].numpy(), mean[-1], rtol=1e-8)
    variance = head.predictive_variance(solved, meta, state, torch.tensor(new)).numpy()
    np.testing.assert_allclose(variance, scale2 * dof / (dof - 2), rtol=1e-8)  # a Student-t's variance
    y_new = rng.normal(size=(5, 2))
    expected = -stats.t.logpdf(y_new, dof, loc=_design(new) @ mean, scale=np.sqrt(scale2)[:, None]).mean()
    identity = types.SimpleNamespace(features=lambda params, x: x)  # the features are the rows
    got = head.loss(identity, solved, meta, state, torch.tensor(new), torch.tensor(y_new))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)


def test_posterior_mean_is_ridge_around_the_meta_learned_head():
    rng = np.random.RandomState(1)
    features, y = rng.normal(size=(6, 8)), rng.normal(size=(6, 2))  # fewer rows than features, two outputs
    prior, scale = rng.normal(size=(9, 2)), np.diag(rng.uniform(0.2, 2, size=9)) + 0.1 * rng.normal(size=(9, 9))
    params, meta = _head_params(prior, scale)
    head = BayesianRidgeHead()
    solved = head.solve(head.observe(head.init(params, meta), torch.tensor(features), torch.tensor(y)), params, meta)
    design = _design(features)
    # w = m0 + S v, and v is the unit-penalty ridge regression of y - Phi m0 on Phi S
    ridge = Ridge(alpha=1.0, fit_intercept=False).fit(design @ scale, y - design @ prior)
    weights = prior + scale @ ridge.coef_.T
    np.testing.assert_allclose(solved["head.weight"].numpy(), weights[:8].T, rtol=1e-7)
    np.testing.assert_allclose(solved["head.bias"].numpy(), weights[8], rtol=1e-7)


def test_observing_rows_in_several_calls_equals_observing_them_at_once():
    net, params, meta = _ridge_network()
    network, head = _functional(net), BayesianRidgeHead()
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    once, state_once = adapt_one_task(network, head, params, meta, head.init(params, meta), x, y)
    half, state = adapt_one_task(network, head, params, meta, head.init(params, meta), x[:5], y[:5])
    twice, state = adapt_one_task(network, head, half, meta, state, x[5:], y[5:])
    for name in once:
        torch.testing.assert_close(twice[name], once[name])
    for got, expected in zip(state, state_once):
        torch.testing.assert_close(got, expected)


def _reference_ridge_meta_gradient(net, params, meta, batch):
    """The Student-t NLL of the query rows before and after the support rows, task by task, with explicit inverses."""
    leaves = list(params.values()) + list(meta.values())
    total = 0.0
    scale = meta["prior_scale"]
    a0, b0 = 1 + meta["log_noise_shape"].exp(), meta["log_noise_scale"].exp()
    prior = torch.cat([params["head.weight"].T, params["head.bias"][None]], 0)
    prior_precision = torch.linalg.inv(scale @ scale.T)
    for t in range(len(batch.x_support)):
        phi = torch.cat([net.body(batch.x_support[t]), torch.ones(len(batch.x_support[t]), 1, dtype=torch.float64)], 1)
        y = batch.y_support[t]
        covariance = torch.linalg.inv(prior_precision + phi.T @ phi)
        mean = covariance @ (prior_precision @ prior + phi.T @ y)
        a_n = a0 + y.numel() / 2
        b_n = b0 + 0.5 * ((y * y).sum() + (prior * (prior_precision @ prior)).sum()
                          - (mean * (torch.linalg.inv(covariance) @ mean)).sum())  # fmt: skip
        phi_q = torch.cat([net.body(batch.x_query[t]), torch.ones(len(batch.x_query[t]), 1, dtype=torch.float64)], 1)
        scale2 = b_n / a_n * (1 + ((phi_q @ covariance) * phi_q).sum(1, keepdim=True))
        after = torch.distributions.StudentT(2 * a_n, phi_q @ mean, scale2.sqrt())
        prior_scale2 = b0 / a0 * (1 + ((phi_q @ scale @ scale.T) * phi_q).sum(1, keepdim=True))
        before = torch.distributions.StudentT(2 * a0, phi_q @ prior, prior_scale2.sqrt())
        nll = -(before.log_prob(batch.y_query[t]).mean() + after.log_prob(batch.y_query[t]).mean()) / 2
        total = total + nll / len(batch.x_support)
    return total, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("width", [5, 12], ids=["rows>=features", "woodbury"])
def test_ridge_head_meta_gradient_matches_task_by_task_reference(width):
    net, params, meta = _ridge_network(width=width)
    meta["prior_scale"] = meta["prior_scale"] + 0.2 * torch.randn_like(meta["prior_scale"])
    meta["log_noise_shape"] = torch.tensor(0.3, dtype=torch.float64)
    meta = {k: v.requires_grad_(True) for k, v in meta.items()}
    batch = TaskBatch(*(torch.randn(4, n, d, dtype=torch.float64) for n, d in ((6, 3), (6, 1), (7, 3), (7, 1))))
    # the reference calls the body module directly: its own parameters are the ones differentiated
    params = dict(net.named_parameters())
    loss, grads, meta_grads = meta_gradient(_functional(net), BayesianRidgeHead(), params, meta, batch)
    ref_loss, ref_grads = _reference_ridge_meta_gradient(net, params, meta, batch)
    torch.testing.assert_close(loss, ref_loss.detach())
    for (name, got), expected in zip([*grads.items(), *meta_grads.items()], ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10, msg=name)
        assert got.abs().sum() > 0, name  # everything is meta-learned


def test_woodbury_path_equals_the_natural_parameter_path():
    net, params, meta = _ridge_network(width=12)  # 13 features with the bias, 6 support rows
    network, head = _functional(net), BayesianRidgeHead()
    xs, ys = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    xq, yq = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64)
    meta["prior_scale"] = meta["prior_scale"] * 0.7 + 0.1 * torch.randn_like(meta["prior_scale"])
    meta["log_noise_shape"] = torch.tensor(0.3, dtype=torch.float64)
    meta["log_noise_scale"] = torch.tensor(-1.2, dtype=torch.float64)
    adapted, state = head.adapt(network, params, meta, head.init(params, meta), xs, ys)
    after = head.loss(network, adapted, meta, state, xq, yq)
    before = head.loss(network, params, meta, head.init(params, meta), xq, yq)  # the prior predictive
    fresh = head.episode_loss(network, params, meta, xs, ys, xq, yq)
    torch.testing.assert_close(fresh, (before + after) / 2)


def _evidence_meta(meta, seed=1):
    torch.manual_seed(seed)
    meta["prior_scale"] = meta["prior_scale"] * 0.7 + 0.2 * torch.randn_like(meta["prior_scale"])
    meta["log_noise_shape"] = torch.tensor(0.3, dtype=torch.float64)
    meta["log_noise_scale"] = torch.tensor(-0.4, dtype=torch.float64)
    return meta


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_log_evidence_is_the_multivariate_student_t_density_of_the_rows(n_outputs):
    # Integrating out the head's weights and noise variance: each output's rows are jointly
    # t_{2 a0}(Phi m0, b0 / a0 (I + Phi S S^T Phi^T)), the outputs sharing the noise variance
    # (for one output, scipy's density; for two, the chain rule through the first's posterior).
    net, params, meta = _ridge_network(width=4, n_outputs=n_outputs)
    meta = _evidence_meta(meta)
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, n_outputs, dtype=torch.float64)
    ones = torch.ones(9, dtype=torch.float64)
    nll, count = BayesianRidgeHead().negative_log_evidence(_functional(net), params, meta, x, y, ones)
    assert count == 9 * n_outputs
    with torch.no_grad():
        phi = _design(net.body(x).numpy())
    prior = np.r_[params["head.weight"].detach().numpy().T, params["head.bias"].detach().numpy()[None]]
    scale = meta["prior_scale"].detach().numpy()
    a0, b0 = 1 + np.exp(0.3), np.exp(-0.4)
    covariance = b0 / a0 * (np.eye(9) + phi @ scale @ scale.T @ phi.T)
    expected = -stats.multivariate_t(phi @ prior[:, 0], covariance, df=2 * a0).logpdf(y[:, 0].numpy())
    if n_outputs == 2:  # the second output given the first: a0 and b0 updated by the first's rows
        residual = y[:, 0].numpy() - phi @ prior[:, 0]
        a1 = a0 + 9 / 2
        b1 = b0 + residual @ np.linalg.solve(covariance * a0 / b0, residual) / 2
        expected -= stats.multivariate_t(phi @ prior[:, 1], covariance * a0 / b0 * b1 / a1, df=2 * a1).logpdf(
            y[:, 1].numpy()
        )
    np.testing.assert_allclose(nll.item(), expected, rtol=1e-10)


def test_log_evidence_ignores_padding_rows_whatever_they_hold():
    net, params, meta = _ridge_network()
    meta = _evidence_meta(meta)
    network, head = _functional(net), BayesianRidgeHead()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    alone = head.negative_log_evidence(network, params, meta, x, y, torch.ones(5, dtype=torch.float64))
    padded_x = torch.cat([x, 100 * torch.randn(4, 3, dtype=torch.float64)])
    padded_y = torch.cat([y, 100 * torch.randn(4, 1, dtype=torch.float64)])
    mask = torch.tensor([1.0] * 5 + [0.0] * 4, dtype=torch.float64)
    padded = head.negative_log_evidence(network, params, meta, padded_x, padded_y, mask)
    torch.testing.assert_close(padded, alone)


def test_evidence_meta_gradient_matches_group_by_group_reference():
    # The vectorised, padded loss and its gradient against a loop over the groups' real rows alone.
    net, params, meta = _ridge_network(width=6)
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    meta = {k: v.requires_grad_(True) for k, v in _evidence_meta(meta).items()}
    network, head = _functional(net), BayesianRidgeHead()
    sizes = [1, 4, 7, 2]
    x, y = torch.randn(4, 7, 3, dtype=torch.float64), torch.randn(4, 7, 1, dtype=torch.float64)
    mask = (torch.arange(7)[None] < torch.tensor(sizes)[:, None]).double()
    batch = GroupBatch(x, y, mask)
    loss, grads, meta_grads = meta_gradient(network, head, params, meta, batch)
    reference = sum(
        head.negative_log_evidence(network, params, meta, x[g, :n], y[g, :n], mask[g, :n])[0]
        for g, n in enumerate(sizes)
    ) / sum(sizes)
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(evidence_loss(network, head, params, meta, batch).detach(), reference.detach())
    expected = torch.autograd.grad(reference, [*params.values(), *meta.values()])
    for (name, got), want in zip([*grads.items(), *meta_grads.items()], expected):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10, msg=name)
        assert got.abs().sum() > 0, name  # the body, the prior mean, scale and noise prior all learn


def test_prototype_head_scores_negative_squared_distances():
    features = torch.randn(9, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    params = {
        "head.weight": torch.zeros(4, 4, dtype=torch.float64),  # 4 classes: class 3 has no support rows
        "head.bias": torch.full((4,), -7.0, dtype=torch.float64),
    }
    meta = {"log_scale": torch.tensor(np.log(0.5), dtype=torch.float64)}
    head = PrototypeHead()
    solved = head.solve(head.observe(head.init(params, meta), features, y), params, meta)
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
    with pytest.raises(ValueError, match=r"return_std=True needs a head with predictive_variance\(\)"):
        MetaRegressor(**FAST, head="gradient").fit(X, y, groups=groups).predict(X_test, return_std=True)


@pytest.mark.parametrize(
    "adapt_params, adapted", [("head", {"head.weight", "head.bias"}), (["body.0.bias"], {"body.0.bias"})]
)
def test_adapt_params_selects_what_adapts(sinusoids, adapt_params, adapted):
    X, y, groups, X_test, y_test, _ = sinusoids
    head = GradientHead(adapt_params=adapt_params, inner_lr=0.1)
    est = MetaRegressor(**FAST, head=head).fit(X, y, groups=groups)
    meta = est.module_.init_params()
    est.partial_adapt(X_test[:10], y_test[:10])
    changed = {name for name, value in est.adapted_params_.items() if not torch.equal(value, meta[name])}
    assert changed == adapted


def _classifier_params(prior, ridge, logit_scale):
    params = {"head.weight": torch.tensor(prior[:-1].T), "head.bias": torch.tensor(prior[-1])}
    meta = {
        "log_ridge": torch.tensor(np.log(ridge), dtype=torch.float64),
        "log_logit_scale": torch.tensor(np.log(logit_scale), dtype=torch.float64),
    }
    return params, meta


def test_ridge_classifier_head_is_ridge_regression_of_one_hot_labels():
    rng = np.random.RandomState(4)
    features, y = rng.normal(size=(12, 5)), np.array([0, 1, 2, 3] * 3)
    prior = rng.normal(size=(6, 4))  # 4 classes; the prior: the meta-learned head's logits
    params, meta = _classifier_params(prior, ridge=0.8, logit_scale=3.0)
    head = RidgeClassifierHead()
    state = head.observe(head.init(params, meta), torch.tensor(features), torch.tensor(y))
    solved = head.solve(state, params, meta)
    design = _design(features)
    # shrunk towards the prior divided by the scale: ridge on the residual targets, shifted
    ridge = Ridge(alpha=0.8, fit_intercept=False).fit(design, np.eye(4)[y] - design @ prior / 3.0)
    weights = 3.0 * (ridge.coef_.T + prior / 3.0)
    np.testing.assert_allclose(solved["head.weight"].numpy(), weights[:-1].T, rtol=1e-8)
    np.testing.assert_allclose(solved["head.bias"].numpy(), weights[-1], rtol=1e-8)
    # no rows: the meta-learned head itself
    unadapted = head.solve(head.init(params, meta), params, meta)
    np.testing.assert_allclose(unadapted["head.weight"].numpy(), prior[:-1].T, rtol=1e-10)


def _reference_ridge_classifier_meta_gradient(net, params, meta, batch):
    """Cross-entropy of the query rows, task by task, with the primal solve and an explicit inverse."""
    leaves, total = list(params.values()) + list(meta.values()), 0.0
    ridge, scale = meta["log_ridge"].exp(), meta["log_logit_scale"].exp()
    prior = torch.cat([params["head.weight"].T, params["head.bias"][None]], 0) / scale
    for t in range(len(batch.x_support)):
        phi = torch.cat([net.body(batch.x_support[t]), torch.ones(len(batch.x_support[t]), 1, dtype=torch.float64)], 1)
        targets = torch.nn.functional.one_hot(batch.y_support[t], prior.shape[1]).double()
        weights = torch.linalg.inv(phi.T @ phi + ridge * torch.eye(phi.shape[1], dtype=torch.float64)) @ (
            phi.T @ targets + ridge * prior
        )
        phi_q = torch.cat([net.body(batch.x_query[t]), torch.ones(len(batch.x_query[t]), 1, dtype=torch.float64)], 1)
        total = total + torch.nn.functional.cross_entropy(scale * phi_q @ weights, batch.y_query[t]) / len(
            batch.x_support
        )
    return total, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("width", [5, 12], ids=["rows>=features", "dual"])
def test_ridge_classifier_meta_gradient_matches_task_by_task_reference(width):
    torch.manual_seed(0)
    net = HeadedNetwork(nn.Sequential(nn.Linear(3, width), nn.Tanh()), nn.Linear(width, 3)).double()
    params = dict(net.named_parameters())
    meta = {k: v.double().requires_grad_(True) for k, v in RidgeClassifierHead().meta_parameters(params).items()}
    y_support = torch.tensor([0, 1, 2, 0, 1, 2]).repeat(4, 1)
    y_query = torch.tensor([0, 1, 2, 2, 1, 0, 0]).repeat(4, 1)
    batch = TaskBatch(
        torch.randn(4, 6, 3, dtype=torch.float64), y_support, torch.randn(4, 7, 3, dtype=torch.float64), y_query
    )
    network = _functional(net, torch.nn.functional.cross_entropy)
    loss, grads, meta_grads = meta_gradient(network, RidgeClassifierHead(), params, meta, batch)
    ref_loss, ref_grads = _reference_ridge_classifier_meta_gradient(net, params, meta, batch)
    torch.testing.assert_close(loss, ref_loss.detach())
    for (name, got), expected in zip([*grads.items(), *meta_grads.items()], ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10, msg=name)
        assert got.abs().sum() > 0, name


@pytest.mark.parametrize("head", ["ridge", "prototypes"])
def test_classifier_with_closed_form_head_in_episodes(digits_pool, head):
    X, y = digits_pool
    train = y < 50
    clf = EpisodicClassifier(**FAST, n_way=3, k_shot=2, head=head).fit(X[train], y[train])
    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in (50, 60, 70)])
    query = np.concatenate([np.flatnonzero(y == c)[2:] for c in (50, 60, 70)])
    clf.partial_adapt(X[support], y[support])
    assert clf.classes_.tolist() == [50, 60, 70]
    proba = clf.predict_proba(X[query])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert (clf.predict(X[query]) == y[query]).mean() > 0.9  # well-separated clusters: closed forms nail them
    assert 0 <= clf.score(X[~train], y[~train]) <= 1
    buffer = io.BytesIO()
    pickle.dump(clf, buffer)
    np.testing.assert_array_equal(pickle.loads(buffer.getvalue()).predict_proba(X[query]), proba)


def test_ridge_head_prior_is_on_the_targets_scale(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    unit = MetaRegressor(**{**FAST, "max_iter": 0}, head="ridge").fit(X, y, groups=groups)
    thousand = MetaRegressor(**{**FAST, "max_iter": 0}, head="ridge").fit(X, 1000 * y, groups=groups)
    # before any adaptation the predictive spread is the prior's, whose noise scale starts at var(y)
    ratio = thousand.predict(X_test[:5], return_std=True)[1] / unit.predict(X_test[:5], return_std=True)[1]
    np.testing.assert_allclose(ratio, 1000, rtol=1e-4)


def test_closed_form_head_meta_parameters_learn_faster(sinusoids):
    X, y, groups, *_ = sinusoids
    seen = {}

    class Record(Callback):
        def on_train_begin(self, net, **kwargs):
            names = {id(p): n for n, p in net.module_.named_parameters()}
            for group in net.optimizer_.param_groups:
                for p in group["params"]:
                    seen[names[id(p)]] = group["lr"]

    MetaRegressor(**FAST, head="ridge", meta_lr=0.002, callbacks=[Record()]).fit(X, y, groups=groups)
    head_names = {"meta.0", "meta.1", "meta.2"}  # the prior scale and the noise prior
    assert {n: lr for n, lr in seen.items() if n in head_names} == dict.fromkeys(head_names, 0.02)
    assert set(seen.values()) == {0.002, 0.02} and len(seen) > len(head_names)


def test_episodic_ridge_classifier_shrinks_towards_zero(digits_pool, class_tasks):
    # in episodes the labels are permuted in every task: the meta-learned last layer is no prior
    X, y = digits_pool
    episodic = EpisodicClassifier(**FAST, n_way=3, k_shot=2).fit(X[y < 50], y[y < 50])
    head = episodic.head_
    assert isinstance(head, RidgeClassifierHead) and not head.shrink_to_head
    state = head.init(episodic.module_.init_params(), episodic.module_.head_meta())
    assert not state.prior.any()
    Xc, yc, gc, *_ = class_tasks
    grouped = MetaClassifier(**FAST, head="ridge").fit(Xc, yc, groups=gc)
    assert grouped.head_.shrink_to_head
