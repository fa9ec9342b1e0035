"""The Bayesian ridge head: the last layer as Bayesian linear regression on the body's features."""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor

from ._base import Head
from ._linalg import cholesky, design, last_layer, student_t_nll, with_last_layer

__all__ = ["BayesianRidgeHead", "RidgeState"]


class RidgeState(NamedTuple):
    """The prior mean and the sufficient statistics of the rows a task has observed.

    ``prior`` is ``m0``, the meta-learned last layer at the start of the
    adaptation (weights then bias, one column per output); ``gram = Phi^T
    Phi``, ``moment = Phi^T y``, ``squares = y^T y`` (summed over outputs)
    and ``count``, the number of targets, ``Phi`` being the features with a
    column of ones. Observing rows in several calls equals observing them
    all at once.
    """

    prior: Tensor
    gram: Tensor
    moment: Tensor
    squares: Tensor
    count: Tensor  # type: ignore[assignment]  # a field named as tuple.count


class BayesianRidgeHead(Head):
    """Bayesian linear regression on the body's features, with a meta-learned prior (R2-D2).

    The conjugate normal-inverse-gamma model of each task's last-layer
    weights ``w`` (one column per output) and noise variance ``s2``::

        s2 ~ InverseGamma(a0, b0),   w | s2 ~ N(m0, s2 S S^T),   y | w, s2 ~ N(Phi w, s2 I)

    ``Phi`` being the body's features with a column of ones (Bertinetto et
    al. 2019, as a Bayesian model). Meta-learned: the prior mean ``m0`` (the
    network's last layer), the prior scale ``S`` (``prior_scale``, a full
    matrix: the prior covariance says which directions of the feature space
    vary between tasks, as a mixed model's random-effects covariance does),
    and ``a0 = 1 + exp(log_noise_shape)``, ``b0 = exp(log_noise_scale)``,
    with ``b0`` started at the training targets' variance so that the prior
    is on the targets' scale. The posterior mean is the ridge regression of
    ``y - Phi m0`` with penalty matrix ``(S S^T)^-1``, shifted by ``m0``; the
    noise variance is estimated per task from its residuals, so the
    predictive distribution of a new target is a Student-t with ``2 a_n``
    degrees of freedom (``predict(X, return_std=True)``).

    The meta-loss of an episode is that Student-t's negative log-likelihood
    of the query rows, averaged over two states: before any row is observed
    (the meta-learned last layer must be a good model of a task on its own,
    and the prior's spread is calibrated) and after the support rows. It has
    a marginal likelihood (:meth:`negative_log_evidence`), so it can be
    meta-trained on every row of every group, as a mixed model is fitted
    (``MetaRegressor(meta_objective="marginal_likelihood")``). Solves run in
    float64: in float32 the Cholesky factorisation fails on unscaled inputs,
    whose Gram matrices span many orders of magnitude.

    Parameters
    ----------
    meta_lr_factor : float, default=10.0
        The prior scale and the noise prior learn at this multiple of the
        estimator's ``meta_lr``: they must move by orders of magnitude from
        their initial values, which a few hundred updates at ``meta_lr``
        cannot.

    See Also
    --------
    RidgeClassifierHead : The classification counterpart.
    GradientHead : Inner gradient steps instead of a closed form.

    Examples
    --------
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> from sklearn_meta.heads import BayesianRidgeHead
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MetaRegressor(head=BayesianRidgeHead(meta_lr_factor=20), max_iter=20, random_state=0)
    >>> est = est.fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, random_state=1)
    >>> mean, std = est.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:], return_std=True)
    >>> bool((std > 0).all())
    True
    """

    task_types = ("regression",)
    _parameter_constraints: dict = {"meta_lr_factor": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, meta_lr_factor: float = 10.0):
        self.meta_lr_factor = meta_lr_factor

    def meta_parameters(self, params, y: Tensor | None = None) -> dict:
        """A unit prior scale, and a noise prior whose mean is the variance of the targets ``y`` (1 without)."""
        size = params["head.weight"].shape[1] + 1
        log_noise_scale = torch.zeros(())  # b0 = 1: prior mean of the noise variance b0 / (a0 - 1) = 1
        if y is not None and len(y) > 1:  # a0 = 2, so b0 = variance
            variance = y.double().var(dim=0, correction=0).mean().clamp(min=1e-12)
            log_noise_scale = torch.log(variance).float().cpu()
        return {"prior_scale": torch.eye(size), "log_noise_shape": torch.zeros(()), "log_noise_scale": log_noise_scale}

    def init(self, params, meta) -> RidgeState:
        prior = last_layer(params).double()
        zero = prior.new_zeros(())
        return RidgeState(prior, prior.new_zeros(prior.shape[0], prior.shape[0]), torch.zeros_like(prior), zero, zero)

    def observe(self, state: RidgeState, features: Tensor, y: Tensor, mask: Tensor | None = None) -> RidgeState:
        """Add rows (their features and targets; those ``mask`` keeps) to the sufficient statistics."""
        phi, y = design(features).double(), y.double()
        count: int | Tensor = y.numel()
        if mask is not None:
            weight = mask.double()[:, None]
            phi, y, count = phi * weight, y * weight, weight.sum() * y.shape[-1]
        return RidgeState(
            state.prior,
            state.gram + phi.T @ phi,
            state.moment + phi.T @ y,
            state.squares + (y * y).sum(),
            state.count + count,
        )

    def adapt(self, net, params, meta, state: RidgeState, x: Tensor, y: Tensor, mask=None):
        state = self.observe(state, net.features(params, x), y, mask)
        return self.solve(state, params, meta), state

    def _posterior(self, state: RidgeState, meta):
        """Cholesky factor of the whitened precision ``I + S^T G S``, whitened mean, noise shape and scale.

        In the coordinates ``v = S^-1 (w - m0)`` the prior is ``N(0, s2 I)``;
        the residuals ``r = y - Phi m0`` have ``Psi^T r = S^T (Phi^T y - G m0)``
        and ``r^T r = y^T y - 2 m0 . Phi^T y + m0 . G m0``.
        """
        scale, prior, gram = meta["prior_scale"].double(), state.prior, state.gram
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        factor = cholesky(eye + scale.T @ gram @ scale)
        shift = scale.T @ (state.moment - gram @ prior)
        whitened = torch.cholesky_solve(shift, factor)
        squares = state.squares - 2 * (prior * state.moment).sum() + (prior * (gram @ prior)).sum()
        shape = 1 + meta["log_noise_shape"].double().exp() + state.count / 2
        noise = meta["log_noise_scale"].double().exp() + (squares - (shift * whitened).sum()) / 2
        return factor, whitened, shape, noise

    def solve(self, state: RidgeState, params, meta) -> dict:
        """``params`` with the last layer at the posterior mean."""
        _, whitened, _, _ = self._posterior(state, meta)
        return with_last_layer(params, state.prior + meta["prior_scale"].double() @ whitened)

    def _predictive(self, state: RidgeState, meta, phi: Tensor) -> tuple[Tensor, Tensor]:
        """Degrees of freedom and squared scale of the Student-t predictive at each row of ``phi`` (float64
        features with their column of ones)."""
        factor, _, shape, noise = self._posterior(state, meta)
        psi = phi @ meta["prior_scale"].double()
        spread = (psi.T * torch.cholesky_solve(psi.T, factor)).sum(dim=0)
        return 2 * shape, noise / shape * (1 + spread)

    def predictive_variance(self, params, meta, state: RidgeState, features: Tensor) -> Tensor:
        """Variance of a new target at each row of ``features`` (the same for every output)."""
        dof, scale2 = self._predictive(state, meta, design(features).double())
        return (scale2 * dof / (dof - 2)).to(features.dtype)

    def loss(self, net, params, meta, state: RidgeState, x: Tensor, y: Tensor, mask=None) -> Tensor:
        """The Student-t predictive's mean negative log-likelihood of the rows ``x, y`` (those ``mask`` keeps)."""
        phi = design(net.features(params, x)).double()
        return self._design_loss(params, meta, state, phi, y.double(), mask).to(y.dtype)

    def _design_loss(self, params, meta, state: RidgeState, phi: Tensor, y: Tensor, mask=None) -> Tensor:
        """:meth:`loss` from the rows' float64 features with their column of ones."""
        dof, scale2 = self._predictive(state, meta, phi)
        return student_t_nll(y, phi @ last_layer(params).double(), dof, scale2[:, None], mask)

    def episode_loss(
        self, net, params, meta, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ) -> Tensor:
        """The mean of :meth:`loss` on the query rows before and after observing the support rows.

        With fewer support rows ``n`` than features ``d`` (plus one), the
        Woodbury identity replaces the ``d x d`` solve by an ``n x n`` one,
        with ``K = I + Psi Psi^T``: ``Lambda^-1 Psi^T = Psi^T K^-1``, and the
        residual sum of squares left unexplained is ``r^T K^-1 r``. Padding
        rows (``support_mask`` 0) are zero rows of the design and of the
        residuals, which adds nothing to either form.
        """
        # One pass of the body over support and query rows (a row's features do not depend on the others).
        n = x_support.shape[0]
        phi_all = design(net.features(params, torch.cat([x_support, x_query]))).double()
        phi, phi_q = phi_all[:n], phi_all[n:]
        d = phi.shape[1]
        y_query = y_query.double()
        scale, prior = meta["prior_scale"].double(), last_layer(params).double()
        psi_all = phi_all @ scale
        psi, psi_q = psi_all[:n], psi_all[n:]
        prior_loss = self._prior_loss(meta, phi_q @ prior, psi_q, y_query, query_mask)
        if n >= d:
            state = self.observe(self.init(params, meta), phi[:, :-1], y_support, support_mask)
            after = self._design_loss(self.solve(state, params, meta), meta, state, phi_q, y_query, query_mask)
            return ((prior_loss + after) / 2).to(y_support.dtype)
        residual = y_support.double() - phi @ prior
        count = residual.numel()
        if support_mask is not None:  # padding support rows: zero rows of Psi and of the residuals
            weight = support_mask.double()[:, None]
            residual, psi, count = residual * weight, psi * weight, weight.sum() * residual.shape[1]
            psi_all = torch.cat([psi, psi_q])
        gram_all = psi_all @ psi.T  # (support + query, support)
        factor = cholesky(torch.eye(n, dtype=phi.dtype, device=phi.device) + gram_all[:n])
        cross = gram_all[n:]  # (query, support)
        # One solve for the residuals and the query rows: K^-1 [r, cross^T]
        solved = torch.cholesky_solve(torch.cat([residual, cross.T], dim=1), factor)
        solved_residual, solved_cross = solved[:, : residual.shape[1]], solved[:, residual.shape[1] :]
        mean = phi_q @ prior + cross @ solved_residual
        spread = (psi_q * psi_q).sum(dim=1) - (cross * solved_cross.T).sum(dim=1)
        shape = 1 + meta["log_noise_shape"].double().exp() + count / 2
        noise = meta["log_noise_scale"].double().exp() + (residual * solved_residual).sum() / 2
        after = student_t_nll(y_query, mean, 2 * shape, (noise / shape * (1 + spread))[:, None], query_mask)
        return ((prior_loss + after) / 2).to(y_support.dtype)

    def negative_log_evidence(self, net, params, meta, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Minus the log marginal likelihood of one group's rows, and their number of targets.

        The rows with ``mask`` 1 count, those with 0 (padding) do not. The
        normal-inverse-gamma prior integrates out the last layer's weights and
        the noise variance in closed form: the rows are jointly a
        multivariate Student-t, ``Y ~ t_{2 a0}(Phi m0, (b0 / a0)(I + Phi S
        S^T Phi^T))``, whose log density, from the posterior of
        :meth:`_posterior`, is::

            -n/2 log(2 pi) - q/2 log|I + S^T G S| + a0 log b0 - an log bn + lgamma(an) - lgamma(a0)

        (``n`` targets, ``q`` outputs, ``G = Phi^T Phi``). This is the
        likelihood a mixed model is fitted by (maximum likelihood, not REML),
        with the body's features as the random effects' design.
        """
        weight = mask.double()[:, None]
        phi = design(net.features(params, x)).double() * weight  # padding rows: all zero
        y = y.double() * weight
        count = weight.sum() * y.shape[-1]
        state = RidgeState(last_layer(params).double(), phi.T @ phi, phi.T @ y, (y * y).sum(), count)
        factor, _, shape, noise = self._posterior(state, meta)
        a0 = 1 + meta["log_noise_shape"].double().exp()
        b0 = meta["log_noise_scale"].double().exp()
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

    def _prior_loss(self, meta, prior_mean, psi_q, y_query, mask=None):
        """:meth:`loss` before any row is observed: the prior predictive of the query rows."""
        shape = 1 + meta["log_noise_shape"].double().exp()
        scale2 = meta["log_noise_scale"].double().exp() / shape * (1 + (psi_q * psi_q).sum(dim=1))
        return student_t_nll(y_query, prior_mean, 2 * shape, scale2[:, None], mask)
