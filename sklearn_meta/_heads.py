"""Closed-form heads: the last layer fitted to a task's support rows without gradient steps.

A head turns a task's support rows into the weights of the network's last
linear layer (``head.weight``, ``head.bias``) in closed form, from the
features the body computes. Its state holds sufficient statistics, so
observing rows in several calls equals observing them all at once, and the
state after observing the support rows gives predictive uncertainty. All
operations are pure tensor expressions: differentiable (the meta-gradient
flows through the solve into the body and the head's meta-parameters) and
vectorisable over tasks with ``vmap``.

- :class:`BayesianRidgeHead` (regression; R2-D2, Bertinetto et al. 2019, as a
  Bayesian linear model): a normal-inverse-gamma prior on the head's weights
  and the task's noise variance, centred on the meta-learned head, with a
  meta-learned full prior covariance; Student-t predictive distributions.
- :class:`RidgeClassifierHead` (classification; R2-D2): ridge regression
  of one-hot targets on the features, with a meta-learned penalty and logit
  scale.
- :class:`PrototypeHead` (classification; Snell et al. 2017): class means of
  the support features; ``-scale * ||phi - c_k||^2`` is, up to a term equal
  for all classes, the linear layer ``W_k = 2 scale c_k``,
  ``b_k = -scale ||c_k||^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "HEADS",
    "BayesianRidgeHead",
    "PrototypeHead",
    "PrototypeState",
    "RidgeClassifierHead",
    "RidgeClassifierState",
    "RidgeState",
]


class RidgeState(NamedTuple):
    """The prior mean and the sufficient statistics of the rows a task has observed.

    ``prior`` is ``m0``, the meta-learned head at the start of the adaptation
    (weights then bias, one column per output); ``gram = Phi^T Phi``,
    ``moment = Phi^T y``, ``squares = y^T y`` (summed over outputs) and
    ``count``, the number of targets, ``Phi`` being the features with a
    column of ones.
    """

    prior: Tensor
    gram: Tensor
    moment: Tensor
    squares: Tensor
    count: Tensor


class PrototypeState(NamedTuple):
    """Per-class sums of support features and counts."""

    sums: Tensor
    counts: Tensor


def _cholesky(matrix: Tensor) -> Tensor:
    """Cholesky factor of ``matrix``, all NaN where it does not factorise (non-finite features).

    A NaN then reaches the loss or the predictions, where the estimators'
    finiteness checks report it, instead of a linear-algebra error escaping
    from inside a vectorised solve.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    return torch.where(info == 0, factor, torch.full_like(factor, math.nan))


def _design(features: Tensor) -> Tensor:
    return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)


def _prior_mean(params) -> Tensor:
    # (n_features + 1, n_outputs): the meta-learned head, weights then bias
    return torch.cat([params["head.weight"].T, params["head.bias"][None]], dim=0)


