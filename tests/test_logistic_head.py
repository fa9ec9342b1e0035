"""BayesianLogisticHead: the Laplace approximation against float64 references, and a GLMM fitted on the same rows."""

import pickle

import numpy as np
import pytest
import torch
from scipy import optimize
from scipy.special import log_softmax
from torch import nn

from sklearn_meta import MetaClassifier
from sklearn_meta.heads import BayesianLogisticHead, FunctionalNetwork, HeadedNetwork
from sklearn_meta.heads._linalg import last_layer

from .conftest import FAST


def _cross_entropy(output, target, mask=None):
    return nn.functional.cross_entropy(output, target)


def _no_body(d, n_classes):
    net = HeadedNetwork(nn.Identity(), nn.Linear(d, n_classes)).double()
    return FunctionalNetwork(net, {}, _cross_entropy)


def _params(prior):
    """Network parameters whose last layer is ``prior`` ((d + 1, classes): weights, then the bias)."""
    return {"head.weight": prior[:-1].T.clone(), "head.bias": prior[-1].clone()}


def _random_problem(n_rows, d, n_classes, seed, spread=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, d)) * spread
    y = rng.integers(n_classes, size=n_rows)
    prior = rng.normal(size=(d + 1, n_classes))
    scale = np.tril(rng.normal(size=(d + 1, d + 1)) * 0.5) + np.eye(d + 1)
    return X, y, prior, scale


# --- a float64 reference, written independently: scipy's optimizer, finite-difference Hessians -------------------


def _objective(v, X, y, prior, scale):
    """Minus the log posterior of the whitened last layer v (flattened (d + 1, classes)), up to a constant."""
    phi = np.column_stack([X, np.ones(len(X))])
    logits = phi @ (prior + scale @ v.reshape(prior.shape))
    return -log_softmax(logits, axis=1)[np.arange(len(y)), y].sum() + v @ v / 2


def _reference(X, y, prior, scale):
    """Mode, Hessian (numerical), Laplace evidence and posterior covariance of the last layer, all float64."""
    f = lambda v: _objective(v, X, y, prior, scale)  # noqa: E731
    mode = optimize.minimize(f, np.zeros(prior.size), method="BFGS", options={"gtol": 1e-11}).x
    hessian = optimize.approx_fprime(mode, lambda v: optimize.approx_fprime(v, f, 1e-6), 1e-5)
    hessian = (hessian + hessian.T) / 2
    evidence = f(mode) + np.linalg.slogdet(hessian)[1] / 2
    rows, n_classes = prior.shape  # the Hessian classes major, as the head lays it out
    order = [a * n_classes + c for c in range(n_classes) for a in range(rows)]
    return mode.reshape(prior.shape), hessian[np.ix_(order, order)], evidence


