"""Closed-form classification heads: ridge regression of one-hot labels, and class prototypes."""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor

from ._base import Head
from ._linalg import cholesky, design, last_layer, one_hot, with_last_layer

__all__ = ["PrototypeHead", "PrototypeState", "RidgeClassifierHead", "RidgeClassifierState"]


class RidgeClassifierState(NamedTuple):
    """Sufficient statistics of a task's rows for the ridge classifier head.

    ``gram = Phi^T Phi`` and ``moment = Phi^T Y`` (``Y`` one-hot), ``Phi``
    being the features with a column of ones; ``prior`` is what the solve
    shrinks towards (the meta-learned last layer divided by the logit scale,
    or zero), weights then bias, one column per class.
    """

    prior: Tensor
    gram: Tensor
    moment: Tensor


class RidgeClassifierHead(Head):
    """Ridge regression of one-hot labels on the body's features, scaled into logits (R2-D2).

    ``W = (Phi^T Phi + lam I)^-1 (Phi^T Y + lam M)``: the ridge regression of
    the one-hot labels ``Y`` of the support rows, shrunk towards ``M``; the
    logits are ``s [phi, 1] W`` (Bertinetto et al. 2019). Meta-learned: the
    penalty ``lam = exp(log_ridge)`` and the logit scale ``s =
    exp(log_logit_scale)``, besides the body. Unlike prototypes it needs no
    scaling of the inputs. Solves run in float64.

    Parameters
    ----------
    shrink_to_head : bool, default=True
        Shrink towards the meta-learned last layer (``M = m0 / s``), so that
        before any row, and for a class without rows, the logits are the
        meta-learned last layer's: for grouped tasks, whose labels mean the
        same thing everywhere. ``False`` shrinks towards zero, as R2-D2 does:
        for episodes, whose labels are permuted in every task, so that no
        output unit has a meaning to remember (the default of
        :class:`~sklearn_meta.EpisodicClassifier`).
    meta_lr_factor : float, default=10.0
        The penalty and the logit scale learn at this multiple of the
        estimator's ``meta_lr``.

    See Also
    --------
    PrototypeHead : Class means of the support features.
    BayesianRidgeHead : The regression counterpart.

    Examples
    --------
    >>> from sklearn_meta import MetaClassifier
    >>> from sklearn_meta.datasets import make_classification_tasks
    >>> from sklearn_meta.heads import RidgeClassifierHead
    >>> X, y, groups = make_classification_tasks(n_tasks=40, random_state=0)
    >>> clf = MetaClassifier(head=RidgeClassifierHead(), max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> clf.partial_adapt(X[:10], y[:10]).predict_proba(X[10:12]).shape
    (2, 3)
    """

    task_types = ("classification",)
    _parameter_constraints: dict = {
        "shrink_to_head": ["boolean"],
        "meta_lr_factor": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, shrink_to_head: bool = True, meta_lr_factor: float = 10.0):
        self.shrink_to_head = shrink_to_head
        self.meta_lr_factor = meta_lr_factor

    def meta_parameters(self, params, y: Tensor | None = None) -> dict:
        """Penalty 1 and logit scale 10."""
        return {"log_ridge": torch.zeros(()), "log_logit_scale": torch.tensor(math.log(10.0))}

    def init(self, params, meta) -> RidgeClassifierState:
        prior = (last_layer(params) / meta["log_logit_scale"].exp()).double()
        if not self.shrink_to_head:
            prior = torch.zeros_like(prior)
        return RidgeClassifierState(prior, prior.new_zeros(prior.shape[0], prior.shape[0]), torch.zeros_like(prior))

    def observe(self, state: RidgeClassifierState, features: Tensor, y: Tensor, mask=None) -> RidgeClassifierState:
        """Add rows (their features and class codes; those ``mask`` keeps) to the sufficient statistics."""
        phi = design(features).double()
        labels = one_hot(y, state.prior.shape[1], state.prior.dtype)
        if mask is not None:
            phi, labels = phi * mask.double()[:, None], labels * mask.double()[:, None]
        return RidgeClassifierState(state.prior, state.gram + phi.T @ phi, state.moment + phi.T @ labels)

    def solve(self, state: RidgeClassifierState, params, meta) -> dict:
        """``params`` with the last layer at the scaled ridge solution."""
        ridge = meta["log_ridge"].double().exp()
        eye = torch.eye(state.gram.shape[0], dtype=state.gram.dtype, device=state.gram.device)
        factor = cholesky(state.gram + ridge * eye)
        weights = torch.cholesky_solve(state.moment + ridge * state.prior, factor)
        return with_last_layer(params, meta["log_logit_scale"].double().exp() * weights)

    def adapt(self, net, params, meta, state: RidgeClassifierState, x: Tensor, y: Tensor, mask=None):
        state = self.observe(state, net.features(params, x), y, mask)
        return self.solve(state, params, meta), state

    def episode_loss(
        self, net, params, meta, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ) -> Tensor:
        """:meth:`loss` after observing the support rows from the prior: meta-training's path.

        With fewer support rows ``n`` than features ``d`` (plus one), in the
        dual form: ``W = M + Phi^T (Phi Phi^T + lam I)^-1 (Y - Phi M)``, an
        ``n x n`` solve. Padding support rows are zero rows of ``Phi`` and
        of ``Y - Phi M``, which adds nothing to either form.
        """
        n = x_support.shape[0]
        phi_all = design(net.features(params, torch.cat([x_support, x_query]))).double()
        phi, phi_q = phi_all[:n], phi_all[n:]
        dtype = params["head.weight"].dtype
        if n >= phi.shape[1]:
            state = self.observe(self.init(params, meta), phi[:, :-1], y_support, support_mask)
            logits = phi_q @ last_layer(self.solve(state, params, meta)).double()
            return _masked_loss(net, logits.to(dtype), y_query, query_mask)
        state = self.init(params, meta)
        ridge = meta["log_ridge"].double().exp()
        if support_mask is not None:
            phi = phi * support_mask.double()[:, None]
        factor = cholesky(phi @ phi.T + ridge * torch.eye(n, dtype=phi.dtype, device=phi.device))
        residual = one_hot(y_support, state.prior.shape[1], state.prior.dtype) - phi @ state.prior
        if support_mask is not None:
            residual = residual * support_mask.double()[:, None]
        scores = phi_q @ state.prior + (phi_q @ phi.T) @ torch.cholesky_solve(residual, factor)
        return _masked_loss(net, (meta["log_logit_scale"].double().exp() * scores).to(dtype), y_query, query_mask)