@dataclass(frozen=True)
class BayesianRidgeHead:
    """Bayesian linear regression on the body's features, with a meta-learned prior.

    The conjugate normal-inverse-gamma model of each task's head weights
    ``w`` (one column per output) and noise variance ``s2``::

        s2 ~ InverseGamma(a0, b0),   w | s2 ~ N(m0, s2 S S^T),   y | w, s2 ~ N(Phi w, s2 I)

    ``Phi`` being the body's features with a column of ones. Meta-learned:
    the prior mean ``m0`` (the network's head), the prior scale ``S``
    (``prior_scale``, a full matrix: the prior covariance says which
    directions of the feature space vary between tasks, as a mixed model's
    random-effects covariance does), and ``a0 = 1 + exp(log_noise_shape)``,
    ``b0 = exp(log_noise_scale)``. The posterior mean is the ridge regression
    of ``y - Phi m0`` with penalty matrix ``(S S^T)^-1``, shifted by ``m0``;
    the noise variance is estimated per task from its residuals, so the
    predictive distribution of a new target is a Student-t with ``2 a_n``
    degrees of freedom. The meta-loss is that Student-t's negative
    log-likelihood of the query rows.

    The estimators meta-learn ``S``, ``a0`` and ``b0`` at ``meta_lr_factor``
    times their ``meta_lr``, and start ``b0`` at the training targets'
    variance (:meth:`init_from_targets`), so the prior is on the targets'
    scale whatever their units. The solves are in float64 (the sufficient
    statistics too): in float32 the Cholesky factorisation fails on unscaled
    inputs, whose Gram matrices span many orders of magnitude.
    Meta-training's loss (:meth:`fresh_query_loss`) is the mean of the query
    rows' negative log-likelihood before and after the support rows are
    observed.
    """

    meta_lr_factor = 10.0

    def meta_parameters(self, head) -> dict:
        """The head's meta-parameters, initialised: a unit prior, noise variance 1 a priori."""
        size = head.in_features + 1
        return {
            "prior_scale": torch.eye(size),
            "log_noise_shape": torch.zeros(()),  # a0 = 2
            "log_noise_scale": torch.zeros(()),  # b0 = 1: prior mean of the noise variance b0 / (a0 - 1) = 1
        }

    def init_from_targets(self, network, y: Tensor) -> None:
        """Set ``b0`` so that the prior mean of the noise variance is the variance of the targets ``y``."""
        variance = y.double().var(dim=0, correction=0).mean().clamp(min=1e-12) if len(y) > 1 else y.new_ones(())
        a0 = 1 + network.log_noise_shape.detach().exp()
        with torch.no_grad():
            network.log_noise_scale.copy_(torch.log((a0 - 1) * variance))

    def init(self, params) -> RidgeState:
        prior = _prior_mean(params).double()
        zero = prior.new_zeros(())
        return RidgeState(prior, prior.new_zeros(prior.shape[0], prior.shape[0]), torch.zeros_like(prior), zero, zero)

    def observe(self, state: RidgeState, features: Tensor, y: Tensor, params) -> RidgeState:
        phi, y = _design(features).double(), y.double()
        return RidgeState(
            state.prior,
            state.gram + phi.T @ phi,
            state.moment + phi.T @ y,
            state.squares + (y * y).sum(),
            state.count + y.numel(),
        )

    def _posterior(self, state: RidgeState, params):
        """Cholesky factor of the whitened precision ``I + S^T G S``, whitened mean, noise shape and scale.

        In the coordinates ``v = S^-1 (w - m0)`` the prior is ``N(0, s2 I)``;
        the residuals ``r = y - Phi m0`` have ``Psi^T r = S^T (Phi^T y - G m0)``
        and ``r^T r = y^T y - 2 m0 . Phi^T y + m0 . G m0``.
        """
        scale, prior, gram = params["prior_scale"].double(), state.prior, state.gram
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        factor = _cholesky(eye + scale.T @ gram @ scale)
        shift = scale.T @ (state.moment - gram @ prior)
        whitened = torch.cholesky_solve(shift, factor)
        squares = state.squares - 2 * (prior * state.moment).sum() + (prior * (gram @ prior)).sum()
        shape = 1 + params["log_noise_shape"].double().exp() + state.count / 2
        noise = params["log_noise_scale"].double().exp() + (squares - (shift * whitened).sum()) / 2
        return factor, whitened, shape, noise

    def solve(self, state: RidgeState, params) -> dict:
        _, whitened, _, _ = self._posterior(state, params)
        mean = (state.prior + params["prior_scale"].double() @ whitened).to(params["head.weight"].dtype)
        return {**params, "head.weight": mean[:-1].T, "head.bias": mean[-1]}

    def _predictive(self, state: RidgeState, params, phi: Tensor) -> tuple[Tensor, Tensor]:
        """Degrees of freedom and squared scale of the Student-t predictive at each row of ``phi`` (float64
        features with their column of ones)."""
        factor, _, shape, noise = self._posterior(state, params)
        psi = phi @ params["prior_scale"].double()
        spread = (psi.T * torch.cholesky_solve(psi.T, factor)).sum(dim=0)
        return 2 * shape, noise / shape * (1 + spread)

    def predictive_variance(self, state: RidgeState, params, features: Tensor) -> Tensor:
        """Variance of a new target at each row of ``features`` (the same for every output)."""
        dof, scale2 = self._predictive(state, params, _design(features).double())
        return (scale2 * dof / (dof - 2)).to(features.dtype)

    def query_loss(self, learner, params, state: RidgeState, x: Tensor, y: Tensor) -> Tensor:
        phi = _design(learner.features(params, x)).double()
        return self._design_loss(params, state, phi, y.double()).to(y.dtype)

    def _design_loss(self, params, state: RidgeState, phi: Tensor, y: Tensor) -> Tensor:
        """:meth:`query_loss` from the rows' float64 features with their column of ones."""
        dof, scale2 = self._predictive(state, params, phi)
        return _student_t_nll(y, phi @ _prior_mean(params).double(), dof, scale2[:, None])

    def fresh_query_loss(self, learner, params, x_support, y_support, x_query, y_query) -> Tensor:
        """Meta-training's loss: the mean of :meth:`query_loss` before and after observing the support rows.

        The query rows' likelihood under the prior (no row observed) makes
        the meta-learned head a good model of a task before adaptation
        (``predict`` before ``partial_adapt``, or a task too new to have
        rows) and calibrates the prior's spread; under the posterior
        (the support rows observed), it is the few-shot objective.

        With fewer support rows ``n`` than features ``d`` (plus one), the
        Woodbury identity replaces the ``d x d`` solve by an ``n x n`` one,
        with ``K = I + Psi Psi^T``: ``Lambda^-1 Psi^T = Psi^T K^-1``, and the
        residual sum of squares left unexplained is ``r^T K^-1 r``.
        """
        # One pass of the body over support and query rows (a row's features do not depend on the others).
        n = x_support.shape[0]
        phi_all = _design(learner.features(params, torch.cat([x_support, x_query]))).double()
        phi, phi_q = phi_all[:n], phi_all[n:]
        d = phi.shape[1]
        y_query = y_query.double()
        scale, prior = params["prior_scale"].double(), _prior_mean(params).double()
        psi_all = phi_all @ scale
        psi, psi_q = psi_all[:n], psi_all[n:]
        prior_loss = self._prior_loss(params, phi_q @ prior, psi_q, y_query)
        if n >= d:
            state = self.observe(self.init(params), phi[:, :-1], y_support, params)
            after = self._design_loss(self.solve(state, params), state, phi_q, y_query)
            return ((prior_loss + after) / 2).to(y_support.dtype)
        residual = y_support.double() - phi @ prior
        gram_all = psi_all @ psi.T  # (support + query, support)
        factor = _cholesky(torch.eye(n, dtype=phi.dtype, device=phi.device) + gram_all[:n])
        cross = gram_all[n:]  # (query, support)
        # One solve for the residuals and the query rows: K^-1 [r, cross^T]
        solved = torch.cholesky_solve(torch.cat([residual, cross.T], dim=1), factor)
        solved_residual, solved_cross = solved[:, : residual.shape[1]], solved[:, residual.shape[1] :]
        mean = phi_q @ prior + cross @ solved_residual
        spread = (psi_q * psi_q).sum(dim=1) - (cross * solved_cross.T).sum(dim=1)
        shape = 1 + params["log_noise_shape"].double().exp() + residual.numel() / 2
        noise = params["log_noise_scale"].double().exp() + (residual * solved_residual).sum() / 2
        after = _student_t_nll(y_query, mean, 2 * shape, (noise / shape * (1 + spread))[:, None])
        return ((prior_loss + after) / 2).to(y_support.dtype)

    def negative_log_evidence(self, learner, params, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Minus the log marginal likelihood of one group's rows, and their number of targets.

        The rows with ``mask`` 1 count, those with 0 (padding) do not. The
        normal-inverse-gamma prior integrates out the head's weights and the
        noise variance in closed form: the rows are jointly a multivariate
        Student-t, ``Y ~ t_{2 a0}(Phi m0, (b0 / a0)(I + Phi S S^T Phi^T))``,
        whose log density, from the posterior of :meth:`_posterior`, is::

            -n/2 log(2 pi) - q/2 log|I + S^T G S| + a0 log b0 - an log bn + lgamma(an) - lgamma(a0)

        (``n`` targets, ``q`` outputs, ``G = Phi^T Phi``). This is the
        likelihood a mixed model is fitted by (maximum likelihood, not REML),
        with the body's features as the random effects' design.
        """
        weight = mask.double()[:, None]
        phi = _design(learner.features(params, x)).double() * weight  # padding rows: all zero
        y = y.double() * weight
        count = weight.sum() * y.shape[-1]
        state = RidgeState(_prior_mean(params).double(), phi.T @ phi, phi.T @ y, (y * y).sum(), count)
        factor, _, shape, noise = self._posterior(state, params)
        a0 = 1 + params["log_noise_shape"].double().exp()
        b0 = params["log_noise_scale"].double().exp()
        log_det = 2 * torch.log(torch.diagonal(factor)).sum() * y.shape[-1]
        log_evidence = (
            -state.count / 2 * math.log(2 * math.pi)
            - log_det / 2
            + a0 * torch.log(b0)
            - shape * torch.log(noise)
            + torch.lgamma(shape)
            - torch.lgamma(a0)
        )
        return -log_evidence, count

    def _prior_loss(self, params, prior_mean, psi_q, y_query):
        """:meth:`query_loss` before any row is observed: the prior predictive of the query rows."""
        shape = 1 + params["log_noise_shape"].double().exp()
        scale2 = params["log_noise_scale"].double().exp() / shape * (1 + (psi_q * psi_q).sum(dim=1))
        return _student_t_nll(y_query, prior_mean, 2 * shape, scale2[:, None])


def _student_t_nll(y: Tensor, mean: Tensor, dof: Tensor, scale2: Tensor) -> Tensor:
    """Mean negative log-density of ``y`` under Student-t distributions (location, squared scale, dof)."""
    half = (dof + 1) / 2
    log_norm = torch.lgamma(half) - torch.lgamma(dof / 2) - 0.5 * torch.log(dof * math.pi * scale2)
    return (half * torch.log1p((y - mean) ** 2 / (dof * scale2)) - log_norm).mean()


@dataclass(frozen=True)
class PrototypeHead:
    """Class prototypes (means of the support features), scored by negative squared distance.

    A class without support rows keeps the meta-learned head's weights.
    """

    meta_lr_factor = 10.0

    def meta_parameters(self, head) -> dict:
        """The head's meta-parameters, initialised: the log of the distances' scale, 0."""
        return {"log_scale": torch.zeros(())}

    def init(self, params) -> PrototypeState:
        weight = params["head.weight"]
        return PrototypeState(torch.zeros_like(weight), torch.zeros_like(weight[:, 0]))

    def observe(self, state: PrototypeState, features: Tensor, y: Tensor, params) -> PrototypeState:
        classes = torch.arange(state.counts.shape[0], device=y.device)
        members = (y[:, None] == classes).to(features.dtype)  # (rows, classes)
        return PrototypeState(state.sums + members.T @ features, state.counts + members.sum(dim=0))

    def solve(self, state: PrototypeState, params) -> dict:
        seen = state.counts > 0
        prototypes = state.sums / state.counts.clamp(min=1)[:, None]
        scale = params["log_scale"].exp()
        weight = torch.where(seen[:, None], 2 * scale * prototypes, params["head.weight"])
        bias = torch.where(seen, -scale * (prototypes * prototypes).sum(dim=1), params["head.bias"])
        return {**params, "head.weight": weight, "head.bias": bias}

    def query_loss(self, learner, params, state, x: Tensor, y: Tensor) -> Tensor:
        return learner.task_loss(params, x, y)


class RidgeClassifierState(NamedTuple):
    """Sufficient statistics of a task's rows for the ridge classifier head.

    ``gram = Phi^T Phi`` and ``moment = Phi^T Y`` (``Y`` one-hot), ``Phi``
    being the features with a column of ones; ``prior`` is the meta-learned
    head divided by the logit scale (weights then bias, one column per class).
    """

    prior: Tensor
    gram: Tensor
    moment: Tensor


@dataclass(frozen=True)
class RidgeClassifierHead:
    """Ridge regression of one-hot targets on the body's features, scaled into logits (R2-D2).

    ``W = (Phi^T Phi + lam I)^-1 (Phi^T Y + lam M)``: the ridge regression
    of the one-hot targets ``Y`` of the support rows, shrunk towards
    ``M = m0 / s``; the logits are ``s [phi, 1] W``. Before any row (and for
    a class without rows, mostly) the logits are the meta-learned head's
    ``m0``. With ``shrink_to_head=False`` the shrinkage is towards zero
    (``M = 0``), as in R2-D2: for episodes, whose labels are permuted in
    every task, so that no output unit has a meaning to remember.
    Meta-learned: the penalty ``lam = exp(log_ridge)`` and the logit scale
    ``s = exp(log_logit_scale)`` (Bertinetto et al. 2019), at
    ``meta_lr_factor`` times the meta learning rate. Solves in float64.
    """

    shrink_to_head: bool = True
    meta_lr_factor = 10.0

    def meta_parameters(self, head) -> dict:
        """The head's meta-parameters, initialised: penalty 1, logit scale 10."""
        return {"log_ridge": torch.zeros(()), "log_logit_scale": torch.tensor(math.log(10.0))}

    def init(self, params) -> RidgeClassifierState:
        prior = (_prior_mean(params) / params["log_logit_scale"].exp()).double()
        if not self.shrink_to_head:
            prior = torch.zeros_like(prior)
        return RidgeClassifierState(prior, prior.new_zeros(prior.shape[0], prior.shape[0]), torch.zeros_like(prior))

    def observe(self, state: RidgeClassifierState, features: Tensor, y: Tensor, params) -> RidgeClassifierState:
        phi = _design(features).double()
        return RidgeClassifierState(state.prior, state.gram + phi.T @ phi, state.moment + phi.T @ _one_hot(y, state))

    def solve(self, state: RidgeClassifierState, params) -> dict:
        ridge = params["log_ridge"].double().exp()
        eye = torch.eye(state.gram.shape[0], dtype=state.gram.dtype, device=state.gram.device)
        factor = _cholesky(state.gram + ridge * eye)
        weights = torch.cholesky_solve(state.moment + ridge * state.prior, factor)
        weights = (params["log_logit_scale"].double().exp() * weights).to(params["head.weight"].dtype)
        return {**params, "head.weight": weights[:-1].T, "head.bias": weights[-1]}

    def query_loss(self, learner, params, state, x: Tensor, y: Tensor) -> Tensor:
        return learner.task_loss(params, x, y)

    def fresh_query_loss(self, learner, params, x_support, y_support, x_query, y_query) -> Tensor:
        """:meth:`query_loss` after observing the support rows from the prior: meta-training's path.

        With fewer support rows ``n`` than features ``d`` (plus one), in the
        dual form: ``W = M + Phi^T (Phi Phi^T + lam I)^-1 (Y - Phi M)``, an
        ``n x n`` solve.
        """
        n = x_support.shape[0]
        phi_all = _design(learner.features(params, torch.cat([x_support, x_query]))).double()
        phi, phi_q = phi_all[:n], phi_all[n:]
        if n >= phi.shape[1]:
            state = self.observe(self.init(params), phi[:, :-1], y_support, params)
            logits = phi_q @ _prior_mean(self.solve(state, params)).double()
            return learner.loss(logits.to(params["head.weight"].dtype), y_query)
        state = self.init(params)
        ridge = params["log_ridge"].double().exp()
        factor = _cholesky(phi @ phi.T + ridge * torch.eye(n, dtype=phi.dtype, device=phi.device))
        residual = _one_hot(y_support, state) - phi @ state.prior
        scores = phi_q @ state.prior + (phi_q @ phi.T) @ torch.cholesky_solve(residual, factor)
        logits = (params["log_logit_scale"].double().exp() * scores).to(params["head.weight"].dtype)
        return learner.loss(logits, y_query)


def _one_hot(y: Tensor, state) -> Tensor:
    classes = torch.arange(state.prior.shape[1], device=y.device)
    return (y[:, None] == classes).to(state.prior.dtype)


#: How the head adapts, by the key the estimators keep in their network spec (``_base.head_key``):
#: inner-optimizer steps (None), or a closed form.
HEADS = {
    "gradient": None,
    "ridge": BayesianRidgeHead(),
    "prototypes": PrototypeHead(),
    "ridge_classifier": RidgeClassifierHead(),
    "ridge_classifier_episodes": RidgeClassifierHead(shrink_to_head=False),
}