def _reference_evidence(X, y, prior, scale):
    """The Laplace evidence with an exact Hessian (for finite differences in the parameters)."""
    phi = np.column_stack([X, np.ones(len(X))])
    psi = phi @ scale
    v = np.zeros(prior.shape)
    targets = np.eye(prior.shape[1])[y]
    for _ in range(50):  # Newton, damped by halving until the objective falls
        p = np.exp(log_softmax(phi @ prior + psi @ v, axis=1))
        gradient = psi.T @ (p - targets) + v
        curvature = np.einsum("ic,ck->ick", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
        hessian = np.einsum("ick,ia,ib->cakb", curvature, psi, psi).reshape(v.size, v.size) + np.eye(v.size)
        step = np.linalg.solve(hessian, gradient.T.ravel()).reshape(v.shape[1], v.shape[0]).T
        t = 1.0
        while (
            _objective((v - t * step).ravel(), X, y, prior, scale) > _objective(v.ravel(), X, y, prior, scale) + 1e-12
        ):
            t /= 2  # (near the mode, full steps: a comparison at rounding level must not stop Newton short)
        v = v - t * step
    return _objective(v.ravel(), X, y, prior, scale) + np.linalg.slogdet(hessian)[1] / 2


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("spread", [1.0, 30.0])  # large features: the damped Newton steps must not overshoot
def test_the_laplace_approximation_equals_a_float64_reference(n_classes, spread):
    X, y, prior, scale = _random_problem(9, 2, n_classes, seed=n_classes, spread=spread)
    head = BayesianLogisticHead(newton_steps=12)
    net, meta = _no_body(2, n_classes), {"prior_scale": torch.tensor(scale)}
    params = _params(torch.tensor(prior))
    adapted, state = head.adapt(net, params, meta, head.init(params, meta), torch.tensor(X), torch.tensor(y))
    mode, hessian, evidence = _reference(X, y, prior, scale)
    np.testing.assert_allclose(state.mode.numpy(), mode, atol=1e-4)  # BFGS's own accuracy
    np.testing.assert_allclose(adapted["head.weight"].T.numpy(), (prior + scale @ mode)[:-1], atol=1e-3)
    factor = state.factor.numpy()
    np.testing.assert_allclose(factor @ factor.T, hessian, rtol=1e-3, atol=1e-3)
    nle, count = head.negative_log_evidence(net, params, meta, torch.tensor(X), torch.tensor(y), torch.ones(9))
    assert count == 9
    np.testing.assert_allclose(nle.item(), evidence, rtol=1e-3)  # the numerical Hessian's log-determinant
    np.testing.assert_allclose(nle.item(), _reference_evidence(X, y, prior, scale), rtol=1e-9)

    # The predictive: logits' mean and covariance, then the probit approximation.
    X_new = np.random.default_rng(0).normal(size=(4, 2))
    phi_new = np.column_stack([X_new, np.ones(4)])
    mean = phi_new @ (prior + scale @ mode)
    jac = np.einsum("ck,ia->icka", np.eye(n_classes), phi_new @ scale).reshape(4, n_classes, -1)
    cov = jac @ np.linalg.inv(hessian) @ jac.transpose(0, 2, 1)
    if n_classes == 2:
        z = (mean[:, 1] - mean[:, 0]) / np.sqrt(1 + np.pi / 8 * (cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]))
        expected = np.column_stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))])
    else:
        expected = np.exp(log_softmax(mean / np.sqrt(1 + np.pi / 8 * np.diagonal(cov, axis1=1, axis2=2)), axis=1))
    logits = head.predictive_outputs(adapted, meta, state, torch.tensor(X_new))
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), expected, atol=1e-4)


def test_the_evidence_gradient_equals_finite_differences_of_the_reference():
    X, y, prior, scale = _random_problem(11, 2, 3, seed=5)
    head = BayesianLogisticHead(newton_steps=10)  # the implicit gradient is exact at the mode
    net = _no_body(2, 3)
    prior_t = torch.tensor(prior, requires_grad=True)
    scale_t = torch.tensor(scale, requires_grad=True)
    nle, _ = head.negative_log_evidence(
        net, _params(prior_t), {"prior_scale": scale_t}, torch.tensor(X), torch.tensor(y), torch.ones(11)
    )
    grad_prior, grad_scale = torch.autograd.grad(nle, [prior_t, scale_t])
    for value, grad in ((prior, grad_prior), (scale, grad_scale)):
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = [value.copy(), value.copy()]
            shifted[0][index] += 1e-4
            shifted[1][index] -= 1e-4
            args = [(s, scale) if value is prior else (prior, s) for s in shifted]
            plus, minus = (_reference_evidence(X, y, *a) for a in args)
            numeric[index] = (plus - minus) / 2e-4
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fewer_rows_than_features_solve_in_the_dual_with_the_same_numbers(n_classes):
    # 4 rows (one of them padding) and 12 feature columns: the episode loss and the evidence take the
    # rows x classes (dual) solve; adapt keeps the columns x classes (primal) one for its state.
    X, y, prior, scale = _random_problem(4, 11, n_classes, seed=7)
    X_q = np.random.default_rng(1).normal(size=(5, 11))
    y_q = np.random.default_rng(2).integers(n_classes, size=5)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    head, net = BayesianLogisticHead(newton_steps=10), _no_body(11, n_classes)

    def leaves():
        return torch.tensor(prior, requires_grad=True), torch.tensor(scale, requires_grad=True)

    prior_t, scale_t = leaves()
    params, meta = _params(prior_t), {"prior_scale": scale_t}
    args = (torch.tensor(X), torch.tensor(y), torch.tensor(X_q), torch.tensor(y_q))
    dual = head.episode_loss(net, params, meta, *args, support_mask=mask)
    prior_p, scale_p = leaves()
    params_p, meta_p = _params(prior_p), {"prior_scale": scale_p}
    _, state = head.adapt(net, params_p, meta_p, head.init(params_p, meta_p), args[0], args[1], mask)
    after = head.loss(net, params_p, meta_p, state, args[2], args[3])
    before = head.loss(net, params_p, meta_p, head.init(params_p, meta_p), args[2], args[3])
    primal = (before + after) / 2
    torch.testing.assert_close(dual, primal, rtol=1e-10, atol=1e-12)
    for got, expected in zip(
        torch.autograd.grad(dual, [prior_t, scale_t]), torch.autograd.grad(primal, [prior_p, scale_p])
    ):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)

    nle, count = head.negative_log_evidence(net, params, meta, args[0], args[1], mask)
    assert count == 3
    np.testing.assert_allclose(nle.item(), _reference_evidence(X[:3], y[:3], prior, scale), rtol=1e-9)
    # and its gradient equals the primal evidence's (forced) on the same rows
    grads = torch.autograd.grad(nle, [prior_t, scale_t])
    mode, curvature, nll = head._laplace(
        meta_p, last_layer(params_p).double(), torch.tensor(np.column_stack([X[:3], np.ones(3)])), args[1][:3],
        torch.ones(3, dtype=torch.float64), dual=False,
    )  # fmt: skip
    primal_nle = nll + (mode * mode).sum() / 2 + curvature.half_log_det()
    torch.testing.assert_close(primal_nle, nle, rtol=1e-10, atol=1e-12)
    for got, expected in zip(grads, torch.autograd.grad(primal_nle, [prior_p, scale_p])):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-9)  # the two modes agree to the last Newton step


