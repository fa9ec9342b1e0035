"""The Bayesian logistic head: the last layer as Bayesian softmax regression, by a Laplace approximation."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor

from ._base import Head
from ._classification import _masked_loss
from ._linalg import cholesky, design, last_layer, one_hot, with_last_layer

__all__ = ["BayesianLogisticHead", "LogisticState"]

_LINE_SEARCH = 8  # step fractions tried by each damped Newton step: 1, 1/2, ..., 1/128


def _scale(meta) -> Tensor:
    """The prior scale ``S`` as a float64 matrix (a diagonal one is stored as its diagonal)."""
    scale = meta["prior_scale"].double()
    return torch.diag_embed(scale) if scale.dim() == 1 else scale


class _Curvature(NamedTuple):
    """The Hessian ``H`` of minus the log posterior (whitened, classes major), factorised.

    Primal (``u`` is None): ``factor`` is the Cholesky factor of ``H``,
    ``classes x columns`` square. Dual: ``H = I + U U^T``, and ``factor`` is
    the Cholesky factor of ``I + U^T U``, ``rows x classes`` square: the
    cheaper one when a task has fewer rows than the design has columns (a
    body's features and a few support rows), by Woodbury's identity and
    ``|I + U U^T| = |I + U^T U|``.
    """

    factor: Tensor
    u: Tensor | None

    def solve(self, gradient: Tensor) -> Tensor:
        """``H^-1`` applied to a ``(columns, classes)`` matrix."""
        vector = gradient.T.reshape(-1, 1)
        if self.u is None:
            solved = torch.cholesky_solve(vector, self.factor)
        else:
            solved = vector - self.u @ torch.cholesky_solve(self.u.T @ vector, self.factor)
        return solved.reshape(gradient.shape[1], gradient.shape[0]).T

    def half_log_det(self) -> Tensor:
        """Half the log-determinant of ``H``."""
        return torch.log(torch.diagonal(self.factor)).sum()

    def logit_covariance(self, psi: Tensor, n_classes: int) -> Tensor:
        """The covariance ``(rows, classes, classes)`` of the logits ``psi @ V`` under ``V ~ N(., H^-1)``."""
        width = psi.shape[1]
        if self.u is None:
            inverse = torch.cholesky_inverse(self.factor).reshape(n_classes, width, n_classes, width)
            return torch.einsum("ra,cadb,rb->rcd", psi, inverse, psi)
        # psi_r^T H^-1 psi_r = |psi_r|^2 I - A_r (I + U^T U)^-1 A_r^T, A_r[c, :] = U^T (e_c kron psi_r)
        a = torch.einsum("cak,ra->rck", self.u.reshape(n_classes, width, -1), psi)
        z = torch.linalg.solve_triangular(self.factor, a.reshape(-1, a.shape[2]).T, upper=False)
        z = z.T.reshape(a.shape)
        eye = torch.eye(n_classes, dtype=psi.dtype, device=psi.device)
        return (psi * psi).sum(dim=1)[:, None, None] * eye - z @ z.transpose(1, 2)


class LogisticState(NamedTuple):
    """A task's rows and the Laplace approximation of its last layer's posterior.

    ``prior`` is ``m0``, the meta-learned last layer (weights then bias, one
    column per class); ``features`` the float64 features of the rows
    observed so far, with their column of ones, ``labels`` their class
    codes and ``weights`` 1 at real rows, 0 at padding; ``mode`` the
    posterior mode in whitened coordinates ``V = S^-1 (W - m0)``, and
    ``factor`` the Cholesky factor of the Hessian of minus the log
    posterior there (in those coordinates; classes major). Observing rows
    in several calls equals observing them all at once.
    """

    prior: Tensor
    features: Tensor
    labels: Tensor
    weights: Tensor
    mode: Tensor
    factor: Tensor


class BayesianLogisticHead(Head):
    """Bayesian softmax regression on the body's features, with a meta-learned prior (a GLMM's head).

    Each task's last layer ``W`` (one column per class) has the prior
    ``W[:, k] ~ N(m0[:, k], S S^T)``, and its rows the likelihood
    ``y ~ Categorical(softmax(Phi W))``, ``Phi`` being the body's features
    with a column of ones: a logistic mixed model (GLMM) with random
    intercepts and slopes on the features. Meta-learned: the prior mean
    ``m0`` (the network's last layer), the prior scale ``S``
    (``prior_scale``, a full matrix, like a GLMM's random-effects
    covariance) and the body.

    A task's posterior is approximated by a Laplace approximation:
    ``newton_steps`` Newton steps on minus the log posterior, from the
    prior mean, vectorised over tasks, give the mode; the Hessian there
    gives the covariance. Meta-gradients flow through the last step only,
    taken from the (detached) point the others reached: at the mode this
    is the exact implicit gradient (the Newton map's Jacobian vanishes
    there), at the cost of one step's backward pass. Probabilities
    integrate over the posterior with the probit approximation (MacKay
    1992): for two classes ``sigmoid(mu / sqrt(1 + pi v / 8))``, ``mu`` and
    ``v`` being the mean and variance of the logit difference; for more,
    each logit is scaled by its own variance. Solves run in float64.

    It can be meta-trained on episodes (the query rows' log loss after the
    support rows, averaged with the log loss before any row, as
    :class:`~sklearn_meta.heads.BayesianRidgeHead` is) or on the Laplace
    approximation of the marginal likelihood of every training group
    (:meth:`negative_log_evidence`), as a GLMM is fitted
    (``MetaClassifier(meta_objective="marginal_likelihood")``).

    Parameters
    ----------
    covariance : {"diagonal", "full"}, default="diagonal"
        The prior scale ``S``: a diagonal one (independent random effects
        on every feature and the intercept, ``d + 1`` variances to learn)
        or a full matrix (correlated random effects, about ``d^2 / 2``
        parameters). On the grouped data sets of
        ``benchmarks/real_data_classification.py`` the full matrix
        overfit the few training groups (respiratory: 78 patients, +0.027
        log loss against the GLMM at K = 2, where the diagonal ties it).
    newton_steps : int, default=8
        Newton steps to the posterior mode, from the prior mean; all but
        the last take the best of eight step lengths (a vectorised line
        search), so that large features or separable rows do not make
        them overshoot. Minus the log posterior is strongly convex (its
        Hessian is at least the prior's precision), so a few steps reach
        the mode.
    meta_lr_factor : float, default=10.0
        The prior scale learns at this multiple of the estimator's
        ``meta_lr``.

    See Also
    --------
    RidgeClassifierHead : Ridge regression of one-hot labels, in one solve.
    BayesianRidgeHead : The regression counterpart.

    Examples
    --------
    >>> from sklearn_meta import MetaClassifier
    >>> from sklearn_meta.datasets import make_classification_tasks
    >>> from sklearn_meta.heads import BayesianLogisticHead
    >>> X, y, groups = make_classification_tasks(n_tasks=40, random_state=0)
    >>> clf = MetaClassifier(head=BayesianLogisticHead(), max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> proba = clf.partial_adapt(X[:10], y[:10]).predict_proba(X[10:12])
    >>> proba.shape
    (2, 3)
    """

    task_types = ("classification",)
    _parameter_constraints: dict = {
        "covariance": [StrOptions({"full", "diagonal"})],
        "newton_steps": [Interval(Integral, 1, None, closed="left")],
        "meta_lr_factor": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, covariance: str = "diagonal", newton_steps: int = 8, meta_lr_factor: float = 10.0):
        self.covariance = covariance
        self.newton_steps = newton_steps
        self.meta_lr_factor = meta_lr_factor

    def meta_parameters(self, params, y: Tensor | None = None) -> dict:
        """A unit prior scale: each coefficient of a task varies by about 1 around ``m0``."""
        size = params["head.weight"].shape[1] + 1
        return {"prior_scale": torch.ones(size) if self.covariance == "diagonal" else torch.eye(size)}

    def init(self, params, meta) -> LogisticState:
        prior = last_layer(params).double()
        size = prior.numel()
        return LogisticState(
            prior,
            prior.new_zeros(0, prior.shape[0]),
            torch.zeros(0, dtype=torch.long, device=prior.device),
            prior.new_zeros(0),
            torch.zeros_like(prior),
            torch.eye(size, dtype=prior.dtype, device=prior.device),
        )

    # The Laplace approximation ------------------------------------------------

    @staticmethod
    def _rows(meta, prior, phi, labels, weights):
        """What every Newton step needs of the rows: prior logits, whitened design, one-hot targets, weights."""
        return phi @ prior, phi @ _scale(meta), one_hot(labels, prior.shape[1], phi.dtype), weights

    @staticmethod
    def _terms(rows, mode, dual: bool = False):
        """Minus the log likelihood, and the gradient and Hessian (:class:`_Curvature`) of minus the log posterior.

        The Hessian is ``I + sum_i w_i (diag(p_i) - p_i p_i^T) kron psi_i psi_i^T``;
        with ``dual`` it is kept as ``I + U U^T``, ``U``'s column ``(i, j)``
        being ``sqrt(w_i) R_i[:, j] kron psi_i`` with ``R_i = (I - p_i 1^T) diag(sqrt(p_i))``
        (so that ``R_i R_i^T = diag(p_i) - p_i p_i^T``).
        """
        offset, psi, targets, weights = rows
        log_p = torch.log_softmax(offset + psi @ mode, dim=1)
        p = log_p.exp()
        nll = -(weights * (targets * log_p).sum(dim=1)).sum()
        gradient = psi.T @ (weights[:, None] * (p - targets)) + mode  # (d + 1, classes)
        n_classes, width = p.shape[1], psi.shape[1]
        if dual:
            eye = torch.eye(n_classes, dtype=p.dtype, device=p.device)
            root = weights.sqrt()[:, None] * torch.exp(log_p / 2)  # no infinite derivative where p underflows
            r = (eye[None] - p[:, :, None]) * root[:, None, :]  # r[i, c, j] = sqrt(w_i) R_i[c, j]
            u = torch.einsum("icj,ia->caij", r, psi).reshape(n_classes * width, -1)
            inner = u.T @ u + torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
            return nll, gradient, _Curvature(cholesky(inner), u)
        curvature = weights[:, None, None] * (torch.diag_embed(p) - p[:, :, None] * p[:, None, :])
        size = mode.numel()
        hessian = torch.einsum("ick,ia,ib->cakb", curvature, psi, psi).reshape(size, size)
        eye = torch.eye(size, dtype=hessian.dtype, device=hessian.device)
        return nll, gradient, _Curvature(cholesky(hessian + eye), None)

    @staticmethod
    def _newton_step(rows, mode, dual: bool = False):
        """The Newton step at ``mode``, to subtract from it."""
        _, gradient, curvature = BayesianLogisticHead._terms(rows, mode, dual)
        return curvature.solve(gradient)

    @staticmethod
    def _damped_step(rows, mode, dual: bool = False):
        """A Newton step with a vectorised line search: the best of the steps 1, 1/2, ..., 1/128.

        Far from the mode (large features, a weak prior, separable rows) a
        full Newton step of a logistic likelihood overshoots; every task
        takes the fraction that lowers its penalised objective most.
        """
        offset, psi, targets, weights = rows
        step = BayesianLogisticHead._newton_step(rows, mode, dual)
        fractions = 0.5 ** torch.arange(_LINE_SEARCH, dtype=mode.dtype, device=mode.device)
        candidates = (offset + psi @ mode)[None] - fractions[:, None, None] * (psi @ step)[None]
        nll = -(weights * (targets * torch.log_softmax(candidates, dim=2)).sum(dim=2)).sum(dim=1)
        moved = mode[None] - fractions[:, None, None] * step[None]
        objective = nll + (moved * moved).sum(dim=(1, 2)) / 2
        objective = torch.where(torch.isfinite(objective), objective, torch.full_like(objective, math.inf))
        best = torch.nn.functional.one_hot(objective.argmin(), _LINE_SEARCH).to(mode.dtype)
        return (moved * best[:, None, None]).sum(dim=0)

    def _laplace(self, meta, prior, phi, labels, weights, dual: bool | None = None):
        """The posterior mode (whitened), the Hessian there (a :class:`_Curvature`), and minus the log likelihood.

        ``newton_steps - 1`` damped steps without a graph, then one full
        Newton step whose graph gives the implicit gradient at the mode.
        ``dual`` (by default: when there are fewer rows than the design has
        columns) solves with ``rows x classes`` unknowns instead of
        ``columns x classes``; both give the same numbers.
        """
        if dual is None:
            dual = phi.shape[0] < phi.shape[1]
        rows = self._rows(meta, prior, phi, labels, weights)
        with torch.no_grad():
            fixed = tuple(r.detach() for r in rows)
            mode = torch.zeros_like(prior.detach())
            for _ in range(self.newton_steps - 1):
                mode = self._damped_step(fixed, mode, dual)
        mode = mode - self._newton_step(rows, mode, dual)
        nll, _, curvature = self._terms(rows, mode, dual)
        return mode, curvature, nll

    def observe(self, state: LogisticState, meta, features: Tensor, y: Tensor, mask=None) -> LogisticState:
        """Add rows (their features and class codes; those ``mask`` keeps) and refit the Laplace approximation."""
        phi = design(features).double()
        weights = torch.ones_like(phi[:, 0]) if mask is None else mask.double()
        phi = torch.cat([state.features, phi])
        labels = torch.cat([state.labels, y.long()])
        weights = torch.cat([state.weights, weights])
        mode, curvature, _ = self._laplace(meta, state.prior, phi, labels, weights, dual=False)
        return LogisticState(state.prior, phi, labels, weights, mode, curvature.factor)

    def adapt(self, net, params, meta, state: LogisticState, x: Tensor, y: Tensor, mask=None):
        state = self.observe(state, meta, net.features(params, x), y, mask)
        weights = state.prior + _scale(meta) @ state.mode
        return with_last_layer(params, weights), state

    # Predictions --------------------------------------------------------------

    @staticmethod
    def _moderate(mean: Tensor, covariance: Tensor) -> Tensor:
        """Logits whose softmax is the probit approximation of E[softmax(f)], f ~ N(mean, covariance) per row."""
        if mean.shape[1] == 2:
            variance = covariance[:, 0, 0] + covariance[:, 1, 1] - 2 * covariance[:, 0, 1]
            half = (mean[:, 1] - mean[:, 0]) / torch.sqrt(1 + math.pi / 8 * variance) / 2
            return torch.stack([-half, half], dim=1)
        return mean / torch.sqrt(1 + math.pi / 8 * torch.diagonal(covariance, dim1=1, dim2=2))

    @staticmethod
    def _logit_moments(meta, state: LogisticState, phi: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean ``(rows, classes)`` and covariance ``(rows, classes, classes)`` of the logits (float64)."""
        psi = phi @ _scale(meta)
        mean = phi @ state.prior + psi @ state.mode
        return mean, _Curvature(state.factor, None).logit_covariance(psi, mean.shape[1])

    def _moderated_logits(self, meta, state: LogisticState, phi: Tensor) -> Tensor:
        """Logits whose softmax is the probit approximation of the posterior predictive (float64)."""
        return self._moderate(*self._logit_moments(meta, state, phi))

    def predictive_outputs(self, params, meta, state: LogisticState, features: Tensor) -> Tensor:
        """Logits whose softmax is the posterior predictive probability of each class at ``features``."""
        return self._moderated_logits(meta, state, design(features).double()).to(features.dtype)

    def loss(self, net, params, meta, state: LogisticState, x: Tensor, y: Tensor, mask=None) -> Tensor:
        """The posterior predictive's mean log loss of the rows ``x, y`` (those ``mask`` keeps)."""
        logits = self._moderated_logits(meta, state, design(net.features(params, x)).double())
        return _masked_loss(net, logits, y, mask).to(params["head.weight"].dtype)

    def episode_loss(
        self, net, params, meta, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ) -> Tensor:
        """The mean of :meth:`loss` on the query rows before and after observing the support rows.

        The same numbers as :meth:`adapt` then :meth:`loss`, solved in the
        dual form when there are fewer support rows than feature columns.
        """
        n = x_support.shape[0]
        features = net.features(params, torch.cat([x_support, x_query]))
        prior = last_layer(params).double()
        phi = design(features[:n]).double()
        weights = torch.ones_like(phi[:, 0]) if support_mask is None else support_mask.double()
        mode, curvature, _ = self._laplace(meta, prior, phi, y_support.long(), weights)
        phi_q = design(features[n:]).double()
        psi_q = phi_q @ _scale(meta)
        spread = (psi_q * psi_q).sum(dim=1)  # before any row: logits independent across classes
        eye = torch.eye(prior.shape[1], dtype=phi_q.dtype, device=phi_q.device)
        before = self._moderate(phi_q @ prior, spread[:, None, None] * eye)
        after = self._moderate(phi_q @ prior + psi_q @ mode, curvature.logit_covariance(psi_q, prior.shape[1]))
        losses = [_masked_loss(net, logits, y_query, query_mask) for logits in (before, after)]
        return ((losses[0] + losses[1]) / 2).to(params["head.weight"].dtype)

    def negative_log_evidence(self, net, params, meta, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Minus the Laplace approximation of the log marginal likelihood of one group's rows, and their number.

        In whitened coordinates ``V`` (prior ``N(0, I)``), with ``L(V)``
        minus the log likelihood of the rows (those with ``mask`` 1), ``V*``
        its penalised minimum and ``H`` the Hessian there::

            -log p(y) ~ L(V*) + |V*|^2 / 2 + log|H| / 2

        the approximation GLMM software (lme4's ``nAGQ=1``, GPBoost) fits
        by, here with the body's features as the random effects' design.
        """
        prior = last_layer(params).double()
        phi = design(net.features(params, x)).double()
        weights = mask.double()
        mode, curvature, nll = self._laplace(meta, prior, phi, y.long(), weights)
        return nll + (mode * mode).sum() / 2 + curvature.half_log_det(), weights.sum()
