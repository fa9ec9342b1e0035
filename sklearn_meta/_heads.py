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
  Bayesian linear model): prior ``N(m0, 1/alpha I)`` on the head's weights
  and bias, ``m0`` being the meta-learned head, Gaussian noise of precision
  ``beta``; ``alpha`` and ``beta`` are meta-learned.
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

__all__ = ["HEADS", "BayesianRidgeHead", "PrototypeHead", "PrototypeState", "RidgeState"]


class RidgeState(NamedTuple):
    """Natural parameters of the head's Gaussian posterior: precision and precision @ mean."""

    precision: Tensor
    shift: Tensor


class PrototypeState(NamedTuple):
    """Per-class sums of support features and counts."""

    sums: Tensor
    counts: Tensor


def _design(features: Tensor) -> Tensor:
    return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)


def _prior_mean(params) -> Tensor:
    # (n_features + 1, n_outputs): the meta-learned head, weights then bias
    return torch.cat([params["head.weight"].T, params["head.bias"][None]], dim=0)


@dataclass(frozen=True)
class BayesianRidgeHead:
    """Bayesian linear regression on the body's features, with a meta-learned prior.

    Posterior precision ``A = alpha I + beta Phi^T Phi`` and mean
    ``A^-1 (alpha m0 + beta Phi^T y)``, ``Phi`` being the support features
    with a column of ones; its mean is the ridge regression of ``y - Phi m0``
    with penalty ``alpha / beta``, shifted by ``m0``. Predictive variance:
    ``1 / beta + phi^T A^-1 phi``. The meta-loss is the Gaussian negative
    log-likelihood of the query rows, which learns ``alpha`` and ``beta``.
    """

    meta_parameter_names = ("log_prior_precision", "log_noise_precision")

    def init(self, params) -> RidgeState:
        alpha = params["log_prior_precision"].exp()
        mean = _prior_mean(params)
        eye = torch.eye(mean.shape[0], dtype=mean.dtype, device=mean.device)
        return RidgeState(alpha * eye, alpha * mean)

    def observe(self, state: RidgeState, features: Tensor, y: Tensor, params) -> RidgeState:
        beta = params["log_noise_precision"].exp()
        phi = _design(features)
        return RidgeState(state.precision + beta * phi.T @ phi, state.shift + beta * phi.T @ y)

    def solve(self, state: RidgeState, params) -> dict:
        factor = torch.linalg.cholesky(state.precision)
        mean = torch.cholesky_solve(state.shift, factor)
        return {**params, "head.weight": mean[:-1].T, "head.bias": mean[-1]}

    def predictive_variance(self, state: RidgeState, params, features: Tensor) -> Tensor:
        """Variance of a new target at each row of ``features`` (the same for every output)."""
        phi = _design(features)
        factor = torch.linalg.cholesky(state.precision)
        covariance_phi = torch.cholesky_solve(phi.T, factor)
        return params["log_noise_precision"].neg().exp() + (phi.T * covariance_phi).sum(dim=0)

    def query_loss(self, learner, params, state: RidgeState, x: Tensor, y: Tensor) -> Tensor:
        features = learner.features(params, x)
        mean = features @ params["head.weight"].T + params["head.bias"]
        variance = self.predictive_variance(state, params, features)[:, None]
        return _gaussian_nll(y, mean, variance)

    def fresh_query_loss(self, learner, params, x_support, y_support, x_query, y_query) -> Tensor:
        """:meth:`query_loss` after observing the support rows from the prior: meta-training's path.

        With fewer support rows ``n`` than features ``d`` (plus one), the
        Woodbury identity replaces the ``d x d`` solve by an ``n x n`` one:
        ``A^-1 = (I - Phi^T K^-1 Phi) / alpha`` with
        ``K = Phi Phi^T + (alpha / beta) I``.
        """
        phi = _design(learner.features(params, x_support))
        n, d = phi.shape
        if n >= d:
            state = self.observe(self.init(params), phi[:, :-1], y_support, params)
            return self.query_loss(learner, self.solve(state, params), state, x_query, y_query)
        phi_q = _design(learner.features(params, x_query))
        alpha, beta = params["log_prior_precision"].exp(), params["log_noise_precision"].exp()
        prior = _prior_mean(params)
        gram = phi @ phi.T + (alpha / beta) * torch.eye(n, dtype=phi.dtype, device=phi.device)
        factor = torch.linalg.cholesky(gram)
        cross = phi_q @ phi.T  # (query, support)
        mean = phi_q @ prior + cross @ torch.cholesky_solve(y_support - phi @ prior, factor)
        explained = (cross * torch.cholesky_solve(cross.T, factor).T).sum(dim=1)
        variance = 1 / beta + ((phi_q * phi_q).sum(dim=1) - explained) / alpha
        return _gaussian_nll(y_query, mean, variance[:, None])


def _gaussian_nll(y: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    return 0.5 * (torch.log(2 * math.pi * variance) + (y - mean) ** 2 / variance).mean()


@dataclass(frozen=True)
class PrototypeHead:
    """Class prototypes (means of the support features), scored by negative squared distance.

    A class without support rows keeps the meta-learned head's weights.
    """

    meta_parameter_names = ("log_scale",)

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


#: How the head adapts, by the estimators' ``head`` argument: inner-optimizer steps (None), or a closed form.
HEADS = {"gradient": None, "ridge": BayesianRidgeHead(), "prototypes": PrototypeHead()}
