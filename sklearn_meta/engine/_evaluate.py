"""Adapting the meta-learned network to new tasks and predicting them, without a graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from ..heads import FunctionalNetwork, Head

__all__ = ["adapt_one_task", "adapt_tasks", "moderates", "predict_tasks"]

Params = dict[str, Tensor]


@torch.no_grad()
def adapt_tasks(
    net: FunctionalNetwork,
    head: Head,
    init_params: Params,
    head_meta: Any,
    x: Tensor,
    y: Tensor,
    with_state=False,
    mask: Tensor | None = None,
):
    """Adapt the meta-learned initialisation to many tasks at once (vectorised).

    ``x`` and ``y`` hold each task's support rows along their first
    dimension (``mask``: 1 at real rows, 0 at padding, for tasks of
    different sizes); the returned parameters (and, ``with_state``, the
    heads' states) carry the task dimension first.
    """

    def one_task(xs, ys, *mask):  # a mask only for ragged tasks: heads without masks serve equal sizes
        masks = {"mask": mask[0]} if mask else {}
        adapted = head.adapt(net, init_params, head_meta, head.init(init_params, head_meta), xs, ys, **masks)
        return adapted if with_state else adapted[0]

    return vmap(one_task)(x, y) if mask is None else vmap(one_task)(x, y, mask)


@torch.no_grad()
def adapt_one_task(net: FunctionalNetwork, head: Head, params: Params, head_meta: Any, state, x: Tensor, y: Tensor):
    """Continue one task's adaptation from ``params`` and ``state`` (``partial_adapt``)."""
    return head.adapt_one_task(net, params, head_meta, state, x, y)


def moderates(head) -> bool:
    """Whether ``head`` predicts through its posterior (``predictive_outputs``), so predictions need its state."""
    return callable(getattr(head, "predictive_outputs", None))


@torch.no_grad()
def predict_tasks(
    net: FunctionalNetwork, task_params: Params, x: Tensor, head=None, head_meta=None, states=None, state_dims=0
) -> Tensor:
    """Forward each task's rows ``x[t]`` through its own parameters ``task_params[.][t]``.

    With a ``head`` that :func:`moderates`, its ``predictive_outputs`` from
    each task's state (``states``, the task dimension at ``state_dims``:
    ``None`` for one state shared by every task).
    """
    if head is None or not moderates(head):
        return vmap(net.forward)(task_params, x)

    def one_task(params, state, xs):
        return head.predictive_outputs(params, head_meta, state, net.features(params, xs))

    return vmap(one_task, in_dims=(0, state_dims, 0))(task_params, states, x)
