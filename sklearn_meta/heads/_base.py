"""What a head is, and what it is given: the network as a body and a last layer, as pure functions.

The rule every head and every network follows: **the module is the body, and
the head owns the last layer.** The body (the built-in MLP's hidden layers, or
any user ``torch.nn.Module``) maps rows of shape ``(n, n_features_in)`` to
features of shape ``(n, n_features)``; the network's last layer is a
``torch.nn.Linear(n_features, n_outputs)`` whose parameters are named
``head.weight`` and ``head.bias``. A head decides how the network adapts to a
task from its labelled rows: the closed-form heads fit the last layer on the
body's features, :class:`~sklearn_meta.heads.GradientHead` takes inner
gradient steps on the parameters it selects.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["FunctionalNetwork", "Head", "HeadedNetwork", "Params", "masked_mean", "takes_masks"]

#: A network's parameters (or the head's meta-parameters) by name.
Params = dict[str, Tensor]

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """The mean of ``values`` (one per row) over the rows where ``mask`` is 1; the plain mean without a mask."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _module_lock(module: nn.Module) -> threading.RLock:
    # functional_call swaps the module's parameters in and out, so two threads
    # calling it on one module at once would run each other's parameters.
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


class HeadedNetwork(nn.Module):
    """The network: a body that computes features and the last layer that the head owns.

    ``forward(x)`` runs the body then the last layer; ``forward(x,
    part="features")`` the body alone; ``forward(features, part="head")`` the
    last layer alone. Its parameters are named ``body.<the body's own
    names>`` and ``head.weight``, ``head.bias``.

    Parameters
    ----------
    body : torch.nn.Module
        Maps ``(n, n_features_in)`` rows to ``(n, n_features)`` features.
    head : torch.nn.Module
        The last layer, a ``torch.nn.Linear(n_features, n_outputs)``.
    """

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: Tensor, part: str = "all") -> Tensor:
        if part == "head":
            return self.head(x)
        features = self.body(x)
        return features if part == "features" else self.head(features)