def _masked_loss(net, outputs, y, mask):
    return net.loss(outputs, y) if mask is None else net.loss(outputs, y, mask)


class PrototypeState(NamedTuple):
    """Per-class sums of support features and counts."""

    sums: Tensor
    counts: Tensor


class PrototypeHead(Head):
    """Class prototypes, the means of the support features, scored by negative squared distance.

    Prototypical networks (Snell et al. 2017): ``-s ||phi - c_k||^2`` is, up
    to a term equal for all classes, the linear layer ``W_k = 2 s c_k``,
    ``b_k = -s ||c_k||^2``, with a meta-learned scale ``s =
    exp(log_scale)``. A class without support rows keeps the meta-learned
    last layer's weights.

    Parameters
    ----------
    meta_lr_factor : float, default=10.0
        The scale learns at this multiple of the estimator's ``meta_lr``.

    See Also
    --------
    RidgeClassifierHead : Ridge regression of the one-hot labels.

    Examples
    --------
    >>> from sklearn_meta import MetaClassifier
    >>> from sklearn_meta.datasets import make_classification_tasks
    >>> from sklearn_meta.heads import PrototypeHead
    >>> X, y, groups = make_classification_tasks(n_tasks=40, random_state=0)
    >>> clf = MetaClassifier(head=PrototypeHead(), max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> clf.partial_adapt(X[:10], y[:10]).predict(X[10:13]).shape
    (3,)
    """

    task_types = ("classification",)
    _parameter_constraints: dict = {"meta_lr_factor": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, meta_lr_factor: float = 10.0):
        self.meta_lr_factor = meta_lr_factor

    def meta_parameters(self, params, y: Tensor | None = None) -> dict:
        """The log of the distances' scale, 0."""
        return {"log_scale": torch.zeros(())}

    def init(self, params, meta) -> PrototypeState:
        weight = params["head.weight"]
        return PrototypeState(torch.zeros_like(weight), torch.zeros_like(weight[:, 0]))

    def observe(self, state: PrototypeState, features: Tensor, y: Tensor, mask=None) -> PrototypeState:
        """Add rows (their features and class codes; those ``mask`` keeps) to the per-class sums."""
        members = one_hot(y, state.counts.shape[0], features.dtype)  # (rows, classes)
        if mask is not None:
            members = members * mask.to(features.dtype)[:, None]
        return PrototypeState(state.sums + members.T @ features, state.counts + members.sum(dim=0))

    def solve(self, state: PrototypeState, params, meta) -> dict:
        """``params`` with the last layer scoring the prototypes."""
        seen = state.counts > 0
        prototypes = state.sums / state.counts.clamp(min=1)[:, None]
        scale = meta["log_scale"].exp()
        weight = torch.where(seen[:, None], 2 * scale * prototypes, params["head.weight"])
        bias = torch.where(seen, -scale * (prototypes * prototypes).sum(dim=1), params["head.bias"])
        return {**params, "head.weight": weight, "head.bias": bias}

    def adapt(self, net, params, meta, state: PrototypeState, x: Tensor, y: Tensor, mask=None):
        state = self.observe(state, net.features(params, x), y, mask)
        return self.solve(state, params, meta), state
