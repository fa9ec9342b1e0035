"""The protocol, states and helpers every inner-optimizer transformation shares."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor

Params = dict[str, Tensor]
Updates = dict[str, Tensor]


@runtime_checkable
class InnerOptimizer(Protocol):
    """The protocol every inner optimizer (and every transformation) follows.

    All methods must be pure: they return new tensors and never modify their
    arguments, so that gradients flow through them and ``vmap`` can batch
    them over tasks. An optional ``adapts(name) -> bool`` method restricts
    which parameters adapt (all of them when it is absent).
    """

    def meta_parameters(self, params: Params) -> Any:
        """Initial values of the tensors the outer loop learns about the optimizer.

        Parameters
        ----------
        params : dict of str to Tensor
            The adapted parameters' meta-learned initialisation.

        Returns
        -------
        meta : dict of str to Tensor, or a tuple of them
            Meta-SGD's per-parameter learning rates, for example; an empty
            dict when there are none.
        """

    def init(self, params: Params) -> Any:
        """Return the state of a fresh adaptation of ``params``."""

    def update(self, updates: Updates, state: Any, params: Params, meta: Any) -> tuple[Updates, Any]:
        """Transform ``updates``; return the new updates and the new state."""


class EmptyState(NamedTuple):
    """State of a transformation that keeps none."""


class ScaleByAdamState(NamedTuple):
    """Adam's step count and moment estimates."""

    count: Tensor  # type: ignore[assignment]  # a field named as tuple.count, kept for saved states
    mu: Updates
    nu: Updates


def apply_updates(params: Params, updates: Updates) -> Params:
    """Add ``updates`` to ``params``; parameters without an update stay as they are.

    Examples
    --------
    >>> import torch
    >>> apply_updates({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, {"a": torch.tensor(0.5)})
    {'a': tensor(1.5000), 'b': tensor(2.)}
    """
    return {name: p + updates[name] if name in updates else p for name, p in params.items()}


def _check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {bound} finite number, got {value!r}.")


def uses_curvature(transform) -> bool:
    """Whether ``transform.update`` takes the task loss's Hessian-vector product (``hvp=``)."""
    return bool(getattr(transform, "curvature", False))


def _adapts(transform, name: str) -> bool:
    adapts = getattr(transform, "adapts", None)
    return True if adapts is None else bool(adapts(name))


def adapted_names(optimizer, names: Iterable[str]) -> tuple[str, ...]:
    """The parameter names, among ``names``, that ``optimizer`` adapts (in order).

    Raises
    ------
    ValueError
        If it adapts none of them.
    """
    names = tuple(names)
    selected = tuple(name for name in names if _adapts(optimizer, name))
    if not selected:
        raise ValueError(
            f"The inner optimizer adapts none of the network's parameters {list(names)}: its mask "
            "selects nothing. Check the parameter names (module.named_parameters())."
        )
    return selected


def _check_protocol(spec) -> None:
    missing = [m for m in ("meta_parameters", "init", "update") if not callable(getattr(spec, m, None))]
    if missing:
        raise TypeError(
            f"inner_optimizer {spec!r} must be one of ['adam', 'meta-sgd', 'sgd'] or an object "
            f"with methods meta_parameters, init and update; it lacks {', '.join(missing)}."
        )