# --- the no-body head is a GLMM ------------------------------------------------------------------------------------


def _glmm_laplace(x, y, beta, cov):
    """Groups (rows of ``x``, ``y``) of a logistic GLMM with random intercept and slope of covariance ``cov``.

    Single-logit form, groups of equal size. Returns minus the Laplace log
    evidence summed over groups, the random effects' modes and their
    posterior covariances.
    """
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    Z = np.stack([np.ones_like(x), x], axis=2)  # (groups, rows, 2)
    offset = beta[0] + beta[1] * x
    precision = np.linalg.inv(cov)
    b = np.zeros((len(x), 2))
    for _ in range(30):
        p = 1 / (1 + np.exp(-(offset + np.einsum("grk,gk->gr", Z, b))))
        hessian = np.einsum("grk,gr,grl->gkl", Z, p * (1 - p), Z) + precision
        gradient = np.einsum("grk,gr->gk", Z, p - y) + b @ precision
        b = b - np.linalg.solve(hessian, gradient[..., None])[..., 0]
    eta = offset + np.einsum("grk,gk->gr", Z, b)
    p = 1 / (1 + np.exp(-eta))
    hessian = np.einsum("grk,gr,grl->gkl", Z, p * (1 - p), Z) + precision
    nll = -(y * eta - np.logaddexp(0, eta)).sum() + np.einsum("gk,kl,gl->", b, precision, b) / 2
    log_dets = np.linalg.slogdet(hessian)[1].sum() + len(x) * np.linalg.slogdet(cov)[1]
    return nll + log_dets / 2, b, np.linalg.inv(hessian)


def _as_head(beta, cov):
    """The GLMM as a two-class no-body head: class 1's prior column holds the fixed effects, S S^T = cov / 2."""
    prior = np.zeros((2, 2))
    prior[:, 1] = [beta[1], beta[0]]  # weights, then the bias
    chol = np.linalg.cholesky(cov[::-1, ::-1])  # the head's design is (x, 1), the GLMM's (1, x)
    return prior, chol / np.sqrt(2)


