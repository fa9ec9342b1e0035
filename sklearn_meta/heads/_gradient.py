"""The gradient head: inner-optimizer steps on the parameters it selects (MAML, Meta-SGD, ANIL, Newton).

One inner loop, :func:`inner_loop`, serves meta-training (differentiable
with respect to the initialisation and the optimizer's meta-parameters,
vectorised with ``vmap``), batch evaluation (vectorised, no graph) and serving
one task (plain autograd, no graph).
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from torch import Tensor
from torch.func import grad

from ..optim import adapted_names, apply_updates, masked, resolve_inner_optimizer, uses_curvature
from ._base import Head, Params
from ._recompute import checkpointed_value_and_grad

__all__ = ["GradientHead", "inner_loop"]


class GradientHead(Head):
    """Adapt with inner gradient steps: MAML, first-order MAML, Meta-SGD, ANIL, Adam or Newton inner loops.

    Each task takes ``inner_steps`` steps of ``inner_optimizer`` on the
    parameters ``adapt_params`` selects, from the meta-learned
    initialisation, on its support rows; meta-training differentiates
    through the steps (Finn et al., 2017). The inner optimizer is a gradient
    transformation from :mod:`sklearn_meta.optim`, so what adapts and how is
    one argument each.

    Parameters
    ----------
    inner_optimizer : {"sgd", "adam", "meta-sgd"} or object, default="sgd"
        The inner-loop optimizer: a name, built with ``inner_lr``
        (``"meta-sgd"``: a learned step size per weight, Li et al. 2017,
        meta-trained with the initialisation), or a gradient transformation
        from :mod:`sklearn_meta.optim` (a chain of transforms, a ``newton``
        step, or your own object following
        :class:`sklearn_meta.optim.InnerOptimizer`; then ``inner_lr`` is not
        used).
    inner_lr : float, default=0.01
        Inner learning rate (Meta-SGD: the initial value of the learned rates).
    inner_steps : int, default=1
        Inner steps per task in meta-training.
    adapt_steps : int, default=None
        Inner steps taken by ``partial_adapt``, ``score`` and batch
        ``predict``; ``None`` means ``inner_steps``.
    first_order : bool, default=False
        Drop the second-order terms of the meta-gradient (first-order MAML).
    recompute_inner : bool, default=False
        Keep no graph through the inner steps in meta-training: the backward
        pass recomputes each task's inner trajectory step by step from a few
        stored parameter-sized checkpoints (about ``log2(inner_steps) + 2``),
        so memory stays nearly flat in ``inner_steps`` for more time per
        update (see the user guide's speed section). The meta-gradient is the
        same. Meta-training then runs eagerly (``compile`` is not used).
    adapt_params : "all", "head" or list of str, default="all"
        Which parameters adapt: all of them (MAML), the last layer only
        (``"head"``: ANIL, Raghu et al. 2020, much cheaper per update), or
        those whose names (``module_.network.named_parameters()``:
        ``body.<the module's names>``, ``head.weight``, ``head.bias``) match
        the given shell-style patterns, e.g. ``["body.2.*", "head.*"]``. The
        others are meta-learned but keep their meta-learned values in every
        task. Built with :func:`sklearn_meta.optim.masked`.

    See Also
    --------
    BayesianRidgeHead, RidgeClassifierHead, PrototypeHead : Closed-form heads.

    Examples
    --------
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> from sklearn_meta.heads import GradientHead
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MetaRegressor(head=GradientHead(inner_optimizer="meta-sgd", inner_steps=2), max_iter=20, random_state=0)
    >>> est.get_params()["head__inner_steps"]
    2
    >>> est = est.fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, random_state=1)
    >>> est.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:]).shape
    (10,)
    """

    _parameter_constraints: dict = {
        "inner_optimizer": [StrOptions({"sgd", "adam", "meta-sgd"}), HasMethods(["meta_parameters", "init", "update"])],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "adapt_steps": [Interval(Integral, 0, None, closed="left"), None],
        "first_order": ["boolean"],
        "recompute_inner": ["boolean"],
        "adapt_params": [StrOptions({"all", "head"}), list, tuple],
    }

    def __init__(
        self,
        inner_optimizer="sgd",
        inner_lr=0.01,
        inner_steps=1,
        adapt_steps=None,
        first_order=False,
        recompute_inner=False,
        adapt_params="all",
    ):
        self.inner_optimizer = inner_optimizer
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.adapt_steps = adapt_steps
        self.first_order = first_order
        self.recompute_inner = recompute_inner
        self.adapt_params = adapt_params

    # The inner optimizer, built from the arguments on every call (a few microseconds; a cached copy would
    # go stale after set_params, and writing one is a graph break under torch.compile).

    def optimizer(self):
        """The inner optimizer: ``inner_optimizer`` built with ``inner_lr``, masked to ``adapt_params``."""
        inner = resolve_inner_optimizer(self.inner_optimizer, self.inner_lr)
        if isinstance(self.adapt_params, str):
            return inner if self.adapt_params == "all" else masked(inner, ["head.*"])
        return masked(inner, list(self.adapt_params))

    @property
    def recomputes(self) -> bool:  # type: ignore[override]
        return bool(self.recompute_inner)

    @property
    def n_adapt_steps(self) -> int:
        """Steps taken when adapting for prediction: ``adapt_steps``, or ``inner_steps``."""
        return self.inner_steps if self.adapt_steps is None else self.adapt_steps

    def meta_parameters(self, params: Params, y: Tensor | None = None):
        """The inner optimizer's meta-parameters for the parameters it adapts (Meta-SGD's rates)."""
        optimizer = self.optimizer()
        return optimizer.meta_parameters(_select(optimizer, params))

    def init(self, params: Params, meta):
        optimizer = self.optimizer()
        return optimizer.init(_select(optimizer, params))

    def adapt(self, net, params: Params, meta, state, x: Tensor, y: Tensor, mask=None):
        return inner_loop(net, self.optimizer(), params, meta, state, x, y, self.n_adapt_steps, mask=mask)

    def adapt_one_task(self, net, params: Params, meta, state, x: Tensor, y: Tensor):
        return inner_loop(net, self.optimizer(), params, meta, state, x, y, self.n_adapt_steps, eager=True)

    def episode_loss(
        self, net, params: Params, meta, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ) -> Tensor:
        optimizer = self.optimizer()
        state = optimizer.init(_select(optimizer, params))
        adapted, state = inner_loop(
            net,
            optimizer,
            params,
            meta,
            state,
            x_support,
            y_support,
            self.inner_steps,
            first_order=self.first_order,
            mask=support_mask,
        )
        return self.loss(net, adapted, meta, state, x_query, y_query, query_mask)

    def episode_value_and_grad(
        self, net, params: Params, meta, x_support, y_support, x_query, y_query, support_mask=None, query_mask=None
    ):
        """:meth:`episode_loss` and its gradient with respect to ``(params, meta)``, recomputing the inner loop.

        Each task's inner loop is init / step / loss over the carry (adapted
        parameters, optimizer state); the gradient is taken with respect to
        all parameters and the optimizer's meta-parameters, so the parameters
        that do not adapt (a frozen body) get their share from every step.
        Pass detached ``params`` and ``meta``.
        """
        optimizer = self.optimizer()

        def init(inputs):
            params, _ = inputs
            return _select(optimizer, params), optimizer.init(_select(optimizer, params))

        def step(carry, inputs):
            (adapted, state), (params, meta) = carry, inputs
            params, state = inner_loop(
                net,
                optimizer,
                {**params, **adapted},
                meta,
                state,
                x_support,
                y_support,
                1,
                first_order=self.first_order,
                mask=support_mask,
            )
            return _select(optimizer, params), state

        def loss(carry, inputs):
            (adapted, state), (params, meta) = carry, inputs
            return self.loss(net, {**params, **adapted}, meta, state, x_query, y_query, query_mask)

        return checkpointed_value_and_grad(init, step, loss, (params, meta), self.inner_steps)


def _select(optimizer, params: Params) -> Params:
    """The entries of ``params`` that ``optimizer`` adapts."""
    return {name: params[name] for name in adapted_names(optimizer, params)}


def inner_loop(
    net, optimizer, params: Params, meta, state, x, y, n_steps: int, *, first_order=False, eager=False, mask=None
):
    """Take ``n_steps`` steps of ``optimizer`` on one task's rows ``x, y``: the one inner loop.

    The gradient of ``net.task_loss`` with respect to the adapted parameters
    is turned into updates by the optimizer and added with
    :func:`~sklearn_meta.optim.apply_updates`.

    - Default: differentiable with respect to ``params`` and ``meta`` (the
      meta-gradient flows through every step) and vectorisable with ``vmap``;
      ``first_order`` stops gradients through the inner gradients
      (first-order MAML). Under :func:`torch.no_grad` it builds no graph.
    - ``eager=True``: one task, outside ``vmap``, no graph (``partial_adapt``):
      plain autograd, a third of :func:`torch.func.grad`'s cost per step on
      small networks.

    ``mask`` (1 at real rows, 0 at padding) restricts the task loss to the
    real rows.

    Returns the adapted parameters (all of them) and the optimizer's state.
    """
    # The task loss's Hessian-vector product goes to the optimizers that take it (Newton).
    if uses_curvature(optimizer):
        gradient = _curvature_gradient
    else:
        gradient = _autograd_gradient if eager else _functional_gradient
    names = adapted_names(optimizer, params)
    for _ in range(n_steps):
        grads, curvature = gradient(net, params, names, x, y, first_order, mask)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        updates, state = optimizer.update(grads, state, {name: params[name] for name in names}, meta, **curvature)
        params = apply_updates(params, updates)
    return params, state


def _functional_gradient(net, params: Params, names, x, y, first_order, mask=None):
    # torch.func.grad: differentiable and vmappable. Only the adapted parameters are
    # inputs, so no gradient is computed for a frozen body.
    def loss(adapted):
        return net.task_loss({**params, **adapted}, x, y, mask)

    return grad(loss)({name: params[name] for name in names}), {}


def _autograd_gradient(net, params: Params, names, x, y, first_order, mask=None):
    # Plain autograd on detached leaves, for one task outside vmap, building no graph.
    leaves = {name: params[name].detach().requires_grad_() for name in names}
    with torch.enable_grad():
        loss = net.task_loss({**params, **leaves}, x, y, mask)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(leaves, grads)), {}


def _curvature_gradient(net, params: Params, names, x, y, first_order, mask=None):
    # The gradient and the Hessian-vector product on the flattened adapted parameters, both
    # torch.func (a gradient of a gradient), so that they vectorise and are differentiated through.
    adapted = {name: params[name] for name in names}
    shapes = [adapted[name].shape for name in names]
    sizes = [adapted[name].numel() for name in names]

    def loss(adapted):
        return net.task_loss({**params, **adapted}, x, y, mask)

    def hvp(vector):
        pieces = torch.split(vector, sizes)
        tangent = {name: piece.reshape(shape) for name, piece, shape in zip(names, pieces, shapes)}
        # reverse over reverse: forward-over-reverse (jvp of grad) trips functorch's zero tensors
        product = grad(lambda a: sum((g * tangent[k]).sum() for k, g in grad(loss)(a).items()))(adapted)
        flat = torch.cat([product[name].reshape(-1) for name in names])
        return flat.detach() if first_order else flat

    return grad(loss)(adapted), {"hvp": hvp}
