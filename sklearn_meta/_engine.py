"""The bilevel engine: inner adaptation and the meta-gradient, over parameter dicts.

Everything here is a function of tensors and dicts of tensors. The network is
used only as a stateless template through :func:`torch.func.functional_call`;
tasks of a meta-batch are processed together with :func:`torch.func.vmap`.
Nothing here knows about scikit-learn.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .optim import InnerOptimizer, Params

__all__ = [
    "Learner",
    "TaskBatch",
    "adapt",
    "adapt_task",
    "adapt_tasks",
    "compiled_meta_loss",
    "meta_gradient",
    "predict_tasks",
]


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _module_lock(module: nn.Module) -> threading.RLock:
    # functional_call swaps the module's parameters in and out, so two threads
    # calling it on one module at once would run each other's parameters.
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


class TaskBatch(NamedTuple):
    """Support and query rows of several tasks; leading dimension is the task."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor


@dataclass(frozen=True)
class Learner:
    """A network template, its loss and its inner optimizer.

    Parameters
    ----------
    module : torch.nn.Module
        Used only as a template for ``functional_call``; its own parameters
        are never read here.
    buffers : dict of str to Tensor
        Non-trainable state passed to every call.
    loss : callable
        ``loss(output, target) -> scalar tensor``.
    optimizer : InnerOptimizer
        The inner-loop optimizer.
    shared : bool, default=False
        The module may be used by several threads at once (a fitted
        estimator's): each functional call then holds the module's lock.
    """

    module: nn.Module
    buffers: dict[str, Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizer: InnerOptimizer
    shared: bool = False

    def forward(self, params: Params, x: Tensor) -> Tensor:
        if not self.shared:  # a module private to one caller (meta-training) needs no lock
            return functional_call(self.module, (params, self.buffers), (x,))
        with _module_lock(self.module):
            return functional_call(self.module, (params, self.buffers), (x,))

    def task_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        return self.loss(self.forward(params, x), y)


def adapt(
    learner: Learner,
    params: Params,
    meta: Params,
    state: Any,
    x: Tensor,
    y: Tensor,
    n_steps: int,
    first_order: bool = False,
) -> tuple[Params, Any]:
    """Take ``n_steps`` inner-optimizer steps on one task's rows.

    Differentiable with respect to ``params`` and ``meta`` unless
    ``first_order``, which stops gradients through the inner gradients
    (first-order MAML); run it under :func:`torch.no_grad` to build no graph.
    """
    support_grad = grad(learner.task_loss)
    for _ in range(n_steps):
        grads = support_grad(params, x, y)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        params, state = learner.optimizer.update(grads, state, params, meta)
    return params, state


def _query_loss(learner, meta_params, meta, n_steps, first_order, xs, ys, xq, yq):
    state = learner.optimizer.init(meta_params)
    params, _ = adapt(learner, meta_params, meta, state, xs, ys, n_steps, first_order)
    return learner.task_loss(params, xq, yq)


def meta_loss(
    learner: Learner,
    meta_params: Params,
    meta: Params,
    batch: TaskBatch,
    n_steps: int,
    first_order: bool = False,
) -> Tensor:
    """Mean query loss after adaptation over the tasks of ``batch`` (vectorised)."""

    def one_task(xs, ys, xq, yq):
        return _query_loss(learner, meta_params, meta, n_steps, first_order, xs, ys, xq, yq)

    return vmap(one_task)(*batch).mean()


def compiled_meta_loss(learner: Learner, n_steps: int, first_order: bool) -> Callable:
    """:func:`meta_loss` compiled with :func:`torch.compile` for fixed batch shapes.

    Measured on a 2-core CPU (MLP 40-40, 5 inner steps, meta-batch 25, second
    order): 2.5-3.6x faster per update than eager, gradients equal to 1e-8,
    after about a minute of compilation.
    """

    def loss(meta_params, meta, batch):
        return meta_loss(learner, meta_params, meta, batch, n_steps, first_order)

    return torch.compile(loss, dynamic=False)


def meta_gradient(
    learner: Learner,
    meta_params: Params,
    meta: Params,
    batch: TaskBatch,
    n_steps: int,
    first_order: bool = False,
    loss_fn: Callable | None = None,
) -> tuple[Tensor, Params, Params]:
    """The meta-loss and its gradient with respect to the meta-parameters.

    This is the one place the meta-gradient is computed; it returns plain
    dicts of tensors so that a distributed trainer can all-reduce them.

    ``loss_fn``, when given, replaces :func:`meta_loss` (a compiled copy).

    Returns
    -------
    loss : Tensor
        Detached scalar meta-loss.
    param_grads : dict of str to Tensor
        Gradient for the network initialisation.
    meta_grads : dict of str to Tensor
        Gradient for the inner optimizer's meta-parameters.
    """
    if loss_fn is None:
        loss = meta_loss(learner, meta_params, meta, batch, n_steps, first_order)
    else:
        loss = loss_fn(meta_params, meta, batch)
    tensors = list(meta_params.values()) + list(meta.values())
    # A parameter the network does not use gets a zero gradient, not an error.
    grads = torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True)
    n = len(meta_params)
    return (
        loss.detach(),
        dict(zip(meta_params, grads[:n])),
        dict(zip(meta, grads[n:])),
    )


@torch.no_grad()
def adapt_task(
    learner: Learner, params: Params, meta: Params, state: Any, x: Tensor, y: Tensor, n_steps: int
) -> tuple[Params, Any]:
    """Adapt to one task without a graph: the serving path of ``partial_adapt``.

    Same steps as :func:`adapt`, with plain autograd on detached leaves,
    which costs a third of :func:`torch.func.grad` per step on small networks.
    """
    for _ in range(n_steps):
        leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
        with torch.enable_grad():
            loss = learner.task_loss(leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
        params, state = learner.optimizer.update(dict(zip(leaves, grads)), state, params, meta)
    return params, state


@torch.no_grad()
def adapt_tasks(learner: Learner, meta_params: Params, meta: Params, x: Tensor, y: Tensor, n_steps: int) -> Params:
    """Adapt the meta-learned initialisation to many tasks at once, without a graph.

    ``x`` and ``y`` hold each task's support rows along their first
    dimension; the returned parameters carry the task dimension first.
    """

    def one_task(xs, ys):
        state = learner.optimizer.init(meta_params)
        return adapt(learner, meta_params, meta, state, xs, ys, n_steps)[0]

    return vmap(one_task)(x, y)


@torch.no_grad()
def predict_tasks(learner: Learner, task_params: Params, x: Tensor) -> Tensor:
    """Forward each task's rows ``x[t]`` through its own parameters ``task_params[.][t]``."""
    return vmap(learner.forward)(task_params, x)