def test_the_two_class_head_is_the_random_intercept_and_slope_glmm():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=8), rng.integers(2, size=8)
    beta, cov = np.array([0.4, -0.8]), np.array([[1.2, 0.3], [0.3, 0.5]])
    expected, b, posterior = _glmm_laplace(x, y, beta, cov)
    prior, scale = _as_head(beta, cov)
    head, net, meta = BayesianLogisticHead(newton_steps=12), _no_body(1, 2), {"prior_scale": torch.tensor(scale)}
    params = _params(torch.tensor(prior))
    X = torch.tensor(x[:, None])
    nle, _ = head.negative_log_evidence(net, params, meta, X, torch.tensor(y), torch.ones(8))
    np.testing.assert_allclose(nle.item(), expected, rtol=1e-9)
    adapted, state = head.adapt(net, params, meta, head.init(params, meta), X, torch.tensor(y))
    slope, intercept = (
        (adapted["head.weight"][1, 0] - adapted["head.weight"][0, 0]).item(),
        (adapted["head.bias"][1] - adapted["head.bias"][0]).item(),
    )
    np.testing.assert_allclose([intercept, slope], beta + b[0], rtol=1e-9)
    x_new = np.array([-1.0, 0.5, 2.0])
    Z = np.column_stack([np.ones(3), x_new])
    eta, var = Z @ (beta + b[0]), np.einsum("ij,jk,ik->i", Z, posterior[0], Z)
    proba = torch.softmax(head.predictive_outputs(adapted, meta, state, torch.tensor(x_new[:, None])), dim=1)
    np.testing.assert_allclose(proba[:, 1].numpy(), 1 / (1 + np.exp(-eta / np.sqrt(1 + np.pi * var / 8))), rtol=1e-9)


def test_meta_trained_on_the_marginal_likelihood_it_fits_the_glmm_of_the_same_rows():
    """No body, the Laplace marginal likelihood of every group: the GLMM's maximum likelihood fit."""
    rng = np.random.default_rng(0)
    n_groups, n_rows = 60, 12
    groups = np.repeat(np.arange(n_groups), n_rows)
    x = rng.normal(size=n_groups * n_rows)
    effects = rng.multivariate_normal([0, 0], [[1.0, 0.2], [0.2, 0.4]], size=n_groups)
    eta = -0.3 + 1.1 * x + effects[groups, 0] + effects[groups, 1] * x
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-eta))).astype(int)

    x_g, y_g = x.reshape(n_groups, n_rows), y.reshape(n_groups, n_rows)

    def glmm_nll(theta):  # the reference fit: scipy's optimizer over the GLMM's five parameters
        chol = np.array([[np.exp(theta[2]), 0], [theta[3], np.exp(theta[4])]])
        return _glmm_laplace(x_g, y_g, theta[:2], chol @ chol.T)[0]

    reference = optimize.minimize(glmm_nll, np.zeros(5), method="Nelder-Mead", options={"maxiter": 3000, "fatol": 1e-8})
    clf = MetaClassifier(
        head=BayesianLogisticHead(covariance="full", newton_steps=6, meta_lr_factor=1.0),
        meta_objective="marginal_likelihood",
        meta_lr=0.03,
        meta_batch_size=n_groups,
        max_iter=300,
        random_state=0,
    ).fit(x[:, None], y, groups=groups)
    params = clf.module_.init_params()
    fixed = (
        (params["head.bias"][1] - params["head.bias"][0]).item(),
        (params["head.weight"][1, 0] - params["head.weight"][0, 0]).item(),
    )
    scale = clf.module_.head_meta()["prior_scale"].detach().double().numpy()
    cov = 2 * (scale @ scale.T)[::-1, ::-1]  # (1, x) order
    ours = _glmm_laplace(x_g, y_g, np.array(fixed), cov)[0]
    assert ours <= reference.fun + 0.05  # the same optimum of the same likelihood (720 rows)
    np.testing.assert_allclose(fixed, reference.x[:2], atol=0.05)


# --- the estimator --------------------------------------------------------------------------------------------------