class FunctionalNetwork:
    """The network as pure functions of its parameters: what a head is given.

    Every call goes through :func:`torch.func.functional_call`, so it can be
    differentiated with :mod:`torch.func` and vectorised over tasks with
    :func:`torch.func.vmap`; the module's own parameters are never read.

    Parameters
    ----------
    module : HeadedNetwork
        The template.
    buffers : dict of str to Tensor
        Non-trainable state passed to every call.
    loss : callable
        ``loss(outputs, targets, mask=None) -> scalar``: mean squared error
        for a regressor, cross-entropy on logits for a classifier; with
        ``mask``, the mean over the rows where it is 1.
    shared : bool, default=False
        The module may be called by several threads at once (a fitted
        estimator's): each call then holds the module's lock.
    """

    def __init__(self, module: nn.Module, buffers: dict[str, Tensor], loss: Callable[..., Tensor], shared=False):
        self.module, self.buffers, self.loss, self.shared = module, buffers, loss, shared

    def _call(self, params: Params, x: Tensor, part: str) -> Tensor:
        kwargs = {} if part == "all" else {"part": part}
        if not self.shared:  # a module private to one caller (meta-training) needs no lock
            return functional_call(self.module, (params, self.buffers), (x,), kwargs)
        with _module_lock(self.module):
            return functional_call(self.module, (params, self.buffers), (x,), kwargs)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """The network's outputs for rows ``x``."""
        return self._call(params, x, "all")

    def features(self, params: Params, x: Tensor) -> Tensor:
        """The body's features for rows ``x``: what a closed-form head is fitted on."""
        return self._call(params, x, "features")

    def output(self, params: Params, features: Tensor) -> Tensor:
        """The last layer applied to ``features``."""
        return self._call(params, features, "head")

    def task_loss(self, params: Params, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """The loss of the network with ``params`` on rows ``x`` and targets ``y`` (the rows ``mask`` keeps)."""
        if mask is None:
            return self.loss(self.forward(params, x), y)
        return self.loss(self.forward(params, x), y, mask)


class Head(BaseEstimator):
    """Base class of heads: how the network adapts to a task from its labelled rows.

    A head is a parameter object, like a scikit-learn kernel or a Pipeline
    step: its constructor stores its arguments, so ``get_params``,
    ``set_params``, ``clone`` and grid searches over ``head__<argument>``
    work. Its methods are pure functions of tensors, so that meta-training
    differentiates through them and vectorises them over tasks with
    :func:`torch.func.vmap`; they never modify their arguments.

    **What a head is given.** ``net``, a :class:`FunctionalNetwork` (the
    network as functions of its parameters: ``net.forward(params, x)``,
    ``net.features(params, x)``, ``net.output(params, features)``,
    ``net.loss(outputs, y)``); ``params``, the network's parameters by name
    (the meta-learned initialisation, or a task's adapted parameters:
    ``body.*``, ``head.weight``, ``head.bias``); ``meta``, the head's own
    meta-parameters (what :meth:`meta_parameters` returned, as meta-trained
    so far); a task's rows ``x`` and targets ``y`` (float for a regressor,
    class codes ``0 .. n_outputs - 1`` for a classifier).

    **What it returns.** :meth:`init` the state of a fresh adaptation;
    :meth:`adapt` the task's adapted parameters (same names) and its new
    state, which a later call continues from (``partial_adapt``);
    :meth:`loss` a scalar, the loss on a task's query rows after adaptation.

    **What it meta-learns.** The network's initial parameters always (every
    gradient of :meth:`episode_loss` flows back to them), and the tensors
    :meth:`meta_parameters` returns, at ``meta_lr_factor`` times the
    estimator's ``meta_lr``.

    **Tasks of different sizes.** Groups have different numbers of rows, so
    the tasks of a meta-batch are padded to one width and ``adapt``,
    ``loss`` and ``episode_loss`` receive a ``mask`` (``support_mask``,
    ``query_mask``): 1 at a task's real rows, 0 at padding rows, which must
    get no weight (:func:`masked_mean`; a padding row holds a copy of a real
    row, so it is finite). ``mask`` is ``None`` when every task has the same
    size. A head whose ``adapt`` and ``loss`` take no ``mask`` still works
    on tasks of equal size; ``fit`` refuses it, with this advice, when the
    groups' sizes differ.

    A subclass implements :meth:`init` and :meth:`adapt`; the others have
    defaults. Optional capabilities, used when present:
    ``predictive_variance(params, meta, state, features)`` (``predict(X,
    return_std=True)``); ``predictive_outputs(params, meta, state,
    features)``, outputs other than the adapted last layer's, which every
    prediction then uses (the posterior predictive logits of
    :class:`~sklearn_meta.heads.BayesianLogisticHead`); and
    ``negative_log_evidence(net, params, meta, x, y, mask)``
    (``meta_objective="marginal_likelihood"``); see
    :class:`~sklearn_meta.heads.BayesianRidgeHead`.

    Examples
    --------
    A head that adapts only the bias of the last layer, to the mean residual
    of the support rows:

    >>> import torch
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> from sklearn_meta.heads import Head
    >>> class BiasHead(Head):
    ...     task_types = ("regression",)
    ...
    ...     def init(self, params, meta):
    ...         return ()
    ...
    ...     def adapt(self, net, params, meta, state, x, y, mask=None):
    ...         residual = y - net.forward(params, x)
    ...         weight = torch.ones(len(x)) if mask is None else mask
    ...         shift = (residual * weight[:, None]).sum(dim=0) / weight.sum()
    ...         return {**params, "head.bias": params["head.bias"] + shift}, state
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MetaRegressor(head=BiasHead(), max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, random_state=1)
    >>> est.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:]).shape
    (10,)
    """

    #: Constraints of the constructor arguments, checked at ``fit`` (scikit-learn's ``_parameter_constraints``).
    _parameter_constraints: dict = {}
    #: The estimators that can use the head: "regression", "classification" or both.
    task_types: tuple[str, ...] = ("regression", "classification")
    #: The head's meta-parameters learn at this multiple of the estimator's ``meta_lr``.
    meta_lr_factor: float = 1.0
    #: Whether meta-training takes the head's :meth:`episode_value_and_grad` instead of
    #: differentiating :meth:`episode_loss` (a head that recomputes its inner loop to save memory).
    recomputes: bool = False

    def meta_parameters(self, params: Params, y: Tensor | None = None) -> Any:
        """Initial values of the tensors the head meta-learns besides the network.

        Parameters
        ----------
        params : dict of str to Tensor
            The network's initial parameters.
        y : Tensor or None
            The training targets (to put a scale on the targets' units), or
            ``None`` when a saved model is rebuilt (its values are loaded
            after).

        Returns
        -------
        meta : dict of str to Tensor, or a tree of them
            Empty by default.
        """
        return {}

    def init(self, params: Params, meta: Any) -> Any:
        """The state of a fresh adaptation of ``params``: before the task's first row."""
        raise NotImplementedError(f"{type(self).__name__} must implement init(params, meta).")

    def adapt(self, net: FunctionalNetwork, params: Params, meta: Any, state: Any, x: Tensor, y: Tensor, mask=None):
        """Adapt ``params`` to a task's rows ``x, y`` (those ``mask`` keeps), continuing from ``state``.

        Returns
        -------
        params : dict of str to Tensor
            The adapted parameters, with the same names.
        state : object
            The new state, which the next call continues from.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement adapt(net, params, meta, state, x, y).")

    def loss(
        self, net: FunctionalNetwork, params: Params, meta: Any, state: Any, x: Tensor, y: Tensor, mask=None
    ) -> Tensor:
        """The loss on a task's query rows after adaptation: by default the estimator's loss of ``params``."""
        return net.task_loss(params, x, y, mask)

    def episode_loss(
        self, net, params: Params, meta: Any, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ) -> Tensor:
        """Meta-training's loss for one task: adapt on the support rows, then :meth:`loss` on the query rows.

        The masks are passed on only when given, so that a head whose
        ``adapt`` and ``loss`` take no ``mask`` serves tasks of equal size.
        """
        state = self.init(params, meta)
        if support_mask is None and query_mask is None:
            adapted, state = self.adapt(net, params, meta, state, x_support, y_support)
            return self.loss(net, adapted, meta, state, x_query, y_query)
        adapted, state = self.adapt(net, params, meta, state, x_support, y_support, mask=support_mask)
        return self.loss(net, adapted, meta, state, x_query, y_query, mask=query_mask)

    def adapt_one_task(self, net, params: Params, meta: Any, state: Any, x: Tensor, y: Tensor):
        """:meth:`adapt` for one task outside :func:`~torch.func.vmap`, without a graph (``partial_adapt``).

        A head may take a faster path here; by default it is :meth:`adapt`.
        """
        return self.adapt(net, params, meta, state, x, y)

    def episode_value_and_grad(self, net, params: Params, meta: Any, x_support, y_support, x_query, y_query):
        """:meth:`episode_loss` and its gradients with respect to ``(params, meta)``, for heads that recompute."""
        raise NotImplementedError(f"{type(self).__name__} does not recompute its adaptation.")


def _accepts(method, *names: str) -> bool:
    parameters = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    return all(name in parameters for name in names)


def takes_masks(head) -> bool:
    """Whether ``head`` serves tasks of different sizes: its ``adapt`` and ``loss`` take a ``mask``.

    A head that overrides ``episode_loss`` must also take ``support_mask``
    and ``query_mask`` there.
    """
    if not (_accepts(head.adapt, "mask") and _accepts(head.loss, "mask")):
        return False
    return _accepts(head.episode_loss, "support_mask", "query_mask")