def test_partial_adapt_in_two_calls_equals_one_call_and_batch_predict(class_tasks):
    X, y, groups, X_test, y_test, groups_test = class_tasks
    clf = MetaClassifier(head="logistic", **FAST).fit(X, y, groups=groups)
    once = clf.reset_adaptation().partial_adapt(X_test[:8], y_test[:8]).predict_proba(X_test[8:30])
    twice = clf.reset_adaptation().partial_adapt(X_test[:3], y_test[:3]).partial_adapt(X_test[3:8], y_test[3:8])
    np.testing.assert_allclose(twice.predict_proba(X_test[8:30]), once, rtol=1e-5, atol=1e-7)
    support = np.arange(30) < 8
    batch = clf.predict_proba(X_test[:30], groups=groups_test[:30], y_support=y_test[:30], support=support)
    np.testing.assert_allclose(batch[8:], once, rtol=1e-5, atol=1e-7)
    assert np.allclose(batch.sum(axis=1), 1)
    prior = clf.reset_adaptation().predict_proba(X_test[:5])  # no rows yet: the prior predictive
    assert np.isfinite(prior).all() and not np.allclose(prior, once[:5])


def test_probabilities_are_moderated_by_the_posterior_spread(class_tasks):
    """With few rows the predictive is less confident than the posterior mode's own softmax."""
    X, y, groups, X_test, y_test, _ = class_tasks
    clf = MetaClassifier(head="logistic", **FAST).fit(X, y, groups=groups)
    clf.partial_adapt(X_test[:3], y_test[:3])
    moderated = clf.predict_proba(X_test[3:40]).max(axis=1)
    params = clf.adapted_params_
    network = clf._serving().network
    with torch.no_grad():
        plug_in = torch.softmax(network.forward(params, torch.as_tensor(X_test[3:40], dtype=torch.float32)), dim=1)
    assert (moderated <= plug_in.max(dim=1).values.numpy() + 1e-6).all()
    assert (moderated < plug_in.max(dim=1).values.numpy() - 1e-3).any()


def test_marginal_likelihood_needs_a_head_with_one_and_a_failed_fit_keeps_the_model(class_tasks):
    X, y, groups, X_test, *_ = class_tasks
    clf = MetaClassifier(head="logistic", meta_objective="marginal_likelihood", **FAST).fit(X, y, groups=groups)
    assert clf.n_support_ == 0 and np.isfinite(clf.loss_curve_).all()
    before = clf.predict_proba(X_test)
    with pytest.raises(ValueError, match="BayesianLogisticHead, head='logistic', has one"):
        clf.set_params(head="ridge").fit(X, y, groups=groups)
    np.testing.assert_array_equal(clf.set_params(head="logistic").predict_proba(X_test), before)


def test_a_logistic_head_model_survives_pickle_and_skops(class_tasks):
    sio = pytest.importorskip("skops.io")
    X, y, groups, X_test, y_test, _ = class_tasks
    clf = MetaClassifier(head="logistic", **FAST).fit(X, y, groups=groups).partial_adapt(X_test[:6], y_test[:6])
    expected = clf.predict_proba(X_test)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X_test), expected)
    data = sio.dumps(clf)
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    np.testing.assert_array_equal(loaded.predict_proba(X_test), expected)
    np.testing.assert_allclose(
        loaded.partial_adapt(X_test[6:9], y_test[6:9]).predict_proba(X_test),
        clf.partial_adapt(X_test[6:9], y_test[6:9]).predict_proba(X_test),
        rtol=1e-6,
    )


def test_a_diagonal_prior_scale_is_the_full_head_with_a_diagonal_matrix():
    X, y, prior, _ = _random_problem(7, 2, 3, seed=2)
    diagonal = np.array([0.5, 1.5, 0.8])
    net, params = _no_body(2, 3), _params(torch.tensor(prior))
    args = (torch.tensor(X), torch.tensor(y), torch.ones(7))
    full = BayesianLogisticHead(covariance="full").negative_log_evidence(
        net, params, {"prior_scale": torch.tensor(np.diag(diagonal))}, *args
    )
    diag_head = BayesianLogisticHead(covariance="diagonal")
    assert diag_head.meta_parameters(params)["prior_scale"].shape == (3,)
    diag = diag_head.negative_log_evidence(net, params, {"prior_scale": torch.tensor(diagonal)}, *args)
    torch.testing.assert_close(diag[0], full[0], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="covariance"):
        MetaClassifier(head=BayesianLogisticHead(covariance="sparse"), **FAST).fit(
            X, y, groups=np.repeat([0, 1], [3, 4])
        )
